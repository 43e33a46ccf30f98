// Mamba-1 selective scan, batch 1: the recurrence of one layer over L tokens.
//
// Glossary
//   L        tokens                          C        channels (d_inner), c
//   N        state size per channel, n       Δ        step size [L, C]
//   A        −exp(A_log), negative [C, N]    B, C_t   input-dependent projections [L, N] each
//   x        conv output [L, C]              D        skip weight [C]
//
//   h_t[c, n] = exp(Δ_t[c] A[c, n]) h_{t−1}[c, n] + Δ_t[c] x_t[c] B_t[n]
//   y_t[c]    = Σ_n h_t[c, n] C_t[n] + D[c] x_t[c]
//
// B and C are read from the rows of the x_proj output (dt_low | B | C): B at column `bOffset`,
// C at `bOffset + N`, rows `bcStride` apart.
import Dispatch
import Foundation

public enum SelectiveScan {
    /// The plain scan, one channel and one state element at a time (the oracle of `fast`).
    /// `ssm` ([C, N]) is the state before the first token and is left as the state after the last.
    public static func reference(x: UnsafePointer<Float>, delta: UnsafePointer<Float>, bc: UnsafePointer<Float>, bcStride: Int, bOffset R: Int,
                                 length L: Int, channels C: Int, stateSize N: Int, A: UnsafePointer<Float>, D: UnsafePointer<Float>,
                                 ssm: UnsafeMutablePointer<Float>, into y: UnsafeMutablePointer<Float>) {
        var h = [Float](repeating: 0, count: N)
        for c in 0..<C {
            for n in 0..<N { h[n] = ssm[c * N + n] }
            defer { for n in 0..<N { ssm[c * N + n] = h[n] } }
            for t in 0..<L {
                let dt = delta[t * C + c], xv = x[t * C + c]
                var acc: Float = 0
                for n in 0..<N {
                    let b = bc[t * bcStride + R + n], cc = bc[t * bcStride + R + N + n]
                    h[n] = Foundation.exp(dt * A[c * N + n]) * h[n] + dt * xv * b       // h ← e^{ΔA} h + Δ x B
                    acc += h[n] * cc                                                     // ⟨h, C⟩
                }
                y[t * C + c] = acc + D[c] * xv
            }
        }
    }

    /// Whether `fast` handles these dimensions (16 channels per register, state in pairs).
    public static func fastApplies(channels C: Int, stateSize N: Int) -> Bool { C % 16 == 0 && N % 2 == 0 }

    /// The same recurrence with 16 channels in the lanes of one SIMD register (no horizontal
    /// sums): for a block of 16 channels the state is h[n] (N registers), and per token
    ///   h[n] ← exp(Δ ⊙ A[:, n]) ⊙ h[n] + (Δ ⊙ x) · B[t, n];   y += h[n] · C[t, n].
    /// Channel blocks are spread over the cores. `scratch`: 2·L·C floats.
    public static func fast(x: UnsafePointer<Float>, delta: UnsafePointer<Float>, bc: UnsafePointer<Float>, bcStride width: Int, bOffset R: Int,
                            length L: Int, channels dInner: Int, stateSize N: Int, A: UnsafePointer<Float>, D: UnsafePointer<Float>,
                            ssm: UnsafeMutablePointer<Float>, into y: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        precondition(fastApplies(channels: dInner, stateSize: N))
        let blocks = dInner / 16
        // Gather each block's x and Δ into contiguous time series ([blocks, L, 16]) so every
        // worker streams through memory (rows of [L, d_inner] are too far apart to prefetch).
        // Tokens on every core (on one, the gather was 2 % of a mamba-130m prefill's cycles with the other core idle).
        let xBlocks = scratch                                   // x: [blocks, L, 16]
        let deltaBlocks = scratch + L * dInner                  // Δ: [blocks, L, 16]
        nonisolated(unsafe) let (xIn, deltaIn, xOut, deltaOut) = (x, delta, xBlocks, deltaBlocks)
        parallelRanges(L, minimumPerPart: 64) { tokens in
            for t in tokens {
                for b in 0..<blocks {
                    for lane in 0..<16 {
                        xOut[(b * L + t) * 16 + lane] = xIn[t * dInner + b * 16 + lane]
                        deltaOut[(b * L + t) * 16 + lane] = deltaIn[t * dInner + b * 16 + lane]
                    }
                }
            }
        }
        // Workers read shared inputs and write disjoint channel blocks of y and the state.
        nonisolated(unsafe) let (xs, ds, bcs, ys, states, As, Ds) = (UnsafePointer(xBlocks), UnsafePointer(deltaBlocks), bc, y, ssm, A, D)
        DispatchQueue.concurrentPerform(iterations: blocks) { b in
            let c0 = b * 16
            // A transposed to [N] × 16 channels; state h: [N] × 16 channels; D of the 16 channels.
            let a = UnsafeMutablePointer<Vec16>.allocate(capacity: N), h = UnsafeMutablePointer<Vec16>.allocate(capacity: N)
            a.initialize(repeating: Vec16(), count: N); h.initialize(repeating: Vec16(), count: N)
            defer { a.deallocate(); h.deallocate() }
            var skip = Vec16()
            for lane in 0..<16 { skip[lane] = Ds[c0 + lane] }
            for n in 0..<N { for lane in 0..<16 { a[n][lane] = As[(c0 + lane) * N + n]; h[n][lane] = states[(c0 + lane) * N + n] } }
            defer { for n in 0..<N { for lane in 0..<16 { states[(c0 + lane) * N + n] = h[n][lane] } } }
            for t in 0..<L {
                let dt = UnsafeRawPointer(ds + (b * L + t) * 16).loadUnaligned(as: Vec16.self)   // Δ[t, c0..<c0+16]
                let xv = UnsafeRawPointer(xs + (b * L + t) * 16).loadUnaligned(as: Vec16.self)   // x[t, c0..<c0+16]
                let dtx = dt * xv
                let Bt = bcs + t * width + R, Ct = Bt + N
                // Two partial sums break the add-latency chain over n.
                var acc0 = skip * xv, acc1 = Vec16()                                            // D x
                var n = 0
                while n < N {
                    let h0 = (exp16(dt * a[n]) * h[n]).addingProduct(dtx, Vec16(repeating: Bt[n]))
                    let h1 = (exp16(dt * a[n + 1]) * h[n + 1]).addingProduct(dtx, Vec16(repeating: Bt[n + 1]))
                    h[n] = h0; h[n + 1] = h1
                    acc0 = acc0.addingProduct(h0, Vec16(repeating: Ct[n]))                      // + ⟨h, C⟩
                    acc1 = acc1.addingProduct(h1, Vec16(repeating: Ct[n + 1]))
                    n += 2
                }
                UnsafeMutableRawPointer(ys + t * dInner + c0).storeBytes(of: acc0 + acc1, as: Vec16.self)
            }
        }
    }

    /// Falcon-Mamba: each row's dt_low, B and C ← v / sqrt(mean(v²) + eps), each over its own
    /// width (R, N, N), for rows of the x_proj output [L, R + 2N].
    public static func normalizeProjections(_ xDbl: UnsafeMutablePointer<Float>, length L: Int, dtRank R: Int, stateSize N: Int, epsilon: Float) {
        let projWidth = R + 2 * N
        for t in 0..<L {
            for (start, width) in [(0, R), (R, N), (R + N, N)] {
                let row = xDbl + t * projWidth + start
                var s: Float = 0
                for j in 0..<width { s += row[j] * row[j] }
                let scale = 1 / (s / Float(width) + epsilon).squareRoot()
                for j in 0..<width { row[j] *= scale }
            }
        }
    }
}
