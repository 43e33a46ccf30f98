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
// The scan itself is `SelectiveScan` in the kernels target.
import Foundation
import LongMambaKernels

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
                 poweredDecay: [Float]?, useReferenceScan: Bool) -> [Float] {
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
        if config.architecture == .falconMamba { SelectiveScan.normalizeProjections(xDbl, length: L, dtRank: R, stateSize: N, epsilon: config.mixerNormEpsilon) }
        linear(xDbl, rows: L, inFeatures: R, xStride: projWidth, weight: w.dtProj, outFeatures: dInner, into: dt)
        var delta = softplusDelta(dt, rows: L, channels: dInner, stride: dInner, bias: w.dtProjBias)   // Δ: [L, d_inner] = softplus(dt + b_dt)
        deltaFilter?(&delta)

        let scratch = workspace.buffer(.scanScratch, count: 2 * L * dInner)   // the fast scan's gathers x, Δ: [d_inner/16, L, 16] each
        delta.withUnsafeBufferPointer { delta in
            (poweredDecay ?? w.A).withUnsafeBufferPointer { A in   // A' of a_power, else the model's A
                w.D.withUnsafeBufferPointer { Dskip in
                    state.ssm.withUnsafeMutableBufferPointer { ssm in   // y: [L, d_inner], h: [d_inner, N]
                        if useReferenceScan || !SelectiveScan.fastApplies(channels: dInner, stateSize: N) {
                            SelectiveScan.reference(x: x, delta: delta.baseAddress!, bc: xDbl, bcStride: projWidth, bOffset: R, length: L, channels: dInner, stateSize: N, A: A.baseAddress!, D: Dskip.baseAddress!, ssm: ssm.baseAddress!, into: y)
                        } else {
                            SelectiveScan.fast(x: x, delta: delta.baseAddress!, bc: xDbl, bcStride: projWidth, bOffset: R, length: L, channels: dInner, stateSize: N, A: A.baseAddress!, D: Dskip.baseAddress!, ssm: ssm.baseAddress!, into: y, scratch: scratch)
                        }
                    }
                }
            }
        }
        multiplyBySiLU(y, gate: xz + dInner, rows: L, width: dInner, zStride: 2 * dInner)   // y ⊙ SiLU(z)
        linear(y, rows: L, inFeatures: dInner, weight: w.outProj, outFeatures: D, into: out, bias: w.outProjBias)
        return delta
    }
}
