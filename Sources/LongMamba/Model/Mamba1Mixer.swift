// Mamba-1 mixer (selective scan), one layer, batch 1.
//
// Glossary
//   L        tokens in the sequence          D        d_model
//   d_inner  expand·D channels (c)           N        state size per channel (n)
//   R        dt_rank                          K        conv kernel width
//   Δ        step size, softplus(dt_proj(dt_low) + bias)       [L, d_inner]
//   A        −exp(A_log), negative                             [d_inner, N]
//   B, C     input-dependent state in/out projections          [L, N]
//
//   x, z  = in_proj(u)                        // [L, d_inner] each
//   x     = SiLU(conv1d(x))                   // causal depthwise, K taps
//   dt_low, B, C = x_proj(x)                  // [L, R], [L, N], [L, N]
//   Δ     = softplus(dt_proj(dt_low) + b_dt)  // [L, d_inner]
//   h_t   = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t x_t) B_t      per channel: h [N]
//   y_t   = ⟨h_t, C_t⟩ + D x_t
//   out   = out_proj(y ⊙ SiLU(z))             // [L, D]
// Falcon-Mamba additionally normalises dt_low, B and C by their RMS (no weight) before use.
import Dispatch
import Foundation

/// The Mamba-1 mixer of one layer.
struct Mamba1Mixer: Mixer {
    let config: ModelConfig
    let weights: Mamba1Weights

    var decayRates: [Float] { weights.A }
    var decayShape: [Int] { [config.dInner, config.dState] }

    /// out: [L, D] = mixer(u: [L, D]); Δ: [L, d_inner] is returned for recording.
    /// `deltaFilter` may rewrite Δ before the scan (LongMamba inference).
    func forward(_ u: UnsafePointer<Float>, length L: Int, into out: UnsafeMutablePointer<Float>,
                 state: inout LayerState, workspace: Workspace, deltaFilter: LayerDeltaFilter?,
                 useReferenceScan: Bool) -> [Float] {
        let D = config.dModel, dInner = config.dInner, N = config.dState, R = config.dtRank, K = config.dConv
        if state.ssm.count != dInner * N { state.ssm = [Float](repeating: 0, count: dInner * N) }
        let w = weights
        let projWidth = R + 2 * N
        let xz = workspace.buffer(.xz, count: L * 2 * dInner)              // xz: [L, 2·d_inner] (x | z)
        let x = workspace.buffer(.x, count: L * dInner)                    // x: [L, d_inner]
        let xDbl = workspace.buffer(.xDbl, count: L * projWidth)           // dt_low|B|C: [L, R+2N]
        let dt = workspace.buffer(.dt, count: L * dInner)                  // dt_low · W_dtᵀ: [L, d_inner]
        let y = workspace.buffer(.y, count: L * dInner)                    // y: [L, d_inner]

        linear(u, rows: L, inFeatures: D, weight: w.inProj, outFeatures: 2 * dInner, into: xz, bias: w.inProjBias)
        causalConvSiLU(input: xz, length: L, stride: 2 * dInner, channels: dInner, weight: w.convWeight, bias: w.convBias, kernel: K, history: &state.conv, into: x)
        linear(x, rows: L, inFeatures: dInner, weight: w.xProj, outFeatures: projWidth, into: xDbl)
        if config.architecture == .falconMamba {
            // Falcon-Mamba: dt_low, B, C ← v / sqrt(mean(v²) + eps), each over its own width.
            for t in 0..<L {
                for (start, width) in [(0, R), (R, N), (R + N, N)] {
                    let row = xDbl + t * projWidth + start
                    var s: Float = 0
                    for j in 0..<width { s += row[j] * row[j] }
                    let scale = 1 / (s / Float(width) + config.mixerNormEpsilon).squareRoot()
                    for j in 0..<width { row[j] *= scale }
                }
            }
        }
        linear(xDbl, rows: L, inFeatures: R, xStride: projWidth, weight: w.dtProj, outFeatures: dInner, into: dt)
        var delta = softplusDelta(dt, rows: L, channels: dInner, stride: dInner, bias: w.dtProjBias)   // Δ: [L, d_inner] = softplus(dt + b_dt)
        deltaFilter?(&delta)

        if useReferenceScan || dInner % 16 != 0 || N % 2 != 0 {
            referenceScan(x: x, delta: delta, xDbl: xDbl, length: L, ssm: &state.ssm, into: y)
        } else {
            fastScan(x: x, delta: delta, xDbl: xDbl, length: L, ssm: &state.ssm, into: y, workspace: workspace)
        }
        multiplyBySiLU(y, gate: xz + dInner, rows: L, width: dInner, zStride: 2 * dInner)   // y ⊙ SiLU(z)
        linear(y, rows: L, inFeatures: dInner, weight: w.outProj, outFeatures: D, into: out, bias: w.outProjBias)
        return delta
    }

    /// The plain scan, one channel and one state element at a time:
    ///   h[c,n] ← exp(Δ[t,c]·A[c,n])·h[c,n] + Δ[t,c]·x[t,c]·B[t,n];  y[t,c] = Σ_n h[c,n]·C[t,n] + D[c]·x[t,c]
    /// `ssm` ([d_inner, N]) is the state before the first token and is left as the state after the last.
    func referenceScan(x: UnsafePointer<Float>, delta: UnsafePointer<Float>, xDbl: UnsafePointer<Float>, length L: Int,
                       ssm: inout [Float], into y: UnsafeMutablePointer<Float>) {
        let dInner = config.dInner, N = config.dState, R = config.dtRank, width = R + 2 * N
        var h = [Float](repeating: 0, count: N)
        for c in 0..<dInner {
            for n in 0..<N { h[n] = ssm[c * N + n] }
            defer { for n in 0..<N { ssm[c * N + n] = h[n] } }
            for t in 0..<L {
                let dt = delta[t * dInner + c], xv = x[t * dInner + c]
                var acc: Float = 0
                for n in 0..<N {
                    let b = xDbl[t * width + R + n], cc = xDbl[t * width + R + N + n]
                    h[n] = Foundation.exp(dt * weights.A[c * N + n]) * h[n] + dt * xv * b
                    acc += h[n] * cc
                }
                y[t * dInner + c] = acc + weights.D[c] * xv
            }
        }
    }

    /// The same recurrence with 16 channels in the lanes of one SIMD register (no horizontal
    /// sums): for a block of 16 channels the state is h[n] (N registers), and per token
    ///   h[n] ← exp(Δ ⊙ A[:, n]) ⊙ h[n] + (Δ ⊙ x) · B[t, n];   y += h[n] · C[t, n].
    /// Channel blocks are spread over the cores.
    func fastScan(x: UnsafePointer<Float>, delta: UnsafePointer<Float>, xDbl: UnsafePointer<Float>, length L: Int,
                  ssm: UnsafeMutablePointer<Float>, into y: UnsafeMutablePointer<Float>, workspace: Workspace) {
        let dInner = config.dInner, N = config.dState, R = config.dtRank, width = R + 2 * N
        let blocks = dInner / 16
        // Gather each block's x and Δ into contiguous time series ([blocks, L, 16]) so every
        // worker streams through memory (rows of [L, d_inner] are too far apart to prefetch).
        let xBlocks = workspace.buffer(.xBlocks, count: L * dInner)             // x: [blocks, L, 16]
        let deltaBlocks = workspace.buffer(.deltaBlocks, count: L * dInner)     // Δ: [blocks, L, 16]
        for t in 0..<L {
            for b in 0..<blocks {
                for lane in 0..<16 {
                    xBlocks[(b * L + t) * 16 + lane] = x[t * dInner + b * 16 + lane]
                    deltaBlocks[(b * L + t) * 16 + lane] = delta[t * dInner + b * 16 + lane]
                }
            }
        }
        // Workers read shared inputs and write disjoint channel blocks of y and the state.
        nonisolated(unsafe) let (xs, ds, bcs, ys, states) = (UnsafePointer(xBlocks), UnsafePointer(deltaBlocks), xDbl, y, ssm)
        let (As, Ds) = (weights.A, weights.D)
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
}
