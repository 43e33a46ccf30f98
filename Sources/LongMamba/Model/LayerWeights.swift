// One layer's weights for each kind of mixer, read from the checkpoint and held in f32
// (f32 matrices as views into the mapped file, half-precision ones converted).
//
// Glossary: D = d_model, d_inner = expand·D, N = state size, R = dt_rank, K = conv kernel width,
// H = heads, G = groups sharing B and C (Mamba-2), GN = G·N. Tensors are read as
// backbone.layers.{i}.mixer.<name> in the checkpoint's canonical naming (ModelCheckpoint maps
// every layout onto it and checks the shapes):
//   Mamba-1 (and Falcon-Mamba): in_proj [2·d_inner, D], conv1d [d_inner, K], x_proj [R + 2N, d_inner],
//            dt_proj [d_inner, R] + bias, A_log [d_inner, N], D [d_inner], out_proj [D, d_inner]
//   Mamba-2: in_proj [d_inner + (d_inner + 2GN) + H, D], conv1d [d_inner + 2GN, K], dt_bias [H],
//            A_log [H], D [H], norm.weight [d_inner], out_proj [D, d_inner]
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

/// One layer's Mamba-2 weights in f32.
struct Mamba2Weights {
    var inProj: WeightMatrix        // [d_inner + (d_inner + 2GN) + H, D]
    var inProjBias: [Float]?
    var convWeight: [Float]    // [d_inner + 2GN, K]
    var convBias: [Float]?     // [d_inner + 2GN]
    var dtBias: [Float]        // [H]
    var A: [Float]             // [H] = −exp(A_log)
    var D: [Float]             // [H]
    var normWeight: [Float]    // [d_inner]
    var outProj: WeightMatrix       // [D, d_inner]
    var outProjBias: [Float]?

    init(checkpoint: ModelCheckpoint, layer: Int) throws {
        let m = "backbone.layers.\(layer).mixer."
        let c = checkpoint.config
        inProj = try checkpoint.matrix(m + "in_proj.weight")
        inProjBias = try checkpoint.floats(m + "in_proj.bias", if: c.projectionBias)
        convWeight = try checkpoint.floats(m + "conv1d.weight")
        convBias = try checkpoint.floats(m + "conv1d.bias", if: c.convBias)
        dtBias = try checkpoint.floats(m + "dt_bias")
        A = try checkpoint.decayRates(m + "A_log")
        D = try checkpoint.floats(m + "D")
        normWeight = try checkpoint.floats(m + "norm.weight")
        outProj = try checkpoint.matrix(m + "out_proj.weight")
        outProjBias = try checkpoint.floats(m + "out_proj.bias", if: c.projectionBias)
    }
}

extension ModelCheckpoint {
    /// A = −exp(A_log): the SSM's (negative) decay rates.
    func decayRates(_ name: String) throws -> [Float] { try floats(name).map { -Foundation.exp($0) } }

    /// A tensor the config says is present (a bias), or nil.
    func floats(_ name: String, if present: Bool) throws -> [Float]? { present ? try floats(name) : nil }
}
