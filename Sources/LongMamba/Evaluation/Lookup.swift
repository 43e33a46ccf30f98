// Use at inference (docs/method.md §4, docs/contracts.md "Lookup"): round the sequence length to the nearest tabulated length,
// read each layer's τ(S), and mark channels with a_c > θ as global (only they are filtered;
// the rule itself is `GlobalChannels`).
import Foundation

/// The rounding rule from a sequence length to a tabulated length.
public enum LengthRounding {
    /// Nearest tabulated length; exactly halfway between two entries takes the SHORTER one, as the
    /// authors' loader does (`min(lengths, key=lambda x: abs(S - x))` keeps the first of equals):
    /// e.g. 2500 → 2000 with a 1000-token grid; 2501 → 3000. Below the first entry: the first;
    /// above the last: the last (`beyondLastLength` is then true).
    public static let tieRule = "nearest tabulated length; exactly halfway takes the shorter length; beyond the grid clamps to its ends"

    public static func nearestIndex(of length: Int, in lengths: [Int]) -> Int? {
        guard !lengths.isEmpty else { return nil }
        // lengths are ascending: find the first entry ≥ length.
        var lo = 0, hi = lengths.count
        while lo < hi { let m = (lo + hi) / 2; if lengths[m] < length { lo = m + 1 } else { hi = m } }
        if lo == 0 { return 0 }
        if lo == lengths.count { return lengths.count - 1 }
        let below = length - lengths[lo - 1], above = lengths[lo] - length
        return above < below ? lo : lo - 1  // tie → shorter length
    }
}

/// The answer to one lookup.
public struct LookupResult: Sendable, Codable, Equatable {
    public struct Layer: Sendable, Codable, Equatable {
        public let layer: Int
        public let deltaThreshold: [Float]
        public let keptFraction: [Float]
        public let cumulativeDecay: [Float]
        /// D_c: the decay budget the bound and norm modes use.
        public let decayBudget: [Float]
        /// a_c > θ: the channel is global and filtered with τ.
        public let globalChannel: [Bool]
        public let globalChannelCount: Int

        enum CodingKeys: String, CodingKey {
            case layer, deltaThreshold = "delta_threshold", keptFraction = "kept_fraction", cumulativeDecay = "cumulative_decay"
            case decayBudget = "decay_budget"
            case globalChannel = "global_channel", globalChannelCount = "global_channel_count"
        }
    }
    public let table: Int64
    public let requestedLength: Int
    public let length: Int
    public let beyondLastLength: Bool
    public let rounding: String
    public let theta: Double
    public let layers: [Layer]
    /// The table's method and what a backend does with each mode of it.
    public var method = CalibrationStore.longMambaMethod
    public var modes = LookupResult.modeRules

    /// The authors' modes of one per-channel table, in words (docs/method.md §4).
    public static let modeRules = [
        "dt_thre": "in a global channel keep Δ_t if Δ_t > delta_threshold, else Δ_t := 0 (per token, prefill only)",
        "alpha": "in a global channel keep the ⌈min(kept_fraction·S, S)⌉ largest Δ of the prompt, others := 0 (whole prompt at once)",
        "bound": "in a global channel keep the largest Δ while their running sum ≤ decay_budget, others := 0 (whole prompt at once)",
        "norm": "in a global channel Δ_t := Δ_t · decay_budget / Σ_t Δ_t (whole prompt at once)",
        "channelwise_topk": "in a global channel keep Δ_t > quantile(Δ, 1 − min(S, 2000)/S), others := 0 (whole prompt at once)",
    ]

    enum CodingKeys: String, CodingKey {
        case table, requestedLength = "requested_length", length, beyondLastLength = "beyond_last_length", rounding, theta, layers, method, modes
    }

    public func json() throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return String(decoding: try e.encode(self), as: UTF8.self)
    }
}

/// Why a lookup was refused.
public enum LookupError: Error, CustomStringConvertible, Sendable, Equatable {
    case nonPositiveLength(Int)
    /// θ ≤ 0, NaN or infinite: every channel would be global, or none.
    case nonPositiveTheta(Double)
    case noSuchLayer(path: String, table: Int64, layer: Int, layerCount: Int)
    case noTabulatedLengths(path: String, table: Int64)

    public var description: String {
        switch self {
        case let .nonPositiveLength(n): return "length \(n) must be a positive number of tokens"
        case let .nonPositiveTheta(t): return "θ must be a finite number > 0, got \(t)"
        case let .noSuchLayer(path, table, layer, n): return "\(path): table \(table) has layers 0 to \(n - 1); layer \(layer) does not exist"
        case let .noTabulatedLengths(path, table): return "\(path): table \(table) has no tabulated lengths"
        }
    }
}

/// Reads a stored table at one sequence length: the row nearest S and the global channels for θ.
public struct TableLookup {
    public let store: CalibrationStore
    public init(store: CalibrationStore) { self.store = store }

    /// Thresholds at the tabulated length nearest to `length` and the global-channel mask a_c > θ.
    public func lookup(table id: Int64, length: Int, layer: Int? = nil, theta: Double = GlobalChannels.defaultTheta) throws -> LookupResult {
        guard length > 0 else { throw LookupError.nonPositiveLength(length) }
        guard theta.isFinite, theta > 0 else { throw LookupError.nonPositiveTheta(theta) }
        let info = try store.table(id)
        if let layer, layer < 0 || layer >= info.layerCount {
            throw LookupError.noSuchLayer(path: store.path, table: id, layer: layer, layerCount: info.layerCount)
        }
        guard let index = LengthRounding.nearestIndex(of: length, in: info.lengths) else {
            throw LookupError.noTabulatedLengths(path: store.path, table: id)
        }
        let layers = try (layer.map { [$0] } ?? Array(0..<info.layerCount)).map { i -> LookupResult.Layer in
            let l = try store.tableLayer(table: id, layer: i)
            let row = (index * l.channels)..<((index + 1) * l.channels)
            let mask = GlobalChannels.mask(cumulativeDecay: l.cumulativeDecay, theta: theta)
            return LookupResult.Layer(layer: i, deltaThreshold: Array(l.deltaThreshold[row]), keptFraction: Array(l.keptFraction[row]),
                                      cumulativeDecay: l.cumulativeDecay, decayBudget: l.decayBudget, globalChannel: mask, globalChannelCount: mask.filter { $0 }.count)
        }
        return LookupResult(table: id, requestedLength: length, length: info.lengths[index],
                            beyondLastLength: length > (info.lengths.last ?? 0), rounding: LengthRounding.tieRule, theta: theta, layers: layers)
    }
}
