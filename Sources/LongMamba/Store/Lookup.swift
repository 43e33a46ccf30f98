// Use at inference (docs/method.md §4, docs/contracts.md "Lookup"): round the sequence length to the nearest tabulated length,
// read each layer's τ(S), and mark channels with a_c > θ as global (only they are filtered).
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
        /// a_c > θ: the channel is global and filtered with τ.
        public let globalChannel: [Bool]
        public let globalChannelCount: Int

        enum CodingKeys: String, CodingKey {
            case layer, deltaThreshold = "delta_threshold", keptFraction = "kept_fraction", cumulativeDecay = "cumulative_decay"
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

    enum CodingKeys: String, CodingKey {
        case table, requestedLength = "requested_length", length, beyondLastLength = "beyond_last_length", rounding, theta, layers
    }

    public func json() throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return String(decoding: try e.encode(self), as: UTF8.self)
    }
}

extension CalibrationStore {
    /// Default θ: the authors' channel threshold for mamba2-1.3b.
    public static let defaultTheta = 0.05

    /// Thresholds at the tabulated length nearest to `length` and the global-channel mask a_c > θ.
    public func lookup(table id: Int64, length: Int, layer: Int? = nil, theta: Double = CalibrationStore.defaultTheta) throws -> LookupResult {
        guard length > 0 else { throw StoreError.invalid("length \(length) must be a positive number of tokens") }
        guard theta.isFinite else { throw StoreError.invalid("θ = \(theta) must be a finite number") }
        let info = try table(id)
        if let layer, layer < 0 || layer >= info.layerCount {
            throw StoreError.invalid("\(path): table \(id) has layers 0..<\(info.layerCount); layer \(layer) does not exist")
        }
        guard let index = LengthRounding.nearestIndex(of: length, in: info.lengths) else {
            throw StoreError.invalid("\(path): table \(id) has no tabulated lengths")
        }
        let layers = try (layer.map { [$0] } ?? Array(0..<info.layerCount)).map { i -> LookupResult.Layer in
            let l = try tableLayer(table: id, layer: i)
            let C = l.channels
            let row = (index * C)..<((index + 1) * C)
            let mask = l.cumulativeDecay.map { Double($0) > theta }
            return LookupResult.Layer(layer: i, deltaThreshold: Array(l.deltaThreshold[row]), keptFraction: Array(l.keptFraction[row]),
                                      cumulativeDecay: l.cumulativeDecay, globalChannel: mask, globalChannelCount: mask.filter { $0 }.count)
        }
        return LookupResult(table: id, requestedLength: length, length: info.lengths[index],
                            beyondLastLength: length > (info.lengths.last ?? 0), rounding: LengthRounding.tieRule, theta: theta, layers: layers)
    }
}
