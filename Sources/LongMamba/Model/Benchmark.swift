// Throughput measurement for `longmamba bench`: the model's prefill speed next to the same
// machine's sgemm speed on the model's own projection shapes, measured in the same run.
import COpenBLAS
import Foundation

public struct PrefillBenchmark: Sendable {
    public struct Result: Sendable {
        public let tokens: Int
        public let seconds: [Double]
        public let matmulFlopsPerToken: Double
        /// sgemm GFLOP/s on each projection shape of the model at this length, FLOP-weighted.
        public let sgemmModelShapesGFLOPS: Double
        /// sgemm GFLOP/s on the reference shape 2048×768 · 768×3072.
        public let sgemmReferenceGFLOPS: Double
        public var bestSeconds: Double { seconds.min() ?? .nan }
        public var tokensPerSecond: Double { Double(tokens) / bestSeconds }
        public var achievedGFLOPS: Double { matmulFlopsPerToken * tokensPerSecond / 1e9 }
        /// Tokens/s if the whole pass ran at the sgemm rate on its own shapes.
        public var rooflineTokensPerSecond: Double { sgemmModelShapesGFLOPS * 1e9 / matmulFlopsPerToken }
    }

    /// (rows, out, in) of every matrix product in one layer, without the LM head.
    public static func projectionShapes(_ c: ModelConfig, tokens L: Int) -> [(m: Int, n: Int, k: Int)] {
        switch c.architecture {
        case .mamba, .falconMamba:
            return [(L, 2 * c.dInner, c.dModel), (L, c.dtRank + 2 * c.dState, c.dInner), (L, c.dInner, c.dtRank), (L, c.dModel, c.dInner)]
        case .mamba2, .zamba2:
            let convDim = c.dInner + 2 * c.groupCount * c.dState
            return [(L, c.dInner + convDim + c.headCount, c.dModel), (L, c.dModel, c.dInner)]
        }
    }

    /// Zamba2: (rows, out, in) of the projections of one shared-block invocation (q, k, v, o, the
    /// adapters, the MLP, the layer's linear), run once per hybrid layer. Attention's own products
    /// (q kᵀ, P v) are not counted: they grow with the length.
    public static func sharedBlockShapes(_ c: ModelConfig, tokens L: Int) -> [(m: Int, n: Int, k: Int)] {
        guard let a = c.sharedBlocks else { return [] }
        let D = c.dModel, D2 = 2 * c.dModel, q = a.attentionHeads * a.attentionHeadDim, kv = a.keyValueHeads * a.attentionHeadDim
        var s = [(L, q, D2), (L, kv, D2), (L, kv, D2), (L, D, q), (L, 2 * a.mlpWidth, D), (L, D, a.mlpWidth), (L, D, D),
                 (L, a.adapterRank, D), (L, 2 * a.mlpWidth, a.adapterRank)]
        if a.attentionAdapters { for width in [q, kv, kv] { s += [(L, a.adapterRank, D2), (L, width, a.adapterRank)] } }
        return s
    }

    public static func matmulFlopsPerToken(_ c: ModelConfig) -> Double {
        Double(c.layerCount) * projectionShapes(c, tokens: 1).reduce(0) { $0 + 2.0 * Double($1.n * $1.k) }
            + Double(c.sharedBlocks?.hybridLayers.count ?? 0) * sharedBlockShapes(c, tokens: 1).reduce(0) { $0 + 2.0 * Double($1.n * $1.k) }
    }

    /// GFLOP/s of cblas_sgemm for y[m, n] = x[m, k] · W[n, k]ᵀ (best of `repeats`).
    public static func sgemmGFLOPS(m: Int, n: Int, k: Int, repeats: Int = 3) -> Double {
        let x = [Float](repeating: 0.5, count: m * k), w = [Float](repeating: 0.25, count: n * k)
        var y = [Float](repeating: 0, count: m * n)
        var best = Double.infinity
        for _ in 0..<repeats {
            let start = DispatchTime.now().uptimeNanoseconds
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k), 1, x, Int32(k), w, Int32(k), 0, &y, Int32(n))
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        return 2 * Double(m) * Double(n) * Double(k) / best / 1e9
    }

    /// Times `repeats` prefills of `tokens` tokens (after one warm-up run).
    public static func run(model: MambaModel, tokens: Int, repeats: Int) throws -> Result {
        let ids = (0..<tokens).map { ($0 * 7919 + 13) % model.config.vocabSize }
        var discard = DiscardingRecorder()
        try model.forward(tokens: ids, recorder: &discard)                 // warm-up: weights resident
        var times: [Double] = []
        for _ in 0..<repeats {
            let start = DispatchTime.now().uptimeNanoseconds
            try model.forward(tokens: ids, recorder: &discard)
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        let c = model.config
        let shapes = projectionShapes(c, tokens: tokens).map { ($0, c.layerCount) }
            + sharedBlockShapes(c, tokens: tokens).map { ($0, c.sharedBlocks?.hybridLayers.count ?? 0) }
        var flops = 0.0, seconds = 0.0
        for (s, times) in shapes {
            let f = 2.0 * Double(s.m * s.n * s.k) * Double(times)
            flops += f
            seconds += f / (sgemmGFLOPS(m: s.m, n: s.n, k: s.k) * 1e9)
        }
        return Result(tokens: tokens, seconds: times, matmulFlopsPerToken: matmulFlopsPerToken(model.config),
                      sgemmModelShapesGFLOPS: flops / seconds / 1e9,
                      sgemmReferenceGFLOPS: sgemmGFLOPS(m: 2048, n: 3072, k: 768))
    }
}
