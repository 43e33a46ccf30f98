// Mamba-2 mixer (SSD, scalar A per head), one layer, batch 1.
//
// Glossary
//   L        tokens in the sequence          D        d_model
//   d_inner  expand·D                        H        heads = d_inner / P  (h)
//   P        head dim (p)                    N        state size (n)
//   G        groups sharing B and C (g)      K        conv kernel width
//   Δ        softplus(dt + dt_bias), clamped to dt_limit       [L, H]
//   A        −exp(A_log), one scalar per head                 [H]
//
//   z, xBC, dt = in_proj(u)                   // [L, d_inner], [L, d_inner + 2GN], [L, H]
//   xBC   = SiLU(conv1d(xBC));  x, B, C = split(xBC)   // [L, H·P], [L, G·N], [L, G·N]
//   Δ     = clamp(softplus(dt + dt_bias), dt_limit)    // [L, H]
//   h_t   = exp(Δ_t A_h) h_{t−1} + Δ_t x_t B_tᵀ        per head: h [P, N], head h reads group g = h / (H/G)
//   y_t   = h_t C_t + D_h x_t                          // [P]
//   y     = RMSNorm_G(y ⊙ SiLU(z)) · w                 // gated norm, groups of d_inner/G
//   out   = out_proj(y)                                // [L, D]
// The scan and the gated norm are `StateSpaceDualScan` in the kernels target.
import Foundation
import LongMambaKernels

/// The Mamba-2 mixer of one layer.
struct Mamba2Mixer: Mixer {
    let config: ModelConfig
    let weights: Mamba2Weights

    var decayRates: [Float] { weights.A }
    var decayShape: [Int] { [config.headCount] }

    /// out: [L, D] = mixer(u: [L, D]); returns Δ: [L, H] for recording.
    func forward(_ u: UnsafePointer<Float>, length L: Int, into out: UnsafeMutablePointer<Float>,
                 state: inout LayerState, workspace: Workspace, deltaFilter: LayerDeltaFilter?,
                 poweredDecay: [Float]?, useReferenceScan: Bool) -> [Float] {
        let c = config, w = weights
        if state.ssm.count != c.headCount * c.headDim * c.dState { state.ssm = [Float](repeating: 0, count: c.headCount * c.headDim * c.dState) }
        let D = c.dModel, dInner = c.dInner, H = c.headCount, GN = c.groupCount * c.dState, K = c.dConv
        let convDim = dInner + 2 * GN
        let projWidth = dInner + convDim + H
        let zxbcdt = workspace.buffer(.zxbcdt, count: L * projWidth)      // z|xBC|dt: [L, projWidth]
        let xBC = workspace.buffer(.xBC, count: L * convDim)              // xBC: [L, d_inner + 2GN]
        let y = workspace.buffer(.y, count: L * dInner)                   // y: [L, d_inner]

        linear(u, rows: L, inFeatures: D, weight: w.inProj, outFeatures: projWidth, into: zxbcdt, bias: w.inProjBias)
        causalConvSiLU(input: zxbcdt + dInner, length: L, stride: projWidth, channels: convDim, weight: w.convWeight, bias: w.convBias, kernel: K, history: &state.conv, into: xBC)
        var delta = softplusDelta(zxbcdt + dInner + convDim, rows: L, channels: H, stride: projWidth, bias: w.dtBias,
                                  limit: (c.dtLimitLower, c.dtLimitUpper))   // Δ: [L, H] = clamp(softplus(dt + dt_bias), dt_limit)
        deltaFilter?(&delta)

        let shape = SSDShape(heads: H, headDim: c.headDim, stateSize: c.dState, groups: c.groupCount)
        let scratch = workspace.buffer(.scanScratch, count: shape.scratchCount(length: L))   // the fast scan's gathers x [H, L, P], B|C [G, L, 2N], Δ [H, L]
        delta.withUnsafeBufferPointer { delta in
            (poweredDecay ?? w.A).withUnsafeBufferPointer { A in   // A' of a_power, else the model's A
                w.D.withUnsafeBufferPointer { Dskip in
                    state.ssm.withUnsafeMutableBufferPointer { ssm in   // y: [L, d_inner], h: [H, P, N]
                        if useReferenceScan || !StateSpaceDualScan.fastApplies(shape) {
                            StateSpaceDualScan.reference(xBC: xBC, delta: delta.baseAddress!, length: L, shape: shape, A: A.baseAddress!, D: Dskip.baseAddress!, ssm: ssm.baseAddress!, into: y)
                        } else {
                            StateSpaceDualScan.fast(xBC: xBC, delta: delta.baseAddress!, length: L, shape: shape, A: A.baseAddress!, D: Dskip.baseAddress!, ssm: ssm.baseAddress!, into: y, scratch: scratch)
                        }
                    }
                }
            }
        }
        w.normWeight.withUnsafeBufferPointer { norm in   // y: RMSNorm_G(y ⊙ SiLU(z)) · w
            StateSpaceDualScan.gatedNorm(y, z: zxbcdt, zStride: projWidth, weight: norm.baseAddress!, length: L, dInner: dInner, groups: c.groupCount, epsilon: c.gatedNormEpsilon, normBeforeGate: c.normBeforeGate)
        }
        linear(y, rows: L, inFeatures: dInner, weight: w.outProj, outFeatures: D, into: out, bias: w.outProjBias)
        return delta
    }
}
