// config.json as typed records: every key `ModelConfig.parse` reads, in the transformers
// spelling, the state-spaces spelling (`ssm_cfg`) and Zamba2's. Values are decoded leniently —
// one of another type reads as absent, as the checks that follow expect — so every message
// stays the config parser's own ("missing or non-positive hidden_size/d_model", "time_step_limit
// must be [lower, upper]") rather than a decoder's. Keys this runner does not use are ignored.
import Foundation

struct ConfigFile: Decodable {
    /// A JSON number, or transformers 5's `{"__float__": "Infinity"}` (bare `Infinity`/`NaN` are
    /// rewritten to that form before decoding, see `sanitizeNonFiniteJSON`).
    struct Number: Decodable {
        var value: Double
        /// As a message shows it: integral values without a fraction.
        var text: String { value.isFinite && value == value.rounded() && abs(value) < 1e15 ? "\(Int64(value))" : "\(value)" }
        init(from decoder: Decoder) throws {
            if let d = try? decoder.singleValueContainer().decode(Double.self) { value = d; return }
            let c = try decoder.container(keyedBy: JSONKey.self)
            let s = try c.decode(String.self, forKey: JSONKey("__float__"))
            switch s {
            case "Infinity", "inf": value = .infinity
            case "-Infinity", "-inf": value = -.infinity
            case "NaN", "nan": value = .nan
            default:
                guard let d = Double(s) else { throw DecodingError.dataCorruptedError(forKey: JSONKey("__float__"), in: c, debugDescription: "not a number") }
                value = d
            }
        }
        init(_ value: Double) { self.value = value }
    }

    /// A list entry of any JSON type: the value when it has the type asked for, else nil, with
    /// its text for messages.
    struct Entry<T: Decodable>: Decodable {
        var value: T?
        var text: String
        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            value = try? c.decode(T.self)
            if let n = try? c.decode(Number.self) { text = n.text } else if let s = try? c.decode(String.self) { text = s }
            else if let b = try? c.decode(Bool.self) { text = "\(b)" } else if c.decodeNil() { text = "null" } else { text = "…" }
        }
    }

    /// state-spaces' `ssm_cfg`.
    struct SSMConfig: Decodable {
        var layer: String?
        var dState, dConv, expand, headdim, ngroups, dtRank: Number?
        var dtLimit: [Entry<Number>]?
        var hasDtLimit = false
        var convBias, bias, normBeforeGate: Bool?
        init() {}
        init(from decoder: Decoder) throws {
            guard let c = try? decoder.container(keyedBy: JSONKey.self) else { return }
            layer = c.lenient(String.self, "layer")
            dState = c.lenient(Number.self, "d_state"); dConv = c.lenient(Number.self, "d_conv"); expand = c.lenient(Number.self, "expand")
            headdim = c.lenient(Number.self, "headdim"); ngroups = c.lenient(Number.self, "ngroups"); dtRank = c.lenient(Number.self, "dt_rank")
            hasDtLimit = c.present("dt_limit")
            dtLimit = c.lenient([Entry<Number>].self, "dt_limit")
            convBias = c.lenient(Bool.self, "conv_bias"); bias = c.lenient(Bool.self, "bias"); normBeforeGate = c.lenient(Bool.self, "norm_before_gate")
        }
    }

    /// Zamba2's `rope_parameters`.
    struct RopeParameters: Decodable {
        var ropeType: String?
        var ropeTheta: Number?
        init() {}
        init(from decoder: Decoder) throws {
            guard let c = try? decoder.container(keyedBy: JSONKey.self) else { return }
            ropeType = c.lenient(String.self, "rope_type"); ropeTheta = c.lenient(Number.self, "rope_theta")
        }
    }

    var modelType: String?
    /// Whether `d_model` / `hidden_size` are keys of the file (any value): how a state-spaces config is told apart.
    var hasDModel = false, hasHiddenSize = false
    var ssmCfg = SSMConfig()
    var attnLayerIdx: [Entry<Number>]?
    // Sizes (transformers and state-spaces names).
    var hiddenSize, dModel, numHiddenLayers, nLayer, vocabSize, padVocabSizeMultiple, stateSize, convKernel, expand: Number?
    var intermediateSize, dIntermediate, headDim, nGroups, numHeads, timeStepRank, trainingLength, maxPositionEmbeddings: Number?
    var timeStepLimit: [Entry<Number>]?
    var hasTimeStepLimit = false
    var layerNormEpsilon, normEpsilon, mixerRmsEps: Number?
    var tieWordEmbeddings, tieEmbeddings, useConvBias, useBias: Bool?
    // Zamba2.
    var mambaDState, mambaDConv, mambaExpand, nMambaHeads, mambaNgroups: Number?
    var layersBlockType: [Entry<String>]?
    var hybridLayerIds: [Entry<Number>]?
    var numAttentionHeads, numKeyValueHeads, numMemBlocks, adapterRank: Number?
    var useSharedAttentionAdapter, useLongContext, useMemRope, addBiasLinear: Bool?
    var ropeParameters = RopeParameters()
    var ropeTheta, rmsNormEps, timeStepMin: Number?
    var hiddenAct: String?

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: JSONKey.self)
        modelType = c.lenient(String.self, "model_type")
        hasDModel = c.present("d_model"); hasHiddenSize = c.present("hidden_size")
        ssmCfg = c.lenient(SSMConfig.self, "ssm_cfg") ?? SSMConfig()
        attnLayerIdx = c.lenient([Entry<Number>].self, "attn_layer_idx")
        func n(_ key: String) -> Number? { c.lenient(Number.self, key) }
        hiddenSize = n("hidden_size"); dModel = n("d_model"); numHiddenLayers = n("num_hidden_layers"); nLayer = n("n_layer")
        vocabSize = n("vocab_size"); padVocabSizeMultiple = n("pad_vocab_size_multiple"); stateSize = n("state_size")
        convKernel = n("conv_kernel"); expand = n("expand"); intermediateSize = n("intermediate_size"); dIntermediate = n("d_intermediate")
        headDim = n("head_dim"); nGroups = n("n_groups"); numHeads = n("num_heads"); timeStepRank = n("time_step_rank")
        trainingLength = n("training_length"); maxPositionEmbeddings = n("max_position_embeddings")
        hasTimeStepLimit = c.present("time_step_limit")
        timeStepLimit = c.lenient([Entry<Number>].self, "time_step_limit")
        layerNormEpsilon = n("layer_norm_epsilon"); normEpsilon = n("norm_epsilon"); mixerRmsEps = n("mixer_rms_eps")
        tieWordEmbeddings = c.lenient(Bool.self, "tie_word_embeddings"); tieEmbeddings = c.lenient(Bool.self, "tie_embeddings")
        useConvBias = c.lenient(Bool.self, "use_conv_bias"); useBias = c.lenient(Bool.self, "use_bias")
        mambaDState = n("mamba_d_state"); mambaDConv = n("mamba_d_conv"); mambaExpand = n("mamba_expand")
        nMambaHeads = n("n_mamba_heads"); mambaNgroups = n("mamba_ngroups")
        layersBlockType = c.lenient([Entry<String>].self, "layers_block_type")
        hybridLayerIds = c.lenient([Entry<Number>].self, "hybrid_layer_ids")
        numAttentionHeads = n("num_attention_heads"); numKeyValueHeads = n("num_key_value_heads")
        numMemBlocks = n("num_mem_blocks"); adapterRank = n("adapter_rank")
        useSharedAttentionAdapter = c.lenient(Bool.self, "use_shared_attention_adapter"); useLongContext = c.lenient(Bool.self, "use_long_context")
        useMemRope = c.lenient(Bool.self, "use_mem_rope"); addBiasLinear = c.lenient(Bool.self, "add_bias_linear")
        ropeParameters = c.lenient(RopeParameters.self, "rope_parameters") ?? RopeParameters()
        ropeTheta = n("rope_theta"); rmsNormEps = n("rms_norm_eps"); timeStepMin = n("time_step_min")
        hiddenAct = c.lenient(String.self, "hidden_act")
    }

}
