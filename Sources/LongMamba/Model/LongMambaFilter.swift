// LongMamba at inference (docs/method.md §4): for a sequence of length S, with the
// table row for the tabulated length nearest S, in each layer
//   global channel  ⇔  cumulative decay a_c > θ
//   Δ_c,t := Δ_c,t if Δ_c,t > τ_c(S), else 0        (global channels only; strict >)
// A zeroed Δ means the token neither updates nor decays that channel's state. Local channels are
// untouched. Filtering is a prefill-time operation.

/// Why a filter could not be built.
public enum LongMambaFilterError: Error, CustomStringConvertible, Sendable, Equatable {
    /// θ ≤ 0 (or NaN).
    case invalidTheta(Float)
    /// Threshold and cumulative-decay lists with different layer counts.
    case layerCountMismatch(thresholdLayers: Int, decayLayers: Int)
    /// A layer with different threshold and cumulative-decay channel counts.
    case channelCountMismatch(layer: Int, thresholds: Int, decays: Int)
    /// A table with another layer count than the model.
    case modelLayerMismatch(tableLayers: Int, modelLayers: Int)
    /// A table layer with another channel count than the model.
    case modelChannelMismatch(layer: Int, tableChannels: Int, modelChannels: Int)
    /// A table calibrated on another model (fingerprints differ) and no `force`.
    case otherModel(tableFingerprint: String, model: String, modelFingerprint: String)
    /// A length past the table's largest one, without --allow-beyond-table.
    case beyondTable(length: Int, largest: Int)

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
        case let .otherModel(tableFingerprint, model, modelFingerprint):
            return "the table was calibrated on model \(tableFingerprint.prefix(12)), not on \(model) (\(modelFingerprint.prefix(12))); pass --force to use it anyway"
        case let .beyondTable(length, largest):
            return "length \(length) is beyond the table's largest length \(largest); solve with a larger --max-length, or pass --allow-beyond-table to use the largest"
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
        public init(deltaThreshold: [Float], globalChannel: [Bool]) {
            self.deltaThreshold = deltaThreshold; self.globalChannel = globalChannel
        }
    }
    public var layers: [Layer]

    public init(layers: [Layer]) { self.layers = layers }

    /// Classifies channels by θ: global where cumulative decay a_c > θ.
    public init(deltaThresholds: [[Float]], cumulativeDecays: [[Float]], theta: Float) throws {
        guard theta > 0 else { throw LongMambaFilterError.invalidTheta(theta) }
        guard deltaThresholds.count == cumulativeDecays.count else {
            throw LongMambaFilterError.layerCountMismatch(thresholdLayers: deltaThresholds.count, decayLayers: cumulativeDecays.count)
        }
        layers = try zip(deltaThresholds, cumulativeDecays).enumerated().map { i, pair in
            guard pair.0.count == pair.1.count else {
                throw LongMambaFilterError.channelCountMismatch(layer: i, thresholds: pair.0.count, decays: pair.1.count)
            }
            return Layer(deltaThreshold: pair.0, globalChannel: pair.1.map { $0 > theta })
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
    /// pairs kept their Δ.
    @discardableResult
    public func apply(layer: Int, delta: inout [Float], length: Int, channels: Int) -> Int {
        let rule = layers[layer]
        var kept = 0
        for t in 0..<length {
            for c in 0..<channels where rule.globalChannel[c] {
                if delta[t * channels + c] > rule.deltaThreshold[c] { kept += 1 } else { delta[t * channels + c] = 0 }
            }
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

    /// The `DeltaFilter` to hand to `MambaModel.forward`.
    public var deltaFilter: DeltaFilter {
        { [self] layer, delta, length, channels in
            considered[layer] += length * filter.layers[layer].globalChannel.filter { $0 }.count
            kept[layer] += filter.apply(layer: layer, delta: &delta, length: length, channels: channels)
        }
    }
}

extension ThresholdTableSource {
    /// Refuses a table calibrated on another model (fingerprint mismatch) unless `force`.
    /// Done once per model, not per length: the fingerprint hashes every weight.
    public func checkModel(fingerprint: String, name: String = "this one", force: Bool) throws {
        if let tableFingerprint = modelFingerprint, tableFingerprint != fingerprint, !force {
            throw LongMambaFilterError.otherModel(tableFingerprint: tableFingerprint, model: name, modelFingerprint: fingerprint)
        }
    }
}

/// One LongMamba prefill of `length` tokens with a table: decides whether filtering applies
/// (sequences of at least `filterFrom` tokens), and builds the filter for the table row nearest
/// `length`, checked against the model's layers and channels. (The fingerprint check is
/// `ThresholdTableSource.checkModel`.)
public struct LongMambaPrefill {
    /// The default filter start: 1.5 × the table's training length (the authors filter from 3k
    /// tokens on a 2k model; their code uses `int(S / 1000) > 2` whatever L is).
    public static func defaultFilterStart(trainingLength: Int) -> Int { trainingLength * 3 / 2 }

    public let theta: Float
    public let filterFrom: Int
    /// The tabulated length whose row is applied; nil when the sequence is below the filter start.
    public let tabulatedLength: Int?
    /// Counts what the filter keeps; nil when no filtering applies.
    public let run: LongMambaFilterRun?

    /// - allowBeyondTable: past the table's largest length use its last row (otherwise refuse).
    public init(table: any ThresholdTableSource, model: MambaModel, length: Int, theta: Float,
                filterFrom: Int? = nil, allowBeyondTable: Bool = true) throws {
        guard theta > 0 else { throw LongMambaFilterError.invalidTheta(theta) }
        self.theta = theta
        self.filterFrom = filterFrom ?? Self.defaultFilterStart(trainingLength: table.trainingLength)
        if length >= self.filterFrom {
            if length > (table.lengths.last ?? 0) && !allowBeyondTable {
                throw LongMambaFilterError.beyondTable(length: length, largest: table.lengths.last ?? 0)
            }
            let f = try table.filter(length: length, theta: theta)
            try f.filter.validate(for: model.config)
            run = LongMambaFilterRun(filter: f.filter)
            tabulatedLength = f.tabulatedLength
        } else {
            run = nil
            tabulatedLength = nil
        }
    }

    /// What a recording made with this prefill says about it.
    public func metadata(tableName: String) -> [String: String] {
        var m = ["longmamba_table": tableName, "longmamba_theta": "\(theta)", "longmamba_filter_from": "\(filterFrom)"]
        if let tabulatedLength { m["longmamba_tabulated_length"] = "\(tabulatedLength)" }
        if let run { m["longmamba_global_channels"] = "\(run.filter.globalChannelCounts)" }
        return m
    }
}
