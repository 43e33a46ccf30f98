// Zamba2's shared transformer block, run in front of the Mamba mixer of each hybrid layer
// (transformers' Zamba2HybridLayer / Zamba2AttentionDecoderLayer), batch 1.
//
// Glossary
//   L      tokens of this chunk, at positions past..<past+L     D   hidden size
//   h      hidden state entering the layer [L, D]               h₀  the token embeddings [L, D]
//   H_a    attention heads        H_kv  key/value heads         d_a = 2D / H_a   head dim
//   I      MLP width              r     adapter rank            j   the hybrid layer's index among hybrid layers
//   x   = RMSNorm_2D([h | h₀])                                   // [L, 2D]
//   q   = x W_qᵀ + (x A_q,jᵀ) B_q,jᵀ     k, v likewise           // [L, H_a·d_a], [L, H_kv·d_a]; adapters only with use_shared_attention_adapter
//   q, k = RoPE(q, k) at positions past + i                      // use_mem_rope; rotate-half, base θ, over d_a
//   a   = softmax((d_a/2)^(−1/2) · q kᵀ, causal) v W_oᵀ          // [L, D]; keys/values of earlier chunks from the cache
//   g|u = RMSNorm(a) W_guᵀ + (RMSNorm(a) A_jᵀ) B_jᵀ              // [L, 2I]
//   t   = (act(g) ⊙ u) W_downᵀ W_linear,jᵀ                       // [L, D]; act: gelu / gelu_pytorch_tanh / silu
// The layer's Mamba mixer then reads RMSNorm(h + t); the residual stream stays h + mixer(·).
// There is no residual inside the block. Shared block b = j mod num_mem_blocks serves hybrid
// layer j; the adapters A, B and the linear are the layer's own.
import COpenBLAS
import Foundation
import LongMambaKernels

/// One shared block's weights in f32 (tensor names: ModelCheckpoint.zamba2SharedShapes).
struct SharedBlockWeights {
    var inputNorm: [Float]          // [2D]
    var qProj: WeightMatrix         // [H_a·d_a, 2D]
    var kProj: WeightMatrix         // [H_kv·d_a, 2D]
    var vProj: WeightMatrix         // [H_kv·d_a, 2D]
    var oProj: WeightMatrix         // [D, H_a·d_a]
    var preFeedForwardNorm: [Float] // [D]
    var gateUp: WeightMatrix        // [2I, D]
    var gateUpBias: [Float]?        // [2I]
    var down: WeightMatrix          // [D, I]
    var downBias: [Float]?          // [D]

    init(checkpoint: ModelCheckpoint, shared: SharedBlockConfig, block: Int) throws {
        let p = ModelCheckpoint.zamba2BlockPrefix(shared, block: block)
        inputNorm = try checkpoint.floats(p + "input_layernorm.weight")
        qProj = try checkpoint.matrix(p + "self_attn.q_proj.weight")
        kProj = try checkpoint.matrix(p + "self_attn.k_proj.weight")
        vProj = try checkpoint.matrix(p + "self_attn.v_proj.weight")
        oProj = try checkpoint.matrix(p + "self_attn.o_proj.weight")
        preFeedForwardNorm = try checkpoint.floats(p + "pre_ff_layernorm.weight")
        gateUp = try checkpoint.matrix(p + "feed_forward.gate_up_proj.weight")
        gateUpBias = try checkpoint.floats(p + "feed_forward.gate_up_proj.bias", if: shared.mlpBias)
        down = try checkpoint.matrix(p + "feed_forward.down_proj.weight")
        downBias = try checkpoint.floats(p + "feed_forward.down_proj.bias", if: shared.mlpBias)
    }
}

/// A low-rank adapter: y += (x Aᵀ) Bᵀ with A: [r, in], B: [out, r].
struct LowRankAdapter {
    var a: WeightMatrix             // [r, in]
    var b: WeightMatrix             // [out, r]
}

/// What a hybrid layer owns: its adapters on the shared block and its output linear.
struct HybridLayerWeights {
    var gateUpAdapter: LowRankAdapter                       // A [r, D], B [2I, r]
    var qAdapter, kAdapter, vAdapter: LowRankAdapter?       // A [r, 2D], B [2D, r]
    var linear: WeightMatrix                                // [D, D]

    init(checkpoint: ModelCheckpoint, shared: SharedBlockConfig, layer: Int) throws {
        guard let j = shared.hybridIndex(ofLayer: layer) else { throw ModelRunError.notHybridLayer(layer: layer) }
        let p = ModelCheckpoint.zamba2BlockPrefix(shared, block: j % shared.blockCount)
        func adapter(_ list: String) throws -> LowRankAdapter {
            LowRankAdapter(a: try checkpoint.matrix(p + "\(list).\(j).0.weight"), b: try checkpoint.matrix(p + "\(list).\(j).1.weight"))
        }
        gateUpAdapter = try adapter("feed_forward.gate_up_proj_adapter_list")
        if shared.attentionAdapters {
            qAdapter = try adapter("self_attn.linear_q_adapter_list")
            kAdapter = try adapter("self_attn.linear_k_adapter_list")
            vAdapter = try adapter("self_attn.linear_v_adapter_list")
        }
        linear = try checkpoint.matrix("model.layers.\(layer).linear.weight")
    }
}

extension SharedBlockWeights {
    /// t: [L, D] for hybrid layer `w` from h: [L, D] and h₀: [L, D] (see the glossary). Appends this
    /// chunk's keys and values to `state` (its cache holds past tokens' ones: past = keys / (H_kv·d_a)).
    func forward(hidden h: UnsafePointer<Float>, embeddings h0: UnsafePointer<Float>, length L: Int,
                 config c: ModelConfig, shared a: SharedBlockConfig, layer w: HybridLayerWeights,
                 state: inout LayerState, workspace: Workspace, useReferenceAttention: Bool,
                 into t: UnsafeMutablePointer<Float>) {
        let D = c.dModel, D2 = 2 * c.dModel, I = a.mlpWidth
        let shape = AttentionShape(heads: a.attentionHeads, keyValueHeads: a.keyValueHeads, headDim: a.attentionHeadDim)
        let qWidth = shape.heads * shape.headDim, kvWidth = shape.keyValueHeads * shape.headDim
        let past = state.keys.count / kvWidth
        let x = workspace.buffer(.blockInput, count: L * D2)                    // [h | h₀]: [L, 2D]
        let xn = workspace.buffer(.blockNormed, count: L * D2)                  // RMSNorm_2D([h | h₀]), later RMSNorm(a): [L, 2D] / [L, D]
        let q = workspace.buffer(.query, count: L * qWidth)                     // q: [L, H_a·d_a]
        let attention = workspace.buffer(.attention, count: L * qWidth)         // softmax(s q kᵀ) v: [L, H_a·d_a]
        let gateUp = workspace.buffer(.gateUp, count: L * 2 * I)                // g|u, then act(g) ⊙ u in the first I columns: [L, 2I]
        let middle = workspace.buffer(.adapterMiddle, count: L * a.adapterRank) // x Aᵀ: [L, r]
        let blockOut = workspace.buffer(.blockOutput, count: L * D)             // a, then the MLP's output: [L, D]
        let scratch = workspace.buffer(.attentionScratch, count: CausalAttention.scratchCount(shape))

        for i in 0..<L {
            (x + i * D2).update(from: h + i * D, count: D)
            (x + i * D2 + D).update(from: h0 + i * D, count: D)
        }
        rmsNorm(x, rows: L, width: D2, weight: inputNorm, epsilon: c.normEpsilon, into: xn)
        linear(xn, rows: L, inFeatures: D2, weight: qProj, outFeatures: qWidth, into: q)
        if let ad = w.qAdapter { addLowRank(xn, rows: L, inFeatures: D2, adapter: ad, rank: a.adapterRank, outFeatures: qWidth, middle: middle, into: q) }
        state.keys.append(contentsOf: repeatElement(0, count: L * kvWidth))    // k, v of this chunk: [L, H_kv·d_a] after the cache's rows
        state.values.append(contentsOf: repeatElement(0, count: L * kvWidth))
        state.keys.withUnsafeMutableBufferPointer { keys in
            state.values.withUnsafeMutableBufferPointer { values in
                let k = keys.baseAddress! + past * kvWidth, v = values.baseAddress! + past * kvWidth
                linear(xn, rows: L, inFeatures: D2, weight: kProj, outFeatures: kvWidth, into: k)
                linear(xn, rows: L, inFeatures: D2, weight: vProj, outFeatures: kvWidth, into: v)
                if let ad = w.kAdapter { addLowRank(xn, rows: L, inFeatures: D2, adapter: ad, rank: a.adapterRank, outFeatures: kvWidth, middle: middle, into: k) }
                if let ad = w.vAdapter { addLowRank(xn, rows: L, inFeatures: D2, adapter: ad, rank: a.adapterRank, outFeatures: kvWidth, middle: middle, into: v) }
                if a.rope {
                    let rope = RotaryEmbedding(headDim: shape.headDim, theta: a.ropeTheta)
                    rope.apply(q, rows: L, heads: shape.heads, firstPosition: past)
                    rope.apply(k, rows: L, heads: shape.keyValueHeads, firstPosition: past)
                }
                let scale = Float(1 / (Double(shape.headDim) / 2).squareRoot())   // transformers: (d_a / 2)^(−1/2)
                if useReferenceAttention {
                    CausalAttention.reference(q: q, k: keys.baseAddress!, v: values.baseAddress!, length: L, past: past, shape: shape, scale: scale, into: attention)
                } else {
                    CausalAttention.blocked(q: q, k: keys.baseAddress!, v: values.baseAddress!, length: L, past: past, shape: shape, scale: scale, into: attention, scratch: scratch)
                }
            }
        }
        linear(attention, rows: L, inFeatures: qWidth, weight: oProj, outFeatures: D, into: blockOut)
        rmsNorm(blockOut, rows: L, width: D, weight: preFeedForwardNorm, epsilon: c.normEpsilon, into: xn)
        linear(xn, rows: L, inFeatures: D, weight: self.gateUp, outFeatures: 2 * I, into: gateUp, bias: gateUpBias)
        addLowRank(xn, rows: L, inFeatures: D, adapter: w.gateUpAdapter, rank: a.adapterRank, outFeatures: 2 * I, middle: middle, into: gateUp)
        gatedActivation(gateUp, rows: L, width: I, activation: a.activation)
        linear(gateUp, rows: L, inFeatures: I, xStride: 2 * I, weight: down, outFeatures: D, into: blockOut, bias: downBias)
        linear(blockOut, rows: L, inFeatures: D, weight: w.linear, outFeatures: D, into: t)
    }
}

/// y: [rows, out] += (x: [rows, in] · Aᵀ) · Bᵀ, through `middle`: [rows, r].
func addLowRank(_ x: UnsafePointer<Float>, rows: Int, inFeatures: Int, adapter: LowRankAdapter, rank: Int, outFeatures: Int,
                middle: UnsafeMutablePointer<Float>, into y: UnsafeMutablePointer<Float>) {
    linear(x, rows: rows, inFeatures: inFeatures, weight: adapter.a, outFeatures: rank, into: middle)
    precondition(adapter.b.count == outFeatures * rank, "adapter B has \(adapter.b.count) values, not \(outFeatures) × \(rank)")
    adapter.b.withUnsafeBufferPointer { b in
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(outFeatures), Int32(rank),
                    1, middle, Int32(rank), b.baseAddress!, Int32(rank), 1, y, Int32(outFeatures))
    }
}

/// gu: [rows, 2I] → its first I columns ← act(g) ⊙ u (g the first I columns, u the last I). On all cores.
func gatedActivation(_ gu: UnsafeMutablePointer<Float>, rows: Int, width I: Int, activation: String) {
    nonisolated(unsafe) let gu = gu
    let kind = activation
    parallelRanges(rows) { range in
        for r in range {
            let g = gu + r * 2 * I, u = g + I
            for c in 0..<I {
                let x = g[c]
                let act: Float
                switch kind {
                case "silu": act = x / (1 + Foundation.exp(-x))
                case "gelu_pytorch_tanh":
                    act = 0.5 * x * (1 + Foundation.tanh(0.797_884_56 * (x + 0.044715 * x * x * x)))
                default: act = Float(0.5 * Double(x) * (1 + Foundation.erf(Double(x) * 0.707_106_781_186_547_5)))   // exact GELU
                }
                g[c] = act * u[c]
            }
        }
    }
}

/// Rotary embeddings as transformers' Zamba2 applies them: over the head dim d, frequencies
/// θ^(−2i/d) (i < d/2) in f32, rotate-half pairing (i, i + d/2).
struct RotaryEmbedding {
    let inverseFrequencies: [Float]   // [d/2]
    let headDim: Int

    init(headDim d: Int, theta: Double) {
        headDim = d
        inverseFrequencies = (0..<(d / 2)).map { i in 1 / Foundation.pow(Float(theta), Float(2 * i) / Float(d)) }
    }

    /// x: [rows, heads·d], row i at position firstPosition + i, rotated in place.
    func apply(_ x: UnsafeMutablePointer<Float>, rows: Int, heads: Int, firstPosition: Int) {
        let half = headDim / 2
        var cosines = [Float](repeating: 0, count: half), sines = cosines
        for r in 0..<rows {
            let position = Float(firstPosition + r)
            for i in 0..<half {
                let angle = position * inverseFrequencies[i]
                cosines[i] = Foundation.cos(angle); sines[i] = Foundation.sin(angle)
            }
            for h in 0..<heads {
                let v = x + r * heads * headDim + h * headDim
                for i in 0..<half {
                    let a = v[i], b = v[i + half]
                    v[i] = a * cosines[i] - b * sines[i]
                    v[i + half] = b * cosines[i] + a * sines[i]
                }
            }
        }
    }
}
