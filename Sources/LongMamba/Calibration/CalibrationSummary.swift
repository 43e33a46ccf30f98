// The short summary `calibrate` prints: global channels per layer at θ = 0.05 and thresholds at
// 4k/16k/64k tokens for a few channels.
import Foundation

public enum CalibrationSummary {
    public static func text(store: CalibrationStore, tables: [Int64], theta: Double = GlobalChannels.defaultTheta,
                            lengths: [Int] = [4_000, 16_000, 64_000], channels: Int = 4) throws -> String {
        var out = ""
        for id in tables {
            let info = try store.table(id)
            let p = info.parameters
            out += "table \(id): p = \(p.clampFraction), aggregate \(p.aggregation.rawValue), L = \(p.trainingLength), "
            out += "\(info.lengths.count) lengths \(info.lengths.first ?? 0)…\(info.lengths.last ?? 0), hash \(info.contentHash.prefix(12))\n"
            let first = try TableLookup(store: store).lookup(table: id, length: lengths[0], theta: theta)
            out += "  global channels at θ = \(theta) per layer: " + first.layers.map { "\($0.globalChannelCount)" }.joined(separator: " ")
            out += " (of \(first.layers.first?.cumulativeDecay.count ?? 0))\n"
            // A few channels: the globals with the largest cumulative decay in the first layer that has any.
            guard let layer = first.layers.first(where: { $0.globalChannelCount > 0 }) ?? first.layers.first else { continue }
            let picked = layer.cumulativeDecay.indices.sorted { layer.cumulativeDecay[$0] > layer.cumulativeDecay[$1] }.prefix(channels)
            out += "  layer \(layer.layer) τ(S) for channels with the largest cumulative decay a:\n"
            var shown = lengths.filter { $0 <= (info.lengths.last ?? 0) }
            if shown.isEmpty, let last = info.lengths.last { shown = [last / 4, last / 2, last] }
            out += "    channel         a" + shown.map { label in
                let name = label % 1000 == 0 ? "τ(\(label / 1000)k)" : "τ(\(label))"
                return String(repeating: " ", count: max(1, 11 - name.count)) + name
            }.joined() + "\n"
            let rows = try shown.map { try TableLookup(store: store).lookup(table: id, length: $0, layer: layer.layer, theta: theta).layers[0] }
            for c in picked {
                out += String(format: "    %7d  %8.4f", c, layer.cumulativeDecay[c]) + rows.map { String(format: " %10.5f", $0.deltaThreshold[c]) }.joined() + "\n"
            }
        }
        return out
    }
}
