// Model hyper-parameters read from config.json, in either layout:
//  - state-spaces (mamba_ssm): d_model, n_layer, vocab_size, ssm_cfg {layer, d_state, headdim, ...},
//    pad_vocab_size_multiple, tie_embeddings
//  - transformers: model_type mamba | mamba2 | falcon_mamba, hidden_size, num_hidden_layers,
//    state_size, expand, head_dim, num_heads, n_groups, time_step_rank, time_step_limit, ...
//  - transformers Zamba2 (model_type zamba2): hidden_size, num_hidden_layers, mamba_d_state,
//    mamba_expand, n_mamba_heads, mamba_ngroups, layers_block_type / hybrid_layer_ids,
//    num_mem_blocks, num_attention_heads, num_key_value_heads, intermediate_size, adapter_rank,
//    use_shared_attention_adapter, use_mem_rope, rope_parameters, hidden_act, time_step_min
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
    /// Mamba-2 layers plus shared attention blocks in front of the hybrid layers (Zyphra/Zamba2-*).
    case zamba2

    /// Whether the layers' mixers are Mamba-2 (one Δ channel per head).
    public var isMamba2Family: Bool { self == .mamba2 || self == .zamba2 }
}

/// Zamba2's shared transformer blocks (docs/zamba2.md). Symbols: D = hidden size, H_a attention
/// heads, H_kv key/value heads, d_a = 2D / H_a head dim, I = MLP width, r = adapter rank.
public struct SharedBlockConfig: Sendable, Codable, Equatable {
    /// Layers with a shared block in front of their Mamba mixer (layers_block_type "hybrid"), ascending.
    public var hybridLayers: [Int]
    /// num_mem_blocks: hybrid layer j (counting hybrid layers only) uses block j mod blockCount.
    public var blockCount: Int
    public var attentionHeads: Int
    public var keyValueHeads: Int
    /// d_a = 2D / H_a.
    public var attentionHeadDim: Int
    /// I: the gated MLP's width.
    public var mlpWidth: Int
    /// r: rank of the per-invocation LoRA adapters (always on the MLP's gate_up_proj).
    public var adapterRank: Int
    /// use_shared_attention_adapter: LoRA adapters on q, k and v too.
    public var attentionAdapters: Bool
    /// use_mem_rope: rotary embeddings on q and k, base `ropeTheta`.
    public var rope: Bool
    public var ropeTheta: Double
    /// hidden_act of the MLP: gelu (erf), gelu_pytorch_tanh or silu.
    public var activation: String
    /// add_bias_linear: biases on the MLP projections (and on the Mamba in/out projections).
    public var mlpBias: Bool

    /// Index j of a hybrid layer among the hybrid layers, or nil.
    public func hybridIndex(ofLayer layer: Int) -> Int? { hybridLayers.firstIndex(of: layer) }
    /// The shared block hybrid layer `layer` runs.
    public func block(ofLayer layer: Int) -> Int? { hybridIndex(ofLayer: layer).map { $0 % blockCount } }
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
    /// A width that must be a multiple of a count is not (`what`: e.g. "n_mamba_heads 5 into d_inner 64").
    case notDivisible(path: String, key: String, what: String)
    /// Zamba2: layers_block_type / hybrid_layer_ids that do not describe num_hidden_layers layers.
    case invalidLayerSchedule(path: String, reason: String)
    /// A setting the runner does not implement (`key`, `value` as written, `hint`).
    case unsupportedSetting(path: String, key: String, value: String, hint: String)
    /// A shape value that is not a whole number in 0...limit.
    case valueOutOfRange(path: String, key: String, value: String, limit: Int)

    public var path: String {
        switch self {
        case let .notJSON(path, _), let .notAnObject(path), let .missingValue(path, _), let .unknownArchitecture(path),
             let .unsupportedLayer(path, _), let .hybridAttention(path, _), let .gatedMLP(path, _), let .unsupportedModelType(path, _),
             let .headShapeMismatch(path, _, _, _), let .headsNotMultipleOfGroups(path, _, _), let .invalidTimeStepLimit(path, _),
             let .valueOutOfRange(path, _, _, _), let .notDivisible(path, _, _), let .invalidLayerSchedule(path, _),
             let .unsupportedSetting(path, _, _, _):
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
            return "\(path): unsupported model_type '\(modelType)' (supported: mamba, mamba2, falcon_mamba, zamba2, or a state-spaces config)"
        case let .headShapeMismatch(path, heads, headDim, dInner):
            return "\(path): num_heads \(heads) × head_dim \(headDim) ≠ d_inner \(dInner)"
        case let .headsNotMultipleOfGroups(path, heads, groups):
            return "\(path): num_heads \(heads) is not a multiple of n_groups \(groups)"
        case let .invalidTimeStepLimit(path, value):
            return "\(path): time_step_limit must be [lower, upper], got \(value)"
        case let .valueOutOfRange(path, key, value, limit):
            return "\(path): \(key) = \(value) is not a whole number in 0…\(limit) (damaged or not a model config?)"
        case let .notDivisible(path, key, what):
            return "\(path): \(key): \(what) does not divide evenly"
        case let .invalidLayerSchedule(path, reason):
            return "\(path): layer schedule: \(reason)"
        case let .unsupportedSetting(path, key, value, hint):
            return "\(path): \(key) = \(value) is not supported (\(hint))"
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
    /// Zamba2 only: the shared attention blocks and where they run.
    public var sharedBlocks: SharedBlockConfig? = nil

    /// Channels per layer in the LongMamba sense: d_inner (Mamba-1) or heads (Mamba-2, Zamba2).
    public var channelCount: Int { architecture.isMamba2Family ? headCount : dInner }
    /// eps of the gated RMSNorm inside the Mamba-2 mixer (Zamba2 fixes it at 1e-5).
    public var gatedNormEpsilon: Float { architecture == .zamba2 ? 1e-5 : normEpsilon }
}

extension ModelConfig {
    /// Parses config.json bytes. `path` is used in error messages.
    public static func parse(_ data: Data, path: String) throws -> ModelConfig {
        let file: ConfigFile
        do {
            file = try JSONDecoder().decode(ConfigFile.self, from: sanitizeNonFiniteJSON(data))
        } catch let DecodingError.typeMismatch(_, context) where context.codingPath.isEmpty {
            throw ConfigError.notAnObject(path: path)
        } catch {
            throw ConfigError.notJSON(path: path, reason: SystemMessage.of(error))
        }
        return try parse(file, path: path)
    }

    /// The largest value a shape entry may hold (2²⁴: far above any real model's widths and
    /// vocabularies, small enough that the product of two never overflows).
    static let maxDimension = 1 << 24

    static func parse(_ json: ConfigFile, path: String) throws -> ModelConfig {
        // Every integer a shape is computed from: a whole number in 0...maxDimension, so that
        // products of two of them cannot overflow (a damaged file then gets an error, not a trap).
        // `candidates`: (key, value) in order of preference; the first present one counts.
        func int(_ candidates: (String, ConfigFile.Number?)...) throws -> Int? {
            for (k, v) in candidates {
                guard let v else { continue }
                let d = v.value
                guard d.isFinite, d == d.rounded(), d >= 0, d <= Double(ModelConfig.maxDimension) else {
                    throw ConfigError.valueOutOfRange(path: path, key: k, value: v.text, limit: ModelConfig.maxDimension)
                }
                return Int(d)
            }
            return nil
        }
        func require(_ value: Int?, _ what: String) throws -> Int {
            guard let value, value > 0 else { throw ConfigError.missingValue(path: path, key: what) }
            return value
        }

        let modelType = json.modelType
        let ssmCfg = json.ssmCfg
        let isStateSpaces = json.hasDModel && !json.hasHiddenSize && modelType == nil
        let architecture: Architecture
        switch modelType {
        case "mamba": architecture = .mamba
        case "mamba2": architecture = .mamba2
        case "falcon_mamba": architecture = .falconMamba
        case "zamba2": return try parseZamba2(json, path: path)
        case nil:
            guard isStateSpaces else {
                throw ConfigError.unknownArchitecture(path: path)
            }
            switch ssmCfg.layer ?? "Mamba1" {
            case "Mamba1": architecture = .mamba
            case "Mamba2": architecture = .mamba2
            case let other: throw ConfigError.unsupportedLayer(path: path, layer: other)
            }
            if let attn = json.attnLayerIdx, !attn.isEmpty {
                throw ConfigError.hybridAttention(path: path, attentionLayers: "[" + attn.map(\.text).joined(separator: ", ") + "]")
            }
            if let dInt = try int(("d_intermediate", json.dIntermediate)), dInt != 0 {
                throw ConfigError.gatedMLP(path: path, dIntermediate: dInt)
            }
        case let other?:
            throw ConfigError.unsupportedModelType(path: path, modelType: other)
        }

        let dModel = try require(try int(("hidden_size", json.hiddenSize), ("d_model", json.dModel)), "hidden_size/d_model")
        let layers = try require(try int(("num_hidden_layers", json.numHiddenLayers), ("n_layer", json.nLayer)), "num_hidden_layers/n_layer")
        let vocab = try require(try int(("vocab_size", json.vocabSize)), "vocab_size")
        let multiple = try int(("pad_vocab_size_multiple", json.padVocabSizeMultiple)) ?? 1
        // transformers configs already hold the padded size; state-spaces pads at load time.
        let padded = isStateSpaces && multiple > 1 ? (vocab + multiple - 1) / multiple * multiple : vocab
        let dState = try require(try int(("state_size", json.stateSize), ("d_state", ssmCfg.dState)) ?? (architecture == .mamba2 ? 128 : 16), "state_size/d_state")
        let dConv = try require(try int(("conv_kernel", json.convKernel), ("d_conv", ssmCfg.dConv)) ?? 4, "conv_kernel/d_conv")
        let expand = try require(try int(("expand", json.expand), ("expand", ssmCfg.expand)) ?? 2, "expand")
        // Falcon-Mamba's config says expand 16 but intermediate_size 8192 = 2·D: trust intermediate_size.
        let dInner = try require(try int(("intermediate_size", json.intermediateSize)) ?? expand * dModel, "intermediate_size")
        guard dInner <= ModelConfig.maxDimension else {
            throw ConfigError.valueOutOfRange(path: path, key: "expand × hidden_size", value: "\(dInner)", limit: ModelConfig.maxDimension)
        }
        var dtRank = 0
        var headDim = 0, heads = 0, groups = 1
        if architecture == .mamba2 {
            headDim = try int(("head_dim", json.headDim), ("headdim", ssmCfg.headdim)) ?? 64
            groups = try int(("n_groups", json.nGroups), ("ngroups", ssmCfg.ngroups)) ?? 1
            heads = try int(("num_heads", json.numHeads)) ?? (dInner / max(headDim, 1))
            guard headDim > 0, heads * headDim == dInner else {
                throw ConfigError.headShapeMismatch(path: path, heads: heads, headDim: headDim, dInner: dInner)
            }
            guard groups > 0, heads % groups == 0 else { throw ConfigError.headsNotMultipleOfGroups(path: path, heads: heads, groups: groups) }
        } else {
            // "auto" = ceil(D / 16)
            dtRank = try require(try int(("time_step_rank", json.timeStepRank), ("dt_rank", ssmCfg.dtRank)) ?? (dModel + 15) / 16, "time_step_rank/dt_rank")
        }
        var lower = 0.0, upper = Double.infinity
        // time_step_limit when the key is there (whatever its value), else ssm_cfg.dt_limit.
        if let limit = json.hasTimeStepLimit ? json.timeStepLimit : ssmCfg.dtLimit {
            guard limit.count == 2, let lo = limit[0].value?.value, let hi = limit[1].value?.value else {
                throw ConfigError.invalidTimeStepLimit(path: path, value: "[" + limit.map(\.text).joined(separator: ", ") + "]")
            }
            lower = lo; upper = hi
        }
        let eps = (json.layerNormEpsilon ?? json.normEpsilon)?.value ?? 1e-5
        return ModelConfig(
            architecture: architecture,
            layout: isStateSpaces ? .stateSpaces : .transformers,
            dModel: dModel, layerCount: layers, vocabSize: vocab, paddedVocabSize: padded,
            dState: dState, dConv: dConv, expand: expand, dInner: dInner, dtRank: dtRank,
            headDim: headDim, headCount: heads, groupCount: groups,
            normEpsilon: Float(eps),
            mixerNormEpsilon: Float(json.mixerRmsEps?.value ?? 1e-6),
            tieEmbeddings: json.tieWordEmbeddings ?? json.tieEmbeddings ?? true,
            convBias: json.useConvBias ?? ssmCfg.convBias ?? true,
            projectionBias: json.useBias ?? ssmCfg.bias ?? false,
            dtLimitLower: Float(lower), dtLimitUpper: Float(upper),
            normBeforeGate: ssmCfg.normBeforeGate ?? false,
            trainingLength: try int(("training_length", json.trainingLength), ("max_position_embeddings", json.maxPositionEmbeddings)) ?? (isStateSpaces ? 2048 : nil)
        )
    }
}

extension ModelConfig {
    /// How the layers of Δ recordings and tables are indexed, for metadata: Zamba2 records every
    /// layer's Mamba mixer (hybrid layers too) under the model's own layer index.
    public var layerIndexMetadata: [String: String] {
        guard let shared = sharedBlocks else { return [:] }
        return ["layer_index": "model layer index (transformers model.layers.{i}); every layer's Mamba-2 mixer, hybrid layers included",
                "mamba_layers": "0-\(layerCount - 1)",
                "hybrid_layers": "[" + shared.hybridLayers.map(String.init).joined(separator: ", ") + "]"]
    }
}

extension ModelConfig {
    /// A transformers Zamba2Config (configuration_zamba2.py): Mamba-2 layers with `mamba_*` keys,
    /// the layer schedule and the shared blocks. Derived values are recomputed as transformers
    /// does (attention width 2D, d_a = 2D / H_a, Mamba head dim = d_inner / n_mamba_heads,
    /// MLP width 4D unless given, Δ clamped to (time_step_min, ∞)).
    static func parseZamba2(_ json: ConfigFile, path: String) throws -> ModelConfig {
        func int(_ key: String, _ v: ConfigFile.Number?) throws -> Int? {
            guard let v else { return nil }
            let d = v.value
            guard d.isFinite, d == d.rounded(), d >= 0, d <= Double(ModelConfig.maxDimension) else {
                throw ConfigError.valueOutOfRange(path: path, key: key, value: v.text, limit: ModelConfig.maxDimension)
            }
            return Int(d)
        }
        func positive(_ key: String, _ v: ConfigFile.Number?, default value: Int? = nil) throws -> Int {
            guard let n = try int(key, v) ?? value, n > 0 else { throw ConfigError.missingValue(path: path, key: key) }
            return n
        }
        /// A list entry that is a layer index 0..<n, else nil (checked as a double first: no trap on 1e300).
        func layerIndex(_ entry: ConfigFile.Entry<ConfigFile.Number>, below n: Int) -> Int? {
            guard let d = entry.value?.value, d.isFinite, d == d.rounded(), d >= 0, d < Double(n) else { return nil }
            return Int(d)
        }
        func list(_ entries: [ConfigFile.Entry<ConfigFile.Number>]) -> String { "[" + entries.map(\.text).joined(separator: ", ") + "]" }
        func divide(_ width: Int, by count: Int, key: String, what: String) throws -> Int {
            guard count > 0, width % count == 0 else { throw ConfigError.notDivisible(path: path, key: key, what: what) }
            return width / count
        }

        let dModel = try positive("hidden_size", json.hiddenSize)
        let layers = try positive("num_hidden_layers", json.numHiddenLayers)
        let vocab = try positive("vocab_size", json.vocabSize)
        let dState = try positive("mamba_d_state", json.mambaDState, default: 64)
        let dConv = try positive("mamba_d_conv", json.mambaDConv, default: 4)
        let expand = try positive("mamba_expand", json.mambaExpand, default: 2)
        let dInner = expand * dModel
        guard dInner <= ModelConfig.maxDimension else {
            throw ConfigError.valueOutOfRange(path: path, key: "mamba_expand × hidden_size", value: "\(dInner)", limit: ModelConfig.maxDimension)
        }
        let heads = try positive("n_mamba_heads", json.nMambaHeads, default: 8)
        let headDim = try divide(dInner, by: heads, key: "n_mamba_heads", what: "\(heads) Mamba heads into d_inner \(dInner) = mamba_expand × hidden_size")
        let groups = try positive("mamba_ngroups", json.mambaNgroups, default: 1)
        guard heads % groups == 0 else { throw ConfigError.headsNotMultipleOfGroups(path: path, heads: heads, groups: groups) }

        // The schedule: layers_block_type ("mamba" / "linear_attention" / "hybrid"), else hybrid_layer_ids.
        var hybrid: [Int]
        if let types = json.layersBlockType {
            guard types.count == layers else {
                throw ConfigError.invalidLayerSchedule(path: path, reason: "layers_block_type has \(types.count) entries but num_hidden_layers is \(layers)")
            }
            hybrid = []
            for (i, t) in types.enumerated() {
                switch t.value {
                case "hybrid": hybrid.append(i)
                case "mamba", "linear_attention": break
                default: throw ConfigError.invalidLayerSchedule(path: path, reason: "layers_block_type[\(i)] = \(t.text) (expected \"mamba\", \"linear_attention\" or \"hybrid\")")
                }
            }
            if let ids = json.hybridLayerIds, ids.map({ layerIndex($0, below: layers) }) != hybrid.map(Optional.some) {
                throw ConfigError.invalidLayerSchedule(path: path, reason: "hybrid_layer_ids \(list(ids)) disagree with layers_block_type (hybrid at \(hybrid))")
            }
        } else if let ids = json.hybridLayerIds {
            hybrid = try ids.map {
                guard let i = layerIndex($0, below: layers) else {
                    throw ConfigError.invalidLayerSchedule(path: path, reason: "hybrid_layer_ids entry \($0.text) is not a layer index in 0 to \(layers - 1)")
                }
                return i
            }
            guard hybrid == Array(Set(hybrid)).sorted() else {
                throw ConfigError.invalidLayerSchedule(path: path, reason: "hybrid_layer_ids \(hybrid) are not strictly ascending")
            }
        } else {
            throw ConfigError.missingValue(path: path, key: "layers_block_type/hybrid_layer_ids")
        }

        let attentionHeads = try positive("num_attention_heads", json.numAttentionHeads, default: 32)
        let kvHeads = try int("num_key_value_heads", json.numKeyValueHeads) ?? attentionHeads
        let attentionHeadDim = try divide(2 * dModel, by: attentionHeads, key: "num_attention_heads",
                                          what: "\(attentionHeads) attention heads into the attention width \(2 * dModel) = 2 × hidden_size")
        _ = try divide(attentionHeads, by: kvHeads, key: "num_key_value_heads", what: "\(kvHeads) key/value heads into \(attentionHeads) attention heads")
        let attentionAdapters = json.useSharedAttentionAdapter ?? false
        if attentionAdapters && kvHeads != attentionHeads {
            // transformers adds a [2D]-wide adapter output to k and v, which are H_kv·d_a wide.
            throw ConfigError.unsupportedSetting(path: path, key: "use_shared_attention_adapter", value: "true",
                                                 hint: "with num_key_value_heads \(kvHeads) ≠ num_attention_heads \(attentionHeads) the adapters' width does not fit k and v; transformers cannot run this either")
        }
        if json.useLongContext ?? false {
            throw ConfigError.unsupportedSetting(path: path, key: "use_long_context", value: "true", hint: "the rescaled RoPE of the long-context variant is not implemented")
        }
        if let type = json.ropeParameters.ropeType, type != "default" {
            throw ConfigError.unsupportedSetting(path: path, key: "rope_parameters.rope_type", value: type, hint: "only the default RoPE is implemented")
        }
        let activation = json.hiddenAct ?? "gelu"
        guard ["gelu", "gelu_pytorch_tanh", "silu"].contains(activation) else {
            throw ConfigError.unsupportedSetting(path: path, key: "hidden_act", value: activation, hint: "supported: gelu, gelu_pytorch_tanh, silu")
        }
        let blocks = try positive("num_mem_blocks", json.numMemBlocks, default: 1)
        let bias = json.addBiasLinear ?? false
        let shared = SharedBlockConfig(
            hybridLayers: hybrid, blockCount: blocks, attentionHeads: attentionHeads, keyValueHeads: kvHeads,
            attentionHeadDim: attentionHeadDim, mlpWidth: try int("intermediate_size", json.intermediateSize) ?? 4 * dModel,
            adapterRank: try positive("adapter_rank", json.adapterRank, default: 128), attentionAdapters: attentionAdapters,
            rope: json.useMemRope ?? false,
            ropeTheta: (json.ropeParameters.ropeTheta ?? json.ropeTheta)?.value ?? 10000,
            activation: activation, mlpBias: bias)
        guard shared.mlpWidth > 0 else { throw ConfigError.missingValue(path: path, key: "intermediate_size") }
        let eps = json.rmsNormEps?.value ?? 1e-5
        let lower = json.timeStepMin?.value ?? 0.001
        return ModelConfig(
            architecture: .zamba2, layout: .transformers,
            dModel: dModel, layerCount: layers, vocabSize: vocab, paddedVocabSize: vocab,
            dState: dState, dConv: dConv, expand: expand, dInner: dInner, dtRank: 0,
            headDim: headDim, headCount: heads, groupCount: groups,
            normEpsilon: Float(eps), mixerNormEpsilon: 1e-5,
            tieEmbeddings: json.tieWordEmbeddings ?? true,
            convBias: json.useConvBias ?? true, projectionBias: bias,
            dtLimitLower: Float(lower), dtLimitUpper: .infinity, normBeforeGate: false,
            // Zamba2 was trained at 4096 tokens (max_position_embeddings; the paper's L for Zamba2).
            trainingLength: try int("training_length", json.trainingLength) ?? int("max_position_embeddings", json.maxPositionEmbeddings) ?? 4096,
            sharedBlocks: shared)
    }
}

/// Python's json module writes bare `Infinity`, `-Infinity` and `NaN` tokens (older transformers
/// configs do); JSONSerialization rejects them. Rewrite them, outside strings, to the
/// `{"__float__": ...}` form that `ConfigFile.Number` reads.
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
