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
    var inProj: [Float]        // [2·d_inner, D]
    var inProjBias: [Float]?   // [2·d_inner]
    var convWeight: [Float]    // [d_inner, K]
    var convBias: [Float]?     // [d_inner]
    var xProj: [Float]         // [R + 2N, d_inner]
    var dtProj: [Float]        // [d_inner, R]
    var dtProjBias: [Float]    // [d_inner]
    var A: [Float]             // [d_inner, N] = −exp(A_log)
    var D: [Float]             // [d_inner]
    var outProj: [Float]       // [D, d_inner]
    var outProjBias: [Float]?  // [D]

    init(checkpoint: ModelCheckpoint, layer: Int) throws {
        let m = "backbone.layers.\(layer).mixer."
        let c = checkpoint.config
        inProj = try checkpoint.floats(m + "in_proj.weight")
        inProjBias = c.projectionBias ? try checkpoint.floats(m + "in_proj.bias") : nil
        convWeight = try checkpoint.floats(m + "conv1d.weight")
        convBias = c.convBias ? try checkpoint.floats(m + "conv1d.bias") : nil
        xProj = try checkpoint.floats(m + "x_proj.weight")
        dtProj = try checkpoint.floats(m + "dt_proj.weight")
        dtProjBias = try checkpoint.floats(m + "dt_proj.bias")
        A = try checkpoint.floats(m + "A_log").map { -Foundation.exp($0) }
        D = try checkpoint.floats(m + "D")
        outProj = try checkpoint.floats(m + "out_proj.weight")
        outProjBias = c.projectionBias ? try checkpoint.floats(m + "out_proj.bias") : nil
    }
}

/// The Mamba-1 mixer of one layer.
struct Mamba1Mixer {
    let config: ModelConfig
    let weights: Mamba1Weights

    /// out: [L, D] = mixer(u: [L, D]); Δ: [L, d_inner] is returned for recording.
    /// `deltaFilter` may rewrite Δ before the scan (LongMamba inference).
    func forward(_ u: UnsafePointer<Float>, length L: Int, into out: UnsafeMutablePointer<Float>,
                 deltaFilter: ((inout [Float]) -> Void)? = nil, useReferenceScan: Bool = false) -> [Float] {
        let dModel = config.dModel, dInner = config.dInner, N = config.dState, R = config.dtRank
        let w = weights
        var xz = [Float](repeating: 0, count: L * 2 * dInner)                  // xz: [L, 2·d_inner]
        var x = [Float](repeating: 0, count: L * dInner)                       // x: [L, d_inner]
        let projWidth = R + 2 * N
        var xDbl = [Float](repeating: 0, count: L * projWidth)                  // dt_low|B|C: [L, R+2N]
        var delta = [Float](repeating: 0, count: L * dInner)                   // Δ: [L, d_inner]
        var y = [Float](repeating: 0, count: L * dInner)                       // y: [L, d_inner]

        w.inProj.withUnsafeBufferPointer { wIn in
            linear(u, rows: L, inFeatures: dModel, weight: wIn.baseAddress!, outFeatures: 2 * dInner, into: &xz, bias: w.inProjBias)
        }
        xz.withUnsafeBufferPointer { xzp in
            x.withUnsafeMutableBufferPointer { xp in
                causalConvSiLU(input: xzp.baseAddress!, length: L, stride: 2 * dInner, channels: dInner,
                               weight: w.convWeight, bias: w.convBias, kernel: config.dConv, into: xp.baseAddress!)
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
        for i in delta.indices { delta[i] = softplus(delta[i]) }
        deltaFilter?(&delta)

        if useReferenceScan || N % 16 != 0 {
            referenceScan(x: x, delta: delta, xDbl: xDbl, length: L, into: &y)
        } else {
            fastScan(x: x, delta: delta, xDbl: xDbl, length: L, into: &y)
        }
        // y ⊙ SiLU(z)
        xz.withUnsafeMutableBufferPointer { xzp in
            y.withUnsafeMutableBufferPointer { yp in
                for t in 0..<L {
                    let z = xzp.baseAddress! + t * 2 * dInner + dInner
                    siluInPlace(z, count: dInner)
                    let row = yp.baseAddress! + t * dInner
                    for c in 0..<dInner { row[c] *= z[c] }
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
    func referenceScan(x: [Float], delta: [Float], xDbl: [Float], length L: Int, into y: inout [Float]) {
        let dInner = config.dInner, N = config.dState, R = config.dtRank, width = R + 2 * N
        var h = [Float](repeating: 0, count: N)
        for c in 0..<dInner {
            for n in 0..<N { h[n] = 0 }
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

    /// The same recurrence, 16 state elements per SIMD register, channel blocks spread over cores.
    func fastScan(x: [Float], delta: [Float], xDbl: [Float], length L: Int, into y: inout [Float]) {
        let dInner = config.dInner, N = config.dState, R = config.dtRank, width = R + 2 * N
        let lanes = N / 16
        let block = 32
        let blocks = (dInner + block - 1) / block
        x.withUnsafeBufferPointer { xp in
        delta.withUnsafeBufferPointer { dp in
        xDbl.withUnsafeBufferPointer { bc in
        weights.A.withUnsafeBufferPointer { ap in
        weights.D.withUnsafeBufferPointer { Dp in
        y.withUnsafeMutableBufferPointer { yp in
            let inputs = SendablePointers(xp.baseAddress!, dp.baseAddress!, bc.baseAddress!, ap.baseAddress!, Dp.baseAddress!)
            let ys = UnsafeMutablePointerBox(yp.baseAddress!)
            DispatchQueue.concurrentPerform(iterations: blocks) { b in
                let (xs, ds, bcs, As, Ds) = (inputs.p[0], inputs.p[1], inputs.p[2], inputs.p[3], inputs.p[4])
                let c0 = b * block, c1 = min(dInner, c0 + block)
                let count = c1 - c0
                // state h: [count, N], A: [count, N] as SIMD16 lanes
                var h = [Vec16](repeating: Vec16(), count: count * lanes)
                var a = [Vec16](repeating: Vec16(), count: count * lanes)
                for c in 0..<count {
                    for l in 0..<lanes { a[c * lanes + l] = UnsafeRawPointer(As + (c0 + c) * N + 16 * l).loadUnaligned(as: Vec16.self) }
                }
                h.withUnsafeMutableBufferPointer { hp in
                a.withUnsafeBufferPointer { av in
                    for t in 0..<L {
                        let row = bcs + t * width
                        for l in 0..<lanes {
                            let Bt = UnsafeRawPointer(row + R + 16 * l).loadUnaligned(as: Vec16.self)
                            let Ct = UnsafeRawPointer(row + R + N + 16 * l).loadUnaligned(as: Vec16.self)
                            for c in 0..<count {
                                let dt = ds[t * dInner + c0 + c], xv = xs[t * dInner + c0 + c]
                                let i = c * lanes + l
                                let hn = exp16(av[i] * dt) * hp[i] + Bt * (dt * xv)   // h ← e^{ΔA} h + Δ x B
                                hp[i] = hn
                                let partial = (hn * Ct).sum()                           // ⟨h, C⟩
                                if l == 0 { ys.pointer[t * dInner + c0 + c] = partial + Ds[c0 + c] * xv }
                                else { ys.pointer[t * dInner + c0 + c] += partial }
                            }
                        }
                    }
                }
                }
            }
        }}}}}}
    }
}

