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

/// One layer's Mamba-1 weights in f32.
struct Mamba1Weights {
    var inProj: WeightMatrix        // [2·d_inner, D]
    var inProjBias: [Float]?   // [2·d_inner]
    var convWeight: [Float]    // [d_inner, K]
    var convBias: [Float]?     // [d_inner]
    var xProj: WeightMatrix         // [R + 2N, d_inner]
    var dtProj: WeightMatrix        // [d_inner, R]
    var dtProjBias: [Float]    // [d_inner]
    var A: [Float]             // [d_inner, N] = −exp(A_log)
    var D: [Float]             // [d_inner]
    var outProj: WeightMatrix       // [D, d_inner]
    var outProjBias: [Float]?  // [D]

    init(checkpoint: ModelCheckpoint, layer: Int) throws {
        let m = "backbone.layers.\(layer).mixer."
        let c = checkpoint.config
        inProj = try checkpoint.matrix(m + "in_proj.weight")
        inProjBias = try checkpoint.floats(m + "in_proj.bias", if: c.projectionBias)
        convWeight = try checkpoint.floats(m + "conv1d.weight")
        convBias = try checkpoint.floats(m + "conv1d.bias", if: c.convBias)
        xProj = try checkpoint.matrix(m + "x_proj.weight")
        dtProj = try checkpoint.matrix(m + "dt_proj.weight")
        dtProjBias = try checkpoint.floats(m + "dt_proj.bias")
        A = try checkpoint.decayRates(m + "A_log")
        D = try checkpoint.floats(m + "D")
        outProj = try checkpoint.matrix(m + "out_proj.weight")
        outProjBias = try checkpoint.floats(m + "out_proj.bias", if: c.projectionBias)
    }
}

/// The Mamba-1 mixer of one layer.
struct Mamba1Mixer {
    let config: ModelConfig
    let weights: Mamba1Weights

    /// out: [L, D] = mixer(u: [L, D]); Δ: [L, d_inner] is returned for recording.
    /// `deltaFilter` may rewrite Δ before the scan (LongMamba inference).
    func forward(_ u: UnsafePointer<Float>, length L: Int, into out: UnsafeMutablePointer<Float>,
                 state: inout LayerState, workspace: Workspace, deltaFilter: ((inout [Float]) -> Void)? = nil,
                 useReferenceScan: Bool = false) -> [Float] {
        let dModel = config.dModel, dInner = config.dInner, N = config.dState, R = config.dtRank
        if state.ssm.count != dInner * N { state.ssm = [Float](repeating: 0, count: dInner * N) }
        let w = weights
        let projWidth = R + 2 * N
        var xz = workspace.take(0, count: L * 2 * dInner)                     // xz: [L, 2·d_inner]
        var x = workspace.take(1, count: L * dInner)                          // x: [L, d_inner]
        var xDbl = workspace.take(2, count: L * projWidth)                    // dt_low|B|C: [L, R+2N]
        var y = workspace.take(3, count: L * dInner)                          // y: [L, d_inner]
        var delta = [Float](repeating: 0, count: L * dInner)                   // Δ: [L, d_inner] (handed to the recorder)
        defer { workspace.give(0, xz); workspace.give(1, x); workspace.give(2, xDbl); workspace.give(3, y) }

        w.inProj.withUnsafeBufferPointer { wIn in
            linear(u, rows: L, inFeatures: dModel, weight: wIn.baseAddress!, outFeatures: 2 * dInner, into: &xz, bias: w.inProjBias)
        }
        xz.withUnsafeBufferPointer { xzp in
            x.withUnsafeMutableBufferPointer { xp in
                causalConvSiLU(input: xzp.baseAddress!, length: L, stride: 2 * dInner, channels: dInner,
                               weight: w.convWeight, bias: w.convBias, kernel: config.dConv, history: &state.conv, into: xp.baseAddress!)
            }
        }
        x.withUnsafeBufferPointer { xp in
            w.xProj.withUnsafeBufferPointer { wx in
                linear(xp.baseAddress!, rows: L, inFeatures: dInner, weight: wx.baseAddress!, outFeatures: projWidth, into: &xDbl)
            }
        }
        if config.architecture == .falconMamba {
            // Falcon-Mamba: dt_low, B, C ← v / sqrt(mean(v²) + eps), each over its own width.
            xDbl.withUnsafeMutableBufferPointer { p in
                for t in 0..<L {
                    for (start, width) in [(0, R), (R, N), (R + N, N)] {
                        let row = p.baseAddress! + t * projWidth + start
                        var s: Float = 0
                        for j in 0..<width { s += row[j] * row[j] }
                        let scale = 1 / (s / Float(width) + config.mixerNormEpsilon).squareRoot()
                        for j in 0..<width { row[j] *= scale }
                    }
                }
            }
        }
        // Δ = softplus(dt_low · W_dtᵀ + b_dt)
        xDbl.withUnsafeBufferPointer { xd in
            w.dtProj.withUnsafeBufferPointer { wdt in
                linear(xd.baseAddress!, rows: L, inFeatures: R, xStride: projWidth, weight: wdt.baseAddress!, outFeatures: dInner, into: &delta, bias: w.dtProjBias)
            }
        }
        delta.withUnsafeMutableBufferPointer { softplusInPlace($0.baseAddress!, count: $0.count) }
        deltaFilter?(&delta)

        if useReferenceScan || dInner % 16 != 0 || N % 2 != 0 {
            referenceScan(x: x, delta: delta, xDbl: xDbl, length: L, ssm: &state.ssm, into: &y)
        } else {
            fastScan(x: x, delta: delta, xDbl: xDbl, length: L, ssm: &state.ssm, into: &y, workspace: workspace)
        }
        // y ⊙ SiLU(z)
        xz.withUnsafeMutableBufferPointer { xzp in
            y.withUnsafeMutableBufferPointer { yp in
                nonisolated(unsafe) let (xzs, ys) = (xzp.baseAddress!, yp.baseAddress!)
                parallelRanges(L) { tokens in
                    for t in tokens {
                        let z = xzs + t * 2 * dInner + dInner
                        siluInPlace(z, count: dInner)
                        let row = ys + t * dInner
                        for c in 0..<dInner { row[c] *= z[c] }
                    }
                }
            }
        }
        y.withUnsafeBufferPointer { yp in
            w.outProj.withUnsafeBufferPointer { wo in
                linear(yp.baseAddress!, rows: L, inFeatures: dInner, weight: wo.baseAddress!, outFeatures: dModel, into: out, bias: w.outProjBias)
            }
        }
        return delta
    }

    /// The plain scan, one channel and one state element at a time:
    ///   h[c,n] ← exp(Δ[t,c]·A[c,n])·h[c,n] + Δ[t,c]·x[t,c]·B[t,n];  y[t,c] = Σ_n h[c,n]·C[t,n] + D[c]·x[t,c]
    /// `ssm` ([d_inner, N]) is the state before the first token and is left as the state after the last.
    func referenceScan(x: [Float], delta: [Float], xDbl: [Float], length L: Int, ssm: inout [Float], into y: inout [Float]) {
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
    func fastScan(x: [Float], delta: [Float], xDbl: [Float], length L: Int, ssm: inout [Float], into y: inout [Float], workspace: Workspace) {
        let dInner = config.dInner, N = config.dState, R = config.dtRank, width = R + 2 * N
        let blocks = dInner / 16
        // Gather each block's x and Δ into contiguous time series ([blocks, L, 16]) so every
        // worker streams through memory (rows of [L, d_inner] are too far apart to prefetch).
        var xBlocks = workspace.take(10, count: L * dInner)                     // x: [blocks, L, 16]
        var deltaBlocks = workspace.take(11, count: L * dInner)                 // Δ: [blocks, L, 16]
        defer { workspace.give(10, xBlocks); workspace.give(11, deltaBlocks) }
        for t in 0..<L {
            for b in 0..<blocks {
                for lane in 0..<16 {
                    xBlocks[(b * L + t) * 16 + lane] = x[t * dInner + b * 16 + lane]
                    deltaBlocks[(b * L + t) * 16 + lane] = delta[t * dInner + b * 16 + lane]
                }
            }
        }
        xBlocks.withUnsafeBufferPointer { xp in
        deltaBlocks.withUnsafeBufferPointer { dp in
        xDbl.withUnsafeBufferPointer { bc in
        weights.A.withUnsafeBufferPointer { ap in
        weights.D.withUnsafeBufferPointer { Dp in
        ssm.withUnsafeMutableBufferPointer { sp in
        y.withUnsafeMutableBufferPointer { yp in
            // Workers read shared inputs and write disjoint channel blocks of y and the state.
            nonisolated(unsafe) let (xs, ds, bcs, As, Ds) = (xp.baseAddress!, dp.baseAddress!, bc.baseAddress!, ap.baseAddress!, Dp.baseAddress!)
            nonisolated(unsafe) let (ys, states) = (yp.baseAddress!, sp.baseAddress!)
            DispatchQueue.concurrentPerform(iterations: blocks) { b in
                let c0 = b * 16
                // A transposed to [N] × 16 channels; state h: [N] × 16 channels.
                var a = [Vec16](repeating: Vec16(), count: N)
                for n in 0..<N { for lane in 0..<16 { a[n][lane] = As[(c0 + lane) * N + n] } }
                let skip = UnsafeRawPointer(Ds + c0).loadUnaligned(as: Vec16.self)
                var h = [Vec16](repeating: Vec16(), count: N)
                for n in 0..<N { for lane in 0..<16 { h[n][lane] = states[(c0 + lane) * N + n] } }
                defer { for n in 0..<N { for lane in 0..<16 { states[(c0 + lane) * N + n] = h[n][lane] } } }
                h.withUnsafeMutableBufferPointer { hp in
                a.withUnsafeBufferPointer { av in
                    for t in 0..<L {
                        let dt = UnsafeRawPointer(ds + (b * L + t) * 16).loadUnaligned(as: Vec16.self)   // Δ[t, c0..<c0+16]
                        let xv = UnsafeRawPointer(xs + (b * L + t) * 16).loadUnaligned(as: Vec16.self)   // x[t, c0..<c0+16]
                        let dtx = dt * xv
                        let Bt = bcs + t * width + R, Ct = Bt + N
                        // Two partial sums break the add-latency chain over n.
                        var acc0 = skip * xv, acc1 = Vec16()                                            // D x
                        var n = 0
                        while n < N {
                            let h0 = (exp16(dt * av[n]) * hp[n]).addingProduct(dtx, Vec16(repeating: Bt[n]))
                            let h1 = (exp16(dt * av[n + 1]) * hp[n + 1]).addingProduct(dtx, Vec16(repeating: Bt[n + 1]))
                            hp[n] = h0; hp[n + 1] = h1
                            acc0 = acc0.addingProduct(h0, Vec16(repeating: Ct[n]))                      // + ⟨h, C⟩
                            acc1 = acc1.addingProduct(h1, Vec16(repeating: Ct[n + 1]))
                            n += 2
                        }
                        UnsafeMutableRawPointer(ys + t * dInner + c0).storeBytes(of: acc0 + acc1, as: Vec16.self)
                    }
                }
                }
            }
        }}}}}}}
    }
}


extension ModelCheckpoint {
    /// A = −exp(A_log): the SSM's (negative) decay rates.
    func decayRates(_ name: String) throws -> [Float] { try floats(name).map { -Foundation.exp($0) } }

    /// A tensor the config says is present (a bias), or nil.
    func floats(_ name: String, if present: Bool) throws -> [Float]? { present ? try floats(name) : nil }
}
