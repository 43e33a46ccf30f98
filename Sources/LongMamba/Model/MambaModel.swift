// The CPU runner: embedding → layers (pre-norm residual blocks) → final norm → (LM head).
//
// Glossary: L tokens, D = d_model, V = padded vocabulary, C = channels per layer.
//   h = embedding[tokens]                      // [L, D]
//   for each layer:  h = h + mixer(RMSNorm(h)) // residual kept in f32
//   Zamba2 hybrid layers: h = h + mixer(RMSNorm(h + t)), t = shared block([h | h₀]) (SharedBlock.swift),
//                         h₀ = the embeddings; every layer (hybrid or not) has a Mamba mixer and records Δ
//   logits = RMSNorm_f(h) · Eᵀ                 // [L, V], E tied to the embedding unless untied
// The sequence goes through one layer at a time, so beyond the weights memory is O(L × width of
// the widest projection). Weights are converted from the mapped checkpoint layer by layer.
import Foundation
import LongMambaKernels

/// Why a forward pass was refused (evaluation refusals are `EvaluationError`).
public enum ModelRunError: Error, CustomStringConvertible, Sendable, Equatable {
    case emptyTokens
    case tokenOutOfVocabulary(token: Int, position: Int, vocabularySize: Int)
    case stateLayerMismatch(stateLayers: Int, modelLayers: Int)
    /// Zamba2: a hybrid layer's weights asked for a layer the schedule does not make hybrid.
    case notHybridLayer(layer: Int)
    /// A per-layer scale table with another layer count than the model.
    case scaleLayerMismatch(scales: Int, modelLayers: Int)

    public var description: String {
        switch self {
        case .emptyTokens:
            return "empty token sequence"
        case let .tokenOutOfVocabulary(token, position, vocabularySize):
            return "token id \(token) at position \(position) is outside the model's vocabulary (ids 0 to \(vocabularySize - 1))"
        case let .stateLayerMismatch(stateLayers, modelLayers):
            return "sequence state has \(stateLayers) layers, the model \(modelLayers)"
        case let .notHybridLayer(layer):
            return "layer \(layer) is not a hybrid layer of this Zamba2 model"
        case let .scaleLayerMismatch(scales, modelLayers):
            return "the scale table has \(scales) layers, the model \(modelLayers)"
        }
    }
}

/// What to do to Δ of one layer before the scan (e.g. LongMamba's threshold filter).
public typealias DeltaFilter = (_ layer: Int, _ delta: inout [Float], _ length: Int, _ channels: Int) -> Void

/// Runs a Mamba-family checkpoint on CPU. One instance runs one forward pass at a time.
public final class MambaModel: @unchecked Sendable {
    public let checkpoint: ModelCheckpoint
    public var config: ModelConfig { checkpoint.config }
    /// Use the plain scans (and plain attention) instead of the vectorised ones (tests compare the two).
    public var useReferenceScan = false
    private var residentMixers: [Int: any Mixer] = [:]
    /// Whether every layer's f32 weights are kept after first use.
    public let keepWeightsResident: Bool
    /// Zamba2: the shared blocks (always kept: every hybrid layer reuses them) and the hybrid layers' own weights.
    private var sharedBlocks: [Int: SharedBlockWeights] = [:]
    private var residentHybridLayers: [Int: HybridLayerWeights] = [:]
    private var lmHead: WeightMatrix?
    private let workspace = Workspace()

    /// - keepWeightsResident: keep every layer's f32 weights after first use (fast repeated runs);
    ///   default: only when the f32 weights take at most 4 GiB.
    public init(checkpoint: ModelCheckpoint, keepWeightsResident: Bool? = nil) {
        self.checkpoint = checkpoint
        // f32 matrices are views into the mapping and cost nothing to keep; converted ones do.
        let params = ModelCheckpoint.expectedShapes(checkpoint.config).values.reduce(0) { $0 + $1.reduce(1, *) }
        self.keepWeightsResident = keepWeightsResident ?? (params * 4 <= 4 << 30)
    }

    public convenience init(directory: String) throws {
        self.init(checkpoint: try ModelCheckpoint(directory: directory))
    }

    /// Checks token ids against the embedding.
    public func validate(tokens: [Int]) throws {
        guard !tokens.isEmpty else { throw ModelRunError.emptyTokens }
        for (i, t) in tokens.enumerated() where t < 0 || t >= config.paddedVocabSize {
            throw ModelRunError.tokenOutOfVocabulary(token: t, position: i, vocabularySize: config.paddedVocabSize)
        }
    }

    /// Runs the whole sequence; hands each layer's Δ to `recorder`; returns logits [L, V] when
    /// `computeLogits` (otherwise an empty array: calibration skips the LM head).
    @discardableResult
    public func forward<R: DeltaRecorder>(tokens: [Int], recorder: inout R, computeLogits: Bool = false,
                                          deltaFilter: DeltaFilter? = nil, layerScales: LayerScales? = nil) throws -> [Float] {
        var state = SequenceState(layerCount: config.layerCount)
        return try forward(tokens: tokens, continuing: &state, recorder: &recorder, computeLogits: computeLogits, deltaFilter: deltaFilter,
                           layerScales: layerScales)
    }

    /// Runs the next chunk of a sequence from `state` (conv histories and SSM states of every
    /// layer) and leaves `state` after the chunk's last token. `layerScales`: a per-layer scale
    /// method (ScaleMethods.swift) applied to this chunk.
    @discardableResult
    public func forward<R: DeltaRecorder>(tokens: [Int], continuing state: inout SequenceState, recorder: inout R,
                                          computeLogits: Bool = false, deltaFilter: DeltaFilter? = nil,
                                          layerScales: LayerScales? = nil) throws -> [Float] {
        if let layerScales, layerScales.scales.count != config.layerCount {
            throw ModelRunError.scaleLayerMismatch(scales: layerScales.scales.count, modelLayers: config.layerCount)
        }
        try validate(tokens: tokens)
        guard state.layers.count == config.layerCount else {
            throw ModelRunError.stateLayerMismatch(stateLayers: state.layers.count, modelLayers: config.layerCount)
        }
        defer { state.position += tokens.count }
        let L = tokens.count, dModel = config.dModel
        var hidden = try checkpoint.floatRows("backbone.embedding.weight", rows: tokens)   // h: [L, D]
        var normed = [Float](repeating: 0, count: L * dModel)                              // RMSNorm(h): [L, D]
        var mixed = [Float](repeating: 0, count: L * dModel)                               // mixer out: [L, D]
        let embeddings = config.sharedBlocks == nil ? [] : hidden                          // h₀: [L, D] (Zamba2)
        for layer in 0..<config.layerCount {
            let norm = try checkpoint.floats("backbone.layers.\(layer).norm.weight")
            if let shared = config.sharedBlocks, let j = shared.hybridIndex(ofLayer: layer) {
                let block = try sharedBlock(j % shared.blockCount, shared)
                let own = try hybridLayer(layer, shared)
                block.forward(hidden: hidden, embeddings: embeddings, length: L, config: config, shared: shared, layer: own,
                              state: &state.layers[layer], workspace: workspace, useReferenceAttention: useReferenceScan, into: &mixed)   // t: [L, D]
                addInPlace(hidden, to: &mixed, count: mixed.count)                              // h + t, the mixer's input
                rmsNorm(mixed, rows: L, width: dModel, weight: norm, epsilon: config.normEpsilon, into: &normed)
            } else {
                rmsNorm(hidden, rows: L, width: dModel, weight: norm, epsilon: config.normEpsilon, into: &normed)
            }
            let mixer = try mixer(layer)
            var filter: LayerDeltaFilter? = deltaFilter.map { f in
                { delta in f(layer, &delta, L, self.config.channelCount) }
            }
            var poweredDecay: [Float]? = nil                                                 // A' (a_power): A's shape
            switch layerScales?.method {
            case .deltaScale?:
                filter = { [filter] delta in layerScales!.scaleDelta(&delta, layer: layer); filter?(&delta) }
            case .aPower?:
                poweredDecay = layerScales!.poweredDecay(aLog: try checkpoint.floats(mixerName(layer) + "A_log"), layer: layer)
            case nil: break
            }
            let delta = mixer.forward(normed, length: L, into: &mixed, state: &state.layers[layer], workspace: workspace,
                                      deltaFilter: filter, poweredDecay: poweredDecay, useReferenceScan: useReferenceScan)
            addInPlace(mixed, to: &hidden, count: hidden.count)                              // h = h + mixer(norm(h))
            try recorder.record(LayerDelta(layer: layer, delta: delta, length: L, channels: config.channelCount, A: mixer.decayRates, aShape: mixer.decayShape))
        }
        guard computeLogits else { return [] }
        let normF = try checkpoint.floats("backbone.norm_f.weight")
        rmsNorm(hidden, rows: L, width: dModel, weight: normF, epsilon: config.normEpsilon, into: &normed)
        let head = try lmHeadWeights()
        let V = config.paddedVocabSize
        var logits = [Float](repeating: 0, count: L * V)                                     // logits: [L, V]
        linear(normed, rows: L, inFeatures: dModel, weight: head, outFeatures: V, into: &logits)
        return logits
    }

    /// The prefix of a layer's mixer tensors (every architecture after `sanitize`).
    private func mixerName(_ layer: Int) -> String { "backbone.layers.\(layer).mixer." }

    /// Forward without recording.
    public func logits(tokens: [Int]) throws -> [Float] {
        var none = DiscardingRecorder()
        return try forward(tokens: tokens, recorder: &none, computeLogits: true)
    }

    private func lmHeadWeights() throws -> WeightMatrix {
        if let lmHead { return lmHead }
        let head = try checkpoint.matrix(config.tieEmbeddings ? "backbone.embedding.weight" : "lm_head.weight")
        if keepWeightsResident { lmHead = head }
        return head
    }

    private func sharedBlock(_ block: Int, _ shared: SharedBlockConfig) throws -> SharedBlockWeights {
        if let b = sharedBlocks[block] { return b }
        let b = try SharedBlockWeights(checkpoint: checkpoint, shared: shared, block: block)
        sharedBlocks[block] = b
        return b
    }

    private func hybridLayer(_ layer: Int, _ shared: SharedBlockConfig) throws -> HybridLayerWeights {
        if let w = residentHybridLayers[layer] { return w }
        let w = try HybridLayerWeights(checkpoint: checkpoint, shared: shared, layer: layer)
        if keepWeightsResident { residentHybridLayers[layer] = w }
        return w
    }

    private func mixer(_ layer: Int) throws -> any Mixer {
        if let m = residentMixers[layer] { return m }
        let m = try checkpoint.mixer(layer: layer)
        if keepWeightsResident { residentMixers[layer] = m }
        return m
    }
}

/// A recorder that keeps nothing.
public struct DiscardingRecorder: DeltaRecorder {
    public init() {}
    public mutating func record(_ layerDelta: LayerDelta) throws {}
}
