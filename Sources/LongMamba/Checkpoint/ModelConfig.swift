// Model hyper-parameters read from config.json, in either layout:
//  - state-spaces (mamba_ssm): d_model, n_layer, vocab_size, ssm_cfg {layer, d_state, headdim, ...},
//    pad_vocab_size_multiple, tie_embeddings
//  - transformers: model_type mamba | mamba2 | falcon_mamba, hidden_size, num_hidden_layers,
//    state_size, expand, head_dim, num_heads, n_groups, time_step_rank, time_step_limit, ...
// Symbols: D = d_model, d_inner = expand·D, N = d_state, P = headdim, H = d_inner / P heads,
// G = ngroups, R = dt_rank.
import Foundation

/// The mixer family of a checkpoint.
public enum Architecture: String, Sendable, Codable, CaseIterable {
    /// Mamba-1 selective scan (state-spaces/mamba-*).
    case mamba
    /// Mamba-2 SSD (state-spaces/mamba2-*, Codestral-Mamba).
    case mamba2
    /// Mamba-1 with weightless RMS norms on dt_low, B and C (tiiuae/falcon-mamba-*).
    case falconMamba = "falcon_mamba"
}

/// Which naming convention a checkpoint directory uses.
public enum CheckpointLayout: String, Sendable, Codable {
    case stateSpaces = "state-spaces"
    case transformers
}

/// Why a config.json was refused; every case names the file.
public enum ConfigError: Error, CustomStringConvertible, Sendable, Equatable {
    /// Not JSON (`reason`: the parser's message).
    case notJSON(path: String, reason: String)
    case notAnObject(path: String)
    /// A required size is absent or ≤ 0 (`key`: the accepted names, e.g. `hidden_size/d_model`).
    case missingValue(path: String, key: String)
    /// No model_type and no state-spaces keys.
    case unknownArchitecture(path: String)
    case unsupportedLayer(path: String, layer: String)
    /// `attentionLayers`: attn_layer_idx as written in the config.
    case hybridAttention(path: String, attentionLayers: String)
    case gatedMLP(path: String, dIntermediate: Int)
    case unsupportedModelType(path: String, modelType: String)
    /// num_heads × head_dim ≠ d_inner.
    case headShapeMismatch(path: String, heads: Int, headDim: Int, dInner: Int)
    case headsNotMultipleOfGroups(path: String, heads: Int, groups: Int)
    /// `value`: time_step_limit as written in the config.
    case invalidTimeStepLimit(path: String, value: String)
    /// A shape value that is not a whole number in 0...limit.
    case valueOutOfRange(path: String, key: String, value: String, limit: Int)

    public var path: String {
        switch self {
        case let .notJSON(path, _), let .notAnObject(path), let .missingValue(path, _), let .unknownArchitecture(path),
             let .unsupportedLayer(path, _), let .hybridAttention(path, _), let .gatedMLP(path, _), let .unsupportedModelType(path, _),
             let .headShapeMismatch(path, _, _, _), let .headsNotMultipleOfGroups(path, _, _), let .invalidTimeStepLimit(path, _),
             let .valueOutOfRange(path, _, _, _):
            return path
        }
    }

    public var description: String {
        switch self {
        case let .notJSON(path, reason):
            return "\(path): not valid JSON: \(reason)"
        case let .notAnObject(path):
            return "\(path): top level is not a JSON object"
        case let .missingValue(path, key):
            return "\(path): missing or non-positive \(key)"
        case let .unknownArchitecture(path):
            return "\(path): cannot tell the architecture: no model_type and no state-spaces keys (d_model, n_layer)"
        case let .unsupportedLayer(path, layer):
            return "\(path): unsupported ssm_cfg.layer '\(layer)' (supported: Mamba1, Mamba2)"
        case let .hybridAttention(path, attentionLayers):
            return "\(path): hybrid checkpoints with attention layers (attn_layer_idx \(attentionLayers)) are not supported"
        case let .gatedMLP(path, dIntermediate):
            return "\(path): d_intermediate \(dIntermediate) (gated MLP blocks) is not supported"
        case let .unsupportedModelType(path, modelType):
            return "\(path): unsupported model_type '\(modelType)' (supported: mamba, mamba2, falcon_mamba, or a state-spaces config)"
        case let .headShapeMismatch(path, heads, headDim, dInner):
            return "\(path): num_heads \(heads) × head_dim \(headDim) ≠ d_inner \(dInner)"
        case let .headsNotMultipleOfGroups(path, heads, groups):
            return "\(path): num_heads \(heads) is not a multiple of n_groups \(groups)"
        case let .invalidTimeStepLimit(path, value):
            return "\(path): time_step_limit must be [lower, upper], got \(value)"
        case let .valueOutOfRange(path, key, value, limit):
            return "\(path): \(key) = \(value) is not a whole number in 0…\(limit) (damaged or not a model config?)"
        }
    }
}

/// Everything the runner needs to know about a model's shape.
public struct ModelConfig: Sendable, Codable, Equatable {
    public var architecture: Architecture
    public var layout: CheckpointLayout
    public var dModel: Int
    public var layerCount: Int
    /// Vocabulary size as written in the config (before padding).
    public var vocabSize: Int
    /// Rows of the embedding matrix the weights must have (vocab padded to a multiple).
    public var paddedVocabSize: Int
    public var dState: Int
    public var dConv: Int
    public var expand: Int
    public var dInner: Int
    /// Mamba-1: rank R of dt_low.
    public var dtRank: Int
    /// Mamba-2: head dimension P, heads H, groups G.
    public var headDim: Int
    public var headCount: Int
    public var groupCount: Int
    public var normEpsilon: Float
    /// Falcon-Mamba: eps of the weightless RMS norms on dt_low, B, C.
    public var mixerNormEpsilon: Float
    public var tieEmbeddings: Bool
    public var convBias: Bool
    public var projectionBias: Bool
    /// Mamba-2 dt clamp (time_step_limit / dt_limit); (0, ∞) is a no-op.
    public var dtLimitLower: Float
    public var dtLimitUpper: Float
    /// Mamba-2 gated norm order: rmsnorm(y)·SiLU(z) when true, rmsnorm(y·SiLU(z)) when false.
    public var normBeforeGate: Bool
    /// The model's training length in tokens when known (2048 for state-spaces checkpoints).
    public var trainingLength: Int?

    /// Channels per layer in the LongMamba sense: d_inner (Mamba-1) or heads (Mamba-2).
    public var channelCount: Int { architecture == .mamba2 ? headCount : dInner }
}

extension ModelConfig {
    /// Parses config.json bytes. `path` is used in error messages.
    public static func parse(_ data: Data, path: String) throws -> ModelConfig {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: sanitizeNonFiniteJSON(data))
        } catch {
            throw ConfigError.notJSON(path: path, reason: error.localizedDescription)
        }
        guard let json = object as? [String: Any] else { throw ConfigError.notAnObject(path: path) }
        return try parse(json, path: path)
    }

    /// The largest value a shape entry may hold (2²⁴: far above any real model's widths and
    /// vocabularies, small enough that the product of two never overflows).
    static let maxDimension = 1 << 24

    static func parse(_ json: [String: Any], path: String) throws -> ModelConfig {
        // Every integer a shape is computed from: a whole number in 0...maxDimension, so that
        // products of two of them cannot overflow (a damaged file then gets an error, not a trap).
        func int(_ keys: [String], in dict: [String: Any] = json) throws -> Int? {
            for k in keys {
                guard let v = dict[k] as? NSNumber else { continue }
                let d = v.doubleValue
                guard d.isFinite, d == d.rounded(), d >= 0, d <= Double(ModelConfig.maxDimension) else {
                    throw ConfigError.valueOutOfRange(path: path, key: k, value: "\(v)", limit: ModelConfig.maxDimension)
                }
                return Int(d)
            }
            return nil
        }
        func double(_ keys: [String], in dict: [String: Any] = json) -> Double? {
            for k in keys { if let v = dict[k], let d = jsonDouble(v) { return d } }
            return nil
        }
        func bool(_ keys: [String], in dict: [String: Any] = json) -> Bool? {
            for k in keys { if let v = dict[k] as? Bool { return v } }
            return nil
        }
        func require(_ value: Int?, _ what: String) throws -> Int {
            guard let value, value > 0 else { throw ConfigError.missingValue(path: path, key: what) }
            return value
        }

        let modelType = json["model_type"] as? String
        let ssmCfg = json["ssm_cfg"] as? [String: Any] ?? [:]
        let isStateSpaces = json["d_model"] != nil && json["hidden_size"] == nil && modelType == nil
        let architecture: Architecture
        switch modelType {
        case "mamba": architecture = .mamba
        case "mamba2": architecture = .mamba2
        case "falcon_mamba": architecture = .falconMamba
        case nil:
            guard isStateSpaces else {
                throw ConfigError.unknownArchitecture(path: path)
            }
            switch ssmCfg["layer"] as? String ?? "Mamba1" {
            case "Mamba1": architecture = .mamba
            case "Mamba2": architecture = .mamba2
            case let other: throw ConfigError.unsupportedLayer(path: path, layer: other)
            }
            if let attn = json["attn_layer_idx"] as? [Any], !attn.isEmpty {
                throw ConfigError.hybridAttention(path: path, attentionLayers: "\(attn)")
            }
            if let dInt = try int(["d_intermediate"]), dInt != 0 {
                throw ConfigError.gatedMLP(path: path, dIntermediate: dInt)
            }
        case let other?:
            throw ConfigError.unsupportedModelType(path: path, modelType: other)
        }

        let dModel = try require(try int(["hidden_size", "d_model"]), "hidden_size/d_model")
        let layers = try require(try int(["num_hidden_layers", "n_layer"]), "num_hidden_layers/n_layer")
        let vocab = try require(try int(["vocab_size"]), "vocab_size")
        let multiple = try int(["pad_vocab_size_multiple"]) ?? 1
        // transformers configs already hold the padded size; state-spaces pads at load time.
        let padded = isStateSpaces && multiple > 1 ? (vocab + multiple - 1) / multiple * multiple : vocab
        let dState = try require(try int(["state_size"]) ?? int(["d_state"], in: ssmCfg) ?? (architecture == .mamba2 ? 128 : 16), "state_size/d_state")
        let dConv = try require(try int(["conv_kernel"]) ?? int(["d_conv"], in: ssmCfg) ?? 4, "conv_kernel/d_conv")
        let expand = try require(try int(["expand"]) ?? int(["expand"], in: ssmCfg) ?? 2, "expand")
        // Falcon-Mamba's config says expand 16 but intermediate_size 8192 = 2·D: trust intermediate_size.
        let dInner = try require(try int(["intermediate_size"]) ?? expand * dModel, "intermediate_size")
        guard dInner <= ModelConfig.maxDimension else {
            throw ConfigError.valueOutOfRange(path: path, key: "expand × hidden_size", value: "\(dInner)", limit: ModelConfig.maxDimension)
        }
        var dtRank = 0
        var headDim = 0, heads = 0, groups = 1
        if architecture == .mamba2 {
            headDim = try int(["head_dim"]) ?? int(["headdim"], in: ssmCfg) ?? 64
            groups = try int(["n_groups"]) ?? int(["ngroups"], in: ssmCfg) ?? 1
            heads = try int(["num_heads"]) ?? (dInner / max(headDim, 1))
            guard headDim > 0, heads * headDim == dInner else {
                throw ConfigError.headShapeMismatch(path: path, heads: heads, headDim: headDim, dInner: dInner)
            }
            guard groups > 0, heads % groups == 0 else { throw ConfigError.headsNotMultipleOfGroups(path: path, heads: heads, groups: groups) }
        } else {
            if let r = try int(["time_step_rank"]) { dtRank = r }
            else if let r = try int(["dt_rank"], in: ssmCfg) { dtRank = r }
            else { dtRank = (dModel + 15) / 16 }  // "auto" = ceil(D / 16)
            dtRank = try require(dtRank, "time_step_rank/dt_rank")
        }
        var lower = 0.0, upper = Double.infinity
        if let limit = (json["time_step_limit"] ?? ssmCfg["dt_limit"]) as? [Any] {
            guard limit.count == 2, let lo = jsonDouble(limit[0]), let hi = jsonDouble(limit[1]) else {
                throw ConfigError.invalidTimeStepLimit(path: path, value: "\(limit)")
            }
            lower = lo; upper = hi
        }
        let eps = double(["layer_norm_epsilon", "norm_epsilon"]) ?? 1e-5
        return ModelConfig(
            architecture: architecture,
            layout: isStateSpaces ? .stateSpaces : .transformers,
            dModel: dModel, layerCount: layers, vocabSize: vocab, paddedVocabSize: padded,
            dState: dState, dConv: dConv, expand: expand, dInner: dInner, dtRank: dtRank,
            headDim: headDim, headCount: heads, groupCount: groups,
            normEpsilon: Float(eps),
            mixerNormEpsilon: Float(double(["mixer_rms_eps"]) ?? 1e-6),
            tieEmbeddings: bool(["tie_word_embeddings", "tie_embeddings"]) ?? true,
            convBias: bool(["use_conv_bias"]) ?? bool(["conv_bias"], in: ssmCfg) ?? true,
            projectionBias: bool(["use_bias"]) ?? bool(["bias"], in: ssmCfg) ?? false,
            dtLimitLower: Float(lower), dtLimitUpper: Float(upper),
            normBeforeGate: bool(["norm_before_gate"], in: ssmCfg) ?? false,
            trainingLength: try int(["training_length", "max_position_embeddings"]) ?? (isStateSpaces ? 2048 : nil)
        )
    }
}

/// A JSON number, or transformers 5's `{"__float__": "Infinity"}` encoding of non-finite floats.
func jsonDouble(_ value: Any) -> Double? {
    if let n = value as? NSNumber { return n.doubleValue }
    if let d = value as? [String: Any], let s = d["__float__"] as? String {
        switch s {
        case "Infinity", "inf": return .infinity
        case "-Infinity", "-inf": return -.infinity
        case "NaN", "nan": return .nan
        default: return Double(s)
        }
    }
    return nil
}

/// Python's json module writes bare `Infinity`, `-Infinity` and `NaN` tokens (older transformers
/// configs do); JSONSerialization rejects them. Rewrite them, outside strings, to the
/// `{"__float__": ...}` form that `jsonDouble` understands.
func sanitizeNonFiniteJSON(_ data: Data) -> Data {
    let bytes = [UInt8](data)
    guard bytes.contains(UInt8(ascii: "I")) || bytes.contains(UInt8(ascii: "N")) else { return data }
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count)
    var inString = false, escaped = false
    var i = 0
    let tokens: [(String, String)] = [("-Infinity", "-Infinity"), ("Infinity", "Infinity"), ("NaN", "NaN")]
    outer: while i < bytes.count {
        let b = bytes[i]
        if inString {
            out.append(b)
            if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") { inString = false }
            i += 1
            continue
        }
        if b == UInt8(ascii: "\"") { inString = true; out.append(b); i += 1; continue }
        for (token, name) in tokens {
            let t = Array(token.utf8)
            if i + t.count <= bytes.count && Array(bytes[i..<(i + t.count)]) == t {
                out.append(contentsOf: Array("{\"__float__\":\"\(name)\"}".utf8))
                i += t.count
                continue outer
            }
        }
        out.append(b)
        i += 1
    }
    return Data(out)
}
