// Mamba-2 (SSD) recurrence with a scalar A per head, batch 1, and its gated RMSNorm.
//
// Glossary
//   L        tokens                          H        heads, h
//   P        head dim, p                     N        state size, n
//   G        groups sharing B and C, g       Δ        step size [L, H]
//   A        −exp(A_log) [H]                 D        skip weight [H]
//   xBC      conv output rows [L, H·P + 2·G·N] = x | B | C
//
//   h_t[p, n] = exp(Δ_t[h] A_h) h_{t−1}[p, n] + Δ_t[h] x_t[h, p] B_t[g, n]     (head h reads group g = h / (H/G))
//   y_t[h, p] = Σ_n h_t[p, n] C_t[g, n] + D_h x_t[h, p]
import Dispatch
import Foundation

/// The shape of one Mamba-2 layer's scan.
public struct SSDShape: Sendable {
    public var heads: Int, headDim: Int, stateSize: Int, groups: Int
    public init(heads: Int, headDim: Int, stateSize: Int, groups: Int) {
        self.heads = heads; self.headDim = headDim; self.stateSize = stateSize; self.groups = groups
    }
    public var dInner: Int { heads * headDim }
    /// Columns of an xBC row: x | B | C.
    public var convDim: Int { dInner + 2 * groups * stateSize }
    /// Floats of scratch `StateSpaceDualScan.fast` needs for L tokens.
    public func scratchCount(length L: Int) -> Int { heads * L * headDim + groups * L * 2 * stateSize + heads * L }
}

public enum StateSpaceDualScan {
    /// The plain recurrence, element by element (the oracle of `fast`).
    /// `ssm` ([H, P, N]) is the state before the first token and is left as the state after the last.
    public static func reference(xBC: UnsafePointer<Float>, delta: UnsafePointer<Float>, length L: Int, shape: SSDShape,
                                 A: UnsafePointer<Float>, D: UnsafePointer<Float>, ssm: UnsafeMutablePointer<Float>, into y: UnsafeMutablePointer<Float>) {
        let P = shape.headDim, N = shape.stateSize, H = shape.heads, dInner = shape.dInner
        let GN = shape.groups * N, convDim = shape.convDim, headsPerGroup = H / shape.groups
        var state = [Float](repeating: 0, count: P * N)
        for h in 0..<H {
            let g = h / headsPerGroup
            for i in state.indices { state[i] = ssm[h * P * N + i] }
            defer { for i in state.indices { ssm[h * P * N + i] = state[i] } }
            for t in 0..<L {
                let dt = delta[t * H + h]
                let decay = Foundation.exp(dt * A[h])                                        // e^{Δ A_h}
                for p in 0..<P {
                    let xv = xBC[t * convDim + h * P + p]
                    var acc: Float = 0
                    for n in 0..<N {
                        let b = xBC[t * convDim + dInner + g * N + n]
                        let cc = xBC[t * convDim + dInner + GN + g * N + n]
                        state[p * N + n] = decay * state[p * N + n] + dt * xv * b               // h ← e^{ΔA} h + Δ x Bᵀ
                        acc += state[p * N + n] * cc                                            // (h C)_p
                    }
                    y[t * dInner + h * P + p] = acc + D[h] * xv
                }
            }
        }
    }

    /// Whether `fast` handles this shape (16 head-dim rows per register, state in pairs).
    public static func fastApplies(_ shape: SSDShape) -> Bool { shape.headDim % 16 == 0 && shape.stateSize % 2 == 0 }

    /// Head-dim rows per register of `fast`: 16 (one AVX-512 register) where the kernels are built
    /// for AVX-512, 8 (one AVX2 register) otherwise — with 16 lanes on AVX2 the two-token loop's
    /// state, accumulators and broadcasts need more than its 16 registers and spill. Every lane
    /// computes its row p with the same operations in the same order, so both give the same bits.
    #if LONGMAMBA_KERNELS_AVX2
    public static let defaultLanes = 8
    #else
    public static let defaultLanes = 16
    #endif

    /// The same recurrence with `lanes` (8 or 16) head-dim rows p in the lanes of a SIMD register,
    /// so no horizontal sums are needed: the state is stored h[n] = (h[p, n])_p, and per token
    ///   h[n] ← e^{Δ A_h} h[n] + (Δ x) · B[n];   y += h[n] · C[n]   (B[n], C[n] broadcast).
    /// Heads are spread over the cores. `scratch`: `shape.scratchCount(length: L)` floats.
    public static func fast(xBC: UnsafePointer<Float>, delta: UnsafePointer<Float>, length L: Int, shape: SSDShape,
                            A: UnsafePointer<Float>, D: UnsafePointer<Float>, ssm: UnsafeMutablePointer<Float>,
                            into y: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>, lanes: Int = defaultLanes) {
        if lanes == 8 {
            fast(SIMD8<Float>.self, xBC: xBC, delta: delta, length: L, shape: shape, A: A, D: D, ssm: ssm, into: y, scratch: scratch)
        } else {
            fast(SIMD16<Float>.self, xBC: xBC, delta: delta, length: L, shape: shape, A: A, D: D, ssm: ssm, into: y, scratch: scratch)
        }
    }

    @inline(__always)
    static func fast<V: SIMD>(_: V.Type, xBC: UnsafePointer<Float>, delta: UnsafePointer<Float>, length L: Int, shape: SSDShape,
                              A: UnsafePointer<Float>, D: UnsafePointer<Float>, ssm: UnsafeMutablePointer<Float>,
                              into y: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) where V.Scalar == Float {
        precondition(fastApplies(shape))
        let W = V.scalarCount
        let P = shape.headDim, N = shape.stateSize, H = shape.heads, dInner = shape.dInner
        let G = shape.groups, GN = G * N, convDim = shape.convDim, headsPerGroup = H / G
        let rowBlocks = P / W
        // Gather each head's x and each group's B|C into contiguous time series so every worker
        // streams through memory (rows of xBC are too far apart for the hardware prefetcher).
        let xHeads = scratch                                   // x: [H, L, P]
        let bcGroups = xHeads + H * L * P                      // B|C: [G, L, 2N]
        let deltaHeads = bcGroups + G * L * 2 * N              // Δ: [H, L]
        for t in 0..<L {
            let row = t * convDim
            for h in 0..<H {
                for p in 0..<P { xHeads[(h * L + t) * P + p] = xBC[row + h * P + p] }
                deltaHeads[h * L + t] = delta[t * H + h]
            }
            for g in 0..<G {
                for n in 0..<N {
                    bcGroups[(g * L + t) * 2 * N + n] = xBC[row + dInner + g * N + n]
                    bcGroups[(g * L + t) * 2 * N + N + n] = xBC[row + dInner + GN + g * N + n]
                }
            }
        }
        // Workers read shared inputs and write disjoint (head, row block) parts of y and the state.
        nonisolated(unsafe) let (xs, ds, bcs, ys, states, As, Ds) = (UnsafePointer(xHeads), UnsafePointer(deltaHeads), UnsafePointer(bcGroups), y, ssm, A, D)
        DispatchQueue.concurrentPerform(iterations: H * rowBlocks) { job in
            let h = job / rowBlocks, p0 = (job % rowBlocks) * W
            let g = h / headsPerGroup, Ah = As[h], Dh = Ds[h]
            let sp = UnsafeMutablePointer<V>.allocate(capacity: N)            // h[:, p0..<p0+W]: [N] × W
            sp.initialize(repeating: V(), count: N)
            defer { sp.deallocate() }
            let base = h * P * N                                              // ssm: [H, P, N]
            for n in 0..<N { for lane in 0..<W { sp[n][lane] = states[base + (p0 + lane) * N + n] } }
            defer { for n in 0..<N { for lane in 0..<W { states[base + (p0 + lane) * N + n] = sp[n][lane] } } }
            // Two tokens per pass over the state: h is loaded and stored once for both
            // (the scan is bound by state traffic, not arithmetic).
            var t = 0
            while t + 1 < L {
                let dtA = ds[h * L + t], dtB = ds[h * L + t + 1]
                let decayA = V(repeating: Foundation.exp(dtA * Ah))        // e^{Δ_t A_h}
                let decayB = V(repeating: Foundation.exp(dtB * Ah))        // e^{Δ_{t+1} A_h}
                let xA = UnsafeRawPointer(xs + (h * L + t) * P + p0).loadUnaligned(as: V.self)
                let xB = UnsafeRawPointer(xs + (h * L + t + 1) * P + p0).loadUnaligned(as: V.self)
                let dtxA = xA * dtA, dtxB = xB * dtB
                let BA = bcs + (g * L + t) * 2 * N, CA = BA + N, BB = CA + N, CB = BB + N
                var a0 = xA * Dh, a1 = V(), b0 = xB * Dh, b1 = V()           // D_h x
                var n = 0
                while n < N {
                    let s0 = (decayA * sp[n]).addingProduct(dtxA, V(repeating: BA[n]))             // h_t
                    let s1 = (decayA * sp[n + 1]).addingProduct(dtxA, V(repeating: BA[n + 1]))
                    let u0 = (decayB * s0).addingProduct(dtxB, V(repeating: BB[n]))                 // h_{t+1}
                    let u1 = (decayB * s1).addingProduct(dtxB, V(repeating: BB[n + 1]))
                    sp[n] = u0; sp[n + 1] = u1
                    a0 = a0.addingProduct(s0, V(repeating: CA[n]))                                // y_t += h_t C_t
                    a1 = a1.addingProduct(s1, V(repeating: CA[n + 1]))
                    b0 = b0.addingProduct(u0, V(repeating: CB[n]))                                // y_{t+1} += h_{t+1} C_{t+1}
                    b1 = b1.addingProduct(u1, V(repeating: CB[n + 1]))
                    n += 2
                }
                UnsafeMutableRawPointer(ys + t * dInner + h * P + p0).storeBytes(of: a0 + a1, as: V.self)
                UnsafeMutableRawPointer(ys + (t + 1) * dInner + h * P + p0).storeBytes(of: b0 + b1, as: V.self)
                t += 2
            }
            if t < L {                                                         // last token of an odd length
                let dt = ds[h * L + t]
                let decay = V(repeating: Foundation.exp(dt * Ah))
                let xv = UnsafeRawPointer(xs + (h * L + t) * P + p0).loadUnaligned(as: V.self)
                let dtx = xv * dt
                let B = bcs + (g * L + t) * 2 * N, C = B + N
                var acc0 = xv * Dh, acc1 = V()
                var n = 0
                while n < N {
                    let h0 = (decay * sp[n]).addingProduct(dtx, V(repeating: B[n]))
                    let h1 = (decay * sp[n + 1]).addingProduct(dtx, V(repeating: B[n + 1]))
                    sp[n] = h0; sp[n + 1] = h1
                    acc0 = acc0.addingProduct(h0, V(repeating: C[n]))
                    acc1 = acc1.addingProduct(h1, V(repeating: C[n + 1]))
                    n += 2
                }
                UnsafeMutableRawPointer(ys + t * dInner + h * P + p0).storeBytes(of: acc0 + acc1, as: V.self)
            }
        }
    }

    /// y ← RMSNorm over groups of d_inner/G of (y ⊙ SiLU(z)) · w   (norm_before_gate = false),
    /// or RMSNorm(y) · w ⊙ SiLU(z) (norm_before_gate = true). y: [L, d_inner]; z: the first
    /// d_inner columns of a row-major [L, zStride] matrix; w: [d_inner]. Tokens over the cores.
    public static func gatedNorm(_ y: UnsafeMutablePointer<Float>, z: UnsafePointer<Float>, zStride: Int, weight: UnsafePointer<Float>,
                                 length L: Int, dInner: Int, groups: Int, epsilon: Float, normBeforeGate: Bool) {
        let groupSize = dInner / groups
        nonisolated(unsafe) let (ys, zs, w) = (y, z, weight)
        parallelRanges(L) { tokens in
            let gate = UnsafeMutablePointer<Float>.allocate(capacity: dInner)         // SiLU(z) of one token
            defer { gate.deallocate() }
            for t in tokens {
                let row = ys + t * dInner
                gate.update(from: zs + t * zStride, count: dInner)                           // z
                siluInPlace(gate, count: dInner)
                if !normBeforeGate { for j in 0..<dInner { row[j] *= gate[j] } }              // y ⊙ SiLU(z)
                for g in 0..<groups {
                    let group = row + g * groupSize
                    var sumSquares: Float = 0
                    for j in 0..<groupSize { sumSquares += group[j] * group[j] }
                    let scale = 1 / (sumSquares / Float(groupSize) + epsilon).squareRoot()   // 1/RMS
                    for j in 0..<groupSize { group[j] = w[g * groupSize + j] * (group[j] * scale) }
                }
                if normBeforeGate { for j in 0..<dInner { row[j] *= gate[j] } }
            }
        }
    }
}
