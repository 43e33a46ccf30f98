// LongMamba at inference (docs/method.md §4): for a sequence of length S, with the
// table row for the tabulated length nearest S, in each layer
//   global channel  ⇔  cumulative decay a_c > θ
//   Δ_c,t := Δ_c,t if Δ_c,t > τ_c(S), else 0        (global channels only; strict >)
// A zeroed Δ means the token neither updates nor decays that channel's state. Local channels are
// untouched. Filtering is a prefill-time operation.

/// The global-channel rule, in one place: channel c is global (filtered) when its cumulative
/// decay a_c > θ, compared in f32, as the authors' torch code and the Python package compare an
/// f32 tensor with a Python float (θ is rounded to f32 first). `lookup`, `eval`, `record`,
/// `sweep` and the exports all call this.
public enum GlobalChannels {
    /// Default θ: the authors' channel threshold for mamba2-1.3b.
    public static let defaultTheta = 0.05

    /// a_c > θ for every channel: [C].
    public static func mask(cumulativeDecay: [Float], theta: Double) -> [Bool] {
        let t = Float(theta)
        return cumulativeDecay.map { $0 > t }
    }

    /// How many channels are global.
    public static func count(cumulativeDecay: [Float], theta: Double) -> Int {
        mask(cumulativeDecay: cumulativeDecay, theta: theta).lazy.filter { $0 }.count
    }
}

/// Why a filter could not be built.
public enum LongMambaFilterError: Error, CustomStringConvertible, Sendable, Equatable {
    /// θ ≤ 0 (or NaN).
    case invalidTheta(Double)
    /// Threshold and cumulative-decay lists with different layer counts.
    case layerCountMismatch(thresholdLayers: Int, decayLayers: Int)
    /// A layer with different threshold and cumulative-decay channel counts.
    case channelCountMismatch(layer: Int, thresholds: Int, decays: Int)
    /// A table with another layer count than the model.
    case modelLayerMismatch(tableLayers: Int, modelLayers: Int)
    /// A table layer with another channel count than the model.
    case modelChannelMismatch(layer: Int, tableChannels: Int, modelChannels: Int)

    public var description: String {
        switch self {
        case let .invalidTheta(theta):
            return "θ must be > 0, got \(theta)"
        case let .layerCountMismatch(thresholdLayers, decayLayers):
            return "\(thresholdLayers) layers of thresholds but \(decayLayers) of cumulative decays"
        case let .channelCountMismatch(layer, thresholds, decays):
            return "layer \(layer): \(thresholds) thresholds but \(decays) cumulative decays"
        case let .modelLayerMismatch(tableLayers, modelLayers):
            return "table has \(tableLayers) layers, the model \(modelLayers)"
        case let .modelChannelMismatch(layer, tableChannels, modelChannels):
            return "table layer \(layer) has \(tableChannels) channels, the model \(modelChannels)"
        }
    }
}

/// The thresholds and global-channel masks of every layer for one sequence length.
public struct LongMambaFilter: Sendable {
    public struct Layer: Sendable {
        /// τ_c(S): [C]
        public var deltaThreshold: [Float]
        /// a_c > θ: [C]
        public var globalChannel: [Bool]
        /// α_c(S): [C] (the `alpha` method; empty when not needed)
        public var keptFraction: [Float]
        /// D_c: [C] (the `bound` and `norm` methods; empty when not needed)
        public var decayBudget: [Float]
        public init(deltaThreshold: [Float], globalChannel: [Bool], keptFraction: [Float] = [], decayBudget: [Float] = []) {
            self.deltaThreshold = deltaThreshold; self.globalChannel = globalChannel
            self.keptFraction = keptFraction; self.decayBudget = decayBudget
        }
    }
    public var layers: [Layer]
    /// How global channels are filtered (LongMambaMethods.swift); dt_thre unless chosen.
    public var method: LongMambaMethod

    public init(layers: [Layer], method: LongMambaMethod = .dtThre) { self.layers = layers; self.method = method }

    /// Classifies channels by θ: global where cumulative decay a_c > θ.
    public init(deltaThresholds: [[Float]], cumulativeDecays: [[Float]], theta: Double) throws {
        guard theta > 0 else { throw LongMambaFilterError.invalidTheta(theta) }
        guard deltaThresholds.count == cumulativeDecays.count else {
            throw LongMambaFilterError.layerCountMismatch(thresholdLayers: deltaThresholds.count, decayLayers: cumulativeDecays.count)
        }
        method = .dtThre
        layers = try zip(deltaThresholds, cumulativeDecays).enumerated().map { i, pair in
            guard pair.0.count == pair.1.count else {
                throw LongMambaFilterError.channelCountMismatch(layer: i, thresholds: pair.0.count, decays: pair.1.count)
            }
            return Layer(deltaThreshold: pair.0, globalChannel: GlobalChannels.mask(cumulativeDecay: pair.1, theta: theta))
        }
    }

    /// Checks the filter against a model's layer and channel counts.
    public func validate(for config: ModelConfig) throws {
        guard layers.count == config.layerCount else {
            throw LongMambaFilterError.modelLayerMismatch(tableLayers: layers.count, modelLayers: config.layerCount)
        }
        for (i, l) in layers.enumerated() where l.deltaThreshold.count != config.channelCount {
            throw LongMambaFilterError.modelChannelMismatch(layer: i, tableChannels: l.deltaThreshold.count, modelChannels: config.channelCount)
        }
    }

    /// Applies the rule to one layer's Δ: [L, C]; returns how many (token, global channel)
    /// pairs kept their Δ. For a whole-prompt method `delta` must be the whole prompt.
    @discardableResult
    public func apply(layer: Int, delta: inout [Float], length: Int, channels: Int) -> Int {
        let rule = layers[layer]
        if method.needsWholePrompt { return applyWholePrompt(rule, delta: &delta, length: length, channels: channels) }
        var kept = 0
        for t in 0..<length {
            for c in 0..<channels where rule.globalChannel[c] {
                if delta[t * channels + c] > rule.deltaThreshold[c] { kept += 1 } else { delta[t * channels + c] = 0 }
            }
        }
        return kept
    }

    /// The whole-prompt methods, channel by channel: gather the channel's Δ over the prompt [S],
    /// apply the rule, scatter it back.
    func applyWholePrompt(_ rule: Layer, delta: inout [Float], length: Int, channels: Int) -> Int {
        var kept = 0
        var values = [Float](repeating: 0, count: length)   // one channel's Δ: [S]
        for c in 0..<channels where rule.globalChannel[c] {
            for t in 0..<length { values[t] = delta[t * channels + c] }
            kept += WholePromptRule.apply(method, to: &values, threshold: rule.deltaThreshold[c],
                                          keptFraction: rule.keptFraction.isEmpty ? 0 : rule.keptFraction[c],
                                          decayBudget: rule.decayBudget.isEmpty ? 0 : rule.decayBudget[c])
            for t in 0..<length { delta[t * channels + c] = values[t] }
        }
        return kept
    }

    /// Number of global channels in each layer.
    public var globalChannelCounts: [Int] { layers.map { $0.globalChannel.filter { $0 }.count } }
}

/// Counts what a filter kept during a forward pass (the pass calls the filter layer by layer).
public final class LongMambaFilterRun: @unchecked Sendable {
    public let filter: LongMambaFilter
    /// (token, global channel) pairs seen and kept, per layer.
    public private(set) var considered: [Int]
    public private(set) var kept: [Int]

    public init(filter: LongMambaFilter) {
        self.filter = filter
        considered = [Int](repeating: 0, count: filter.layers.count)
        kept = considered
    }

    /// Share of Δ kept in global channels over all layers (1 when there are none).
    public var keptShare: Double {
        let total = considered.reduce(0, +)
        return total == 0 ? 1 : Double(kept.reduce(0, +)) / Double(total)
    }

    /// A whole-prompt method saw the prompt in more than one piece (its results are not the
    /// method's): the caller refuses them (`EvaluationError.wholePromptInPieces`).
    public private(set) var piecewise = false
    private var layerZeroCalls = 0

    /// The `DeltaFilter` to hand to `MambaModel.forward`.
    public var deltaFilter: DeltaFilter {
        { [self] layer, delta, length, channels in
            if layer == 0 {
                layerZeroCalls += 1
                if layerZeroCalls > 1 && filter.method.needsWholePrompt { piecewise = true }
            }
            considered[layer] += length * filter.layers[layer].globalChannel.filter { $0 }.count
            kept[layer] += filter.apply(layer: layer, delta: &delta, length: length, channels: channels)
        }
    }
}
