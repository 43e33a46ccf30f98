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

    /// transformers-layout config.json contents.
    public var configJSON: [String: Any] {
        let (arch, d, layers): (String, Int, Int) = {
            switch self {
            case .mamba130m: return ("mamba", 768, 24)
            case .mamba370m: return ("mamba", 1024, 48)
            case .mamba790m: return ("mamba", 1536, 48)
            case .mamba1_4b: return ("mamba", 2048, 48)
            case .mamba2_130m: return ("mamba2", 768, 24)
            case .mamba2_370m: return ("mamba2", 1024, 48)
            case .mamba2_1_3b: return ("mamba2", 2048, 48)
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
    /// Writes config.json + model.safetensors for `shape` into `directory` (created if needed).
    public static func write(_ shape: ModelShape, to directory: String, seed: UInt64 = 0) throws {
        let configData = try JSONSerialization.data(withJSONObject: shape.configJSON, options: [.sortedKeys, .prettyPrinted])
        let config = try ModelConfig.parse(configData, path: "\(shape.rawValue) config")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try configData.write(to: URL(fileURLWithPath: directory).appendingPathComponent("config.json"))
        var rng = SplitMix64(seed: seed)
        var writer = SafetensorsWriter(metadata: ["format": "pt", "generator": "longmamba synthetic \(shape.rawValue)"])
        for (name, dims) in ModelCheckpoint.expectedShapes(config).sorted(by: { $0.key < $1.key }) {
            let count = dims.reduce(1, *)
            let values: [Float]
            let leaf = name.split(separator: ".").suffix(2).joined(separator: ".")
            switch leaf {
            case "mixer.A_log":
                let n = dims.count == 2 ? dims[1] : dims[0]
                values = (0..<count).map { Float(Foundation.log(Double($0 % n + 1))) }
            case "mixer.D", "norm.weight", "norm_f.weight":
                values = [Float](repeating: 1, count: count)
            case "dt_proj.bias", "mixer.dt_bias":
                values = (0..<count).map { _ in
                    let dt = Foundation.exp(rng.nextUnit() * (Foundation.log(0.1) - Foundation.log(0.001)) + Foundation.log(0.001))
                    return Float(dt + Foundation.log(-Foundation.expm1(-dt)))           // softplus⁻¹(dt)
                }
            case "conv1d.bias":
                values = [Float](repeating: 0, count: count)
            default:
                let fanIn = Double(dims.last ?? 1)
                let scale = name.hasSuffix("embedding.weight") ? 0.02 : 1 / fanIn.squareRoot()
                values = (0..<count).map { _ in Float((rng.nextUnit() * 2 - 1) * scale * 1.732) }
            }
            writer.add(name == "backbone.embedding.weight" ? "backbone.embeddings.weight" : name, shape: dims, floats: values)
        }
        try writer.write(to: URL(fileURLWithPath: directory).appendingPathComponent("model.safetensors").path)
    }
}

extension SplitMix64 {
    /// Uniform in [0, 1) from the top 53 bits.
    mutating func nextUnit() -> Double { Double(next() >> 11) * 0x1p-53 }
}
