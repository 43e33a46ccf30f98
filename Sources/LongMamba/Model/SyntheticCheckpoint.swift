// Random-weight checkpoints of real models' shapes, for benchmarks (speed does not depend on the
// values) and for tests that need a model larger than the fixtures. Written in the transformers
// layout as model.safetensors + config.json, with Mamba's own initialisation of the SSM
// parameters (A_log = log(1..N) / log(1..H), dt_bias = softplus⁻¹(dt), dt log-uniform in
// [1e-3, 1e-1]) so that Δ has realistic magnitudes.
import Foundation

/// Named shapes of published checkpoints (docs/checkpoints.md "Named shapes").
public enum ModelShape: String, CaseIterable, Sendable {
    case mamba130m = "mamba-130m", mamba370m = "mamba-370m", mamba790m = "mamba-790m", mamba1_4b = "mamba-1.4b"
    case mamba2_130m = "mamba2-130m", mamba2_370m = "mamba2-370m", mamba2_1_3b = "mamba2-1.3b"
    /// tiiuae/falcon-mamba-7b (its published config.json, docs/checkpoints.md) and
    /// mistralai/Mamba-Codestral-7B-v0.1 (64 × 4096, 128 heads of 64, 8 groups, vocab 32768, untied).
    case falconMamba7b = "falcon-mamba-7b", codestralMamba7b = "codestral-mamba-7b"
    /// Zyphra/Zamba2-1.2B: 38 layers (hybrid at 5, 11, …, 35), hidden 2048, 64 Mamba heads of 64,
    /// state 128, one shared block (32 heads of 128, MLP 8192, RoPE) with rank-128 adapters; bf16.
    case zamba2_1_2b = "zamba2-1.2b"

    /// The dtype the checkpoint is published in (the 7B models ship bf16 shards, Zamba2 bf16).
    public var publishedDType: DType {
        switch self {
        case .falconMamba7b, .codestralMamba7b, .zamba2_1_2b: return .bf16
        default: return .f32
        }
    }

    /// transformers-layout config.json contents.
    public var configJSON: [String: Any] {
        switch self {
        case .zamba2_1_2b:
            let hybrid = [5, 11, 17, 23, 29, 35]
            return ["model_type": "zamba2", "hidden_size": 2048, "num_hidden_layers": 38, "vocab_size": 32000,
                    "layers_block_type": (0..<38).map { hybrid.contains($0) ? "hybrid" : "mamba" }, "hybrid_layer_ids": hybrid,
                    "mamba_d_state": 128, "mamba_d_conv": 4, "mamba_expand": 2, "n_mamba_heads": 64, "mamba_ngroups": 1,
                    "num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 8192, "hidden_act": "gelu",
                    "num_mem_blocks": 1, "adapter_rank": 128, "use_shared_attention_adapter": true, "use_mem_rope": true,
                    "rope_parameters": ["rope_theta": 10000.0, "rope_type": "default"], "max_position_embeddings": 4096,
                    "rms_norm_eps": 1e-5, "time_step_min": 0.001, "chunk_size": 256, "use_conv_bias": true,
                    "add_bias_linear": false, "tie_word_embeddings": true]
        case .falconMamba7b:
            // The published config's values ("expand": 16 is what the file says; intermediate_size decides).
            return ["model_type": "falcon_mamba", "hidden_size": 4096, "num_hidden_layers": 64, "intermediate_size": 8192,
                    "expand": 16, "state_size": 16, "time_step_rank": 256, "conv_kernel": 4, "vocab_size": 65024,
                    "layer_norm_epsilon": 1e-5, "residual_in_fp32": true, "tie_word_embeddings": false,
                    "use_bias": false, "use_conv_bias": true, "torch_dtype": "bfloat16"]
        case .codestralMamba7b:
            return ["model_type": "mamba2", "hidden_size": 4096, "num_hidden_layers": 64, "expand": 2, "state_size": 128,
                    "head_dim": 64, "num_heads": 128, "n_groups": 8, "chunk_size": 256, "conv_kernel": 4, "vocab_size": 32768,
                    "layer_norm_epsilon": 1e-5, "residual_in_fp32": true, "tie_word_embeddings": false,
                    "use_bias": false, "use_conv_bias": true, "torch_dtype": "bfloat16"]
        default:
            return smallShapeConfig
        }
    }

    private var smallShapeConfig: [String: Any] {
        let (arch, d, layers): (String, Int, Int) = {
            switch self {
            case .mamba130m: return ("mamba", 768, 24)
            case .mamba370m: return ("mamba", 1024, 48)
            case .mamba790m: return ("mamba", 1536, 48)
            case .mamba1_4b: return ("mamba", 2048, 48)
            case .mamba2_130m: return ("mamba2", 768, 24)
            case .mamba2_370m: return ("mamba2", 1024, 48)
            case .mamba2_1_3b: return ("mamba2", 2048, 48)
            case .falconMamba7b, .codestralMamba7b, .zamba2_1_2b: return ("mamba", 4096, 64)   // configJSON spells these out
            }
        }()
        var c: [String: Any] = ["model_type": arch, "hidden_size": d, "num_hidden_layers": layers, "expand": 2,
                                "conv_kernel": 4, "layer_norm_epsilon": 1e-5, "residual_in_fp32": true,
                                "tie_word_embeddings": true, "use_bias": false, "use_conv_bias": true]
        if arch == "mamba" {
            c["vocab_size"] = 50280; c["state_size"] = 16; c["intermediate_size"] = 2 * d; c["time_step_rank"] = (d + 15) / 16
        } else {
            c["vocab_size"] = 50288; c["state_size"] = 128; c["head_dim"] = 64; c["num_heads"] = 2 * d / 64; c["n_groups"] = 1
            c["chunk_size"] = 256
        }
        return c
    }
}

public enum SyntheticCheckpoint {
    /// Writes config.json and the weights for `shape` into `directory` (created if needed).
    /// - dtype: f32, bf16 or f16 (bf16 values are the f32 ones rounded to nearest even).
    /// - layers: keep only the first N layers (quick runs of big shapes).
    /// - shardBytes: above this size the weights are split into model-0000i-of-0000n.safetensors
    ///   shards with model.safetensors.index.json, as published checkpoints are. Tensors are
    ///   generated and written one at a time, so memory stays at the largest tensor.
    public static func write(_ shape: ModelShape, to directory: String, seed: UInt64 = 0, dtype: DType = .f32,
                             layers: Int? = nil, shardBytes: Int = 5_000_000_000) throws {
        var json = shape.configJSON
        if let layers { json["num_hidden_layers"] = layers }
        json["torch_dtype"] = dtype == .bf16 ? "bfloat16" : (dtype == .f16 ? "float16" : "float32")
        let configData = try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys, .prettyPrinted])
        let config = try ModelConfig.parse(configData, path: "\(shape.rawValue) config")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var rng = SplitMix64(seed: seed)
        let tensors = ModelCheckpoint.expectedShapes(config).sorted(by: { $0.key < $1.key }).map { (name: $0.key, shape: $0.value) }
        // Shards: consecutive tensors up to shardBytes each.
        var shards: [[(name: String, shape: [Int])]] = [[]]
        var shardSize = 0
        for t in tensors {
            let bytes = t.shape.reduce(1, *) * dtype.byteSize
            if shardSize > 0 && shardSize + bytes > shardBytes { shards.append([]); shardSize = 0 }
            shards[shards.count - 1].append(t); shardSize += bytes
        }
        // transformers' names (Zamba2: its own layout, see zamba2Name).
        let stored = { (name: String) in
            config.sharedBlocks.map { zamba2Name(name, $0) } ?? (name == "backbone.embedding.weight" ? "backbone.embeddings.weight" : name)
        }
        var weightMap: [String: String] = [:]
        var total = 0
        for (i, shard) in shards.enumerated() {
            let file = shards.count == 1 ? "model.safetensors" : String(format: "model-%05d-of-%05d.safetensors", i + 1, shards.count)
            var writer = try SafetensorsStreamWriter(path: URL(fileURLWithPath: directory).appendingPathComponent(file).path,
                                                     tensors: shard.map { (stored($0.name), dtype, $0.shape) },
                                                     metadata: ["format": "pt", "generator": "longmamba synthetic \(shape.rawValue)"])
            for t in shard {
                let values = initialValues(t.name, t.shape, &rng)
                try writer.append(stored(t.name), data: encode(values, as: dtype))
                weightMap[stored(t.name)] = file
                total += values.count * dtype.byteSize
            }
            try writer.finish()
        }
        if shards.count > 1 {
            let index: [String: Any] = ["metadata": ["total_size": total], "weight_map": weightMap]
            try JSONSerialization.data(withJSONObject: index, options: [.sortedKeys, .prettyPrinted])
                .write(to: URL(fileURLWithPath: directory).appendingPathComponent("model.safetensors.index.json"))
        }
        // config.json last: a directory with a config is a finished checkpoint.
        try configData.write(to: URL(fileURLWithPath: directory).appendingPathComponent("config.json"))
    }

    /// Mamba's own initialisation for the SSM parameters, uniform ±√3/√fan-in for matrices.
    static func initialValues(_ name: String, _ dims: [Int], _ rng: inout SplitMix64) -> [Float] {
        let count = dims.reduce(1, *)
        let leaf = name.split(separator: ".").suffix(2).joined(separator: ".")
        switch leaf {
        case "mixer.A_log":
            let n = dims.count == 2 ? dims[1] : dims[0]
            return (0..<count).map { Float(Foundation.log(Double($0 % n + 1))) }
        case "mixer.D", "norm.weight", "norm_f.weight", "input_layernorm.weight", "pre_ff_layernorm.weight":
            return [Float](repeating: 1, count: count)
        case "dt_proj.bias", "mixer.dt_bias":
            return (0..<count).map { _ in
                let dt = Foundation.exp(rng.nextUnit() * (Foundation.log(0.1) - Foundation.log(0.001)) + Foundation.log(0.001))
                return Float(dt + Foundation.log(-Foundation.expm1(-dt)))           // softplus⁻¹(dt)
            }
        case "conv1d.bias":
            return [Float](repeating: 0, count: count)
        default:
            let fanIn = Double(dims.last ?? 1)
            let scale = Float((name.hasSuffix("embedding.weight") || name == "lm_head.weight" ? 0.02 : 1 / fanIn.squareRoot()) * 1.732)
            return (0..<count).map { _ in (Float(rng.next() >> 40) * 0x1p-24 * 2 - 1) * scale }
        }
    }

    static func encode(_ values: [Float], as dtype: DType) -> Data {
        switch dtype {
        case .bf16: return values.map { HalfConversion.floatToBF16($0) }.withUnsafeBytes { Data($0) }
        case .f16: return values.map { Float16($0).bitPattern }.withUnsafeBytes { Data($0) }
        default: return values.withUnsafeBytes { Data($0) }
        }
    }
}

/// The transformers Zamba2ForCausalLM name of a canonical tensor name (the inverse of
/// ModelCheckpoint.zamba2CanonicalName).
func zamba2Name(_ canonical: String, _ shared: SharedBlockConfig) -> String {
    switch canonical {
    case "backbone.embedding.weight": return "model.embed_tokens.weight"
    case "backbone.norm_f.weight": return "model.final_layernorm.weight"
    default: break
    }
    let parts = canonical.split(separator: ".", maxSplits: 3)
    guard parts.count == 4, parts[0] == "backbone", parts[1] == "layers", let layer = Int(parts[2]) else { return canonical }
    let decoder = shared.hybridLayers.contains(layer) ? "mamba_decoder." : ""
    if parts[3] == "norm.weight" { return "model.layers.\(layer).\(decoder)input_layernorm.weight" }
    if parts[3].hasPrefix("mixer.") { return "model.layers.\(layer).\(decoder)mamba." + parts[3].dropFirst("mixer.".count) }
    return canonical
}

extension SplitMix64 {
    /// Uniform in [0, 1) from the top 53 bits.
    mutating func nextUnit() -> Double { Double(next() >> 11) * 0x1p-53 }
}
