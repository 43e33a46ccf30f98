// Passkey accuracy as heatmaps: sequence length (columns) × needle depth (rows), one panel per
// method side by side, cells shaded from white (0 %) to green (100 %) with the value written in.
import Foundation

/// A grid of values as shaded cells with the value written in (white → green as the value
/// gets better), one or more panels side by side.
public struct HeatmapSVG {
    public struct Panel {
        public var title: String
        /// values[row][column]; nil: not measured
        public var values: [[Double?]]
        public init(title: String, values: [[Double?]]) { self.title = title; self.values = values }
    }
    public var rowLabels: [String]
    public var columnLabels: [String]
    public var panels: [Panel]
    public var caption: String
    /// Maps a value to [0, 1] (1 = best, darkest).
    public var goodness: (Double) -> Double
    public var format: (Double) -> String

    public init(rowLabels: [String], columnLabels: [String], panels: [Panel], caption: String,
                goodness: @escaping (Double) -> Double, format: @escaping (Double) -> String) {
        self.rowLabels = rowLabels; self.columnLabels = columnLabels; self.panels = panels; self.caption = caption
        self.goodness = goodness; self.format = format
    }

    public func svg() -> String {
        let cell = 48.0, left = 96.0, top = 40.0, gap = 30.0, bottom = 36.0
        let panelW = Double(columnLabels.count) * cell
        // Text widths estimated at 6.6 px per character (11 px sans-serif, bold titles): the
        // picture grows to hold its titles and caption instead of cutting them.
        func textWidth(_ s: String) -> Double { Double(s.count) * 6.6 }
        // Each panel's title is centred over the panel, moved right when it would start left of the picture.
        let titleCentres = panels.indices.map { p in max(left + Double(p) * (panelW + gap) + panelW / 2, textWidth(panels[p].title) / 2 + 6) }
        let width = max(left + Double(panels.count) * panelW + Double(max(0, panels.count - 1)) * gap + 12,
                        zip(titleCentres, panels).map { $0 + textWidth($1.title) / 2 + 6 }.max() ?? 0,
                        textWidth(caption) + 24)
        let height = top + Double(rowLabels.count) * cell + bottom
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        func esc(_ s: String) -> String { s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;") }
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" font-family=\"sans-serif\" font-size=\"11\">\n"
        out += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        for (p, panel) in panels.enumerated() {
            let x0 = left + Double(p) * (panelW + gap)
            out += "<text x=\"\(f(titleCentres[p]))\" y=\"16\" text-anchor=\"middle\" font-weight=\"bold\">\(esc(panel.title))</text>\n"
            for (i, label) in columnLabels.enumerated() {
                out += "<text x=\"\(f(x0 + (Double(i) + 0.5) * cell))\" y=\"\(f(top + Double(rowLabels.count) * cell + 14))\" text-anchor=\"middle\">\(esc(label))</text>\n"
                for j in rowLabels.indices {
                    let v = j < panel.values.count && i < panel.values[j].count ? panel.values[j][i] : nil
                    let g = v.map { min(1, max(0, goodness($0))) }
                    let shade = g.map { "rgb(\(Int(255 - 200 * $0)),\(Int(255 - 75 * $0)),\(Int(255 - 200 * $0)))" } ?? "#eeeeee"
                    let x = x0 + Double(i) * cell, y = top + Double(j) * cell
                    out += "<rect x=\"\(f(x))\" y=\"\(f(y))\" width=\"\(f(cell - 2))\" height=\"\(f(cell - 2))\" fill=\"\(shade)\" stroke=\"#999\" stroke-width=\"0.5\"/>\n"
                    out += "<text x=\"\(f(x + cell / 2 - 1))\" y=\"\(f(y + cell / 2 + 3))\" text-anchor=\"middle\">\(v.map(format) ?? "-")</text>\n"
                }
            }
            if p == 0 {
                for (j, label) in rowLabels.enumerated() {
                    out += "<text x=\"\(f(left - 6))\" y=\"\(f(top + (Double(j) + 0.5) * cell + 3))\" text-anchor=\"end\">\(esc(label))</text>\n"
                }
            }
        }
        out += "<text x=\"\(f(max(left + (width - left) / 2, textWidth(caption) / 2 + 6)))\" y=\"\(f(height - 6))\" text-anchor=\"middle\">\(esc(caption))</text>\n"
        return out + "</svg>"
    }
}

public enum PasskeyHeatmap {
    public static func svg(_ results: PasskeyResults) -> String {
        let lengths = Array(Set(results.points.map(\.length))).sorted()
        let depths = Array(Set(results.points.map(\.depth))).sorted()
        func grid(_ value: (PasskeyPoint) -> Double?) -> [[Double?]] {
            depths.map { d in lengths.map { S in results.points.first { $0.length == S && $0.depth == d }.flatMap(value) } }
        }
        var panels = [HeatmapSVG.Panel(title: "passkey accuracy: vanilla", values: grid { $0.vanillaAccuracy })]
        if results.table != nil {
            panels.append(HeatmapSVG.Panel(title: "passkey accuracy: LongMamba θ=\(results.theta.map { "\($0)" } ?? "?")", values: grid { $0.longMambaAccuracy }))
        }
        return HeatmapSVG(rowLabels: depths.map { String(format: "depth %.2f", $0) },
                          columnLabels: lengths.map { $0 >= 1000 && $0 % 1000 == 0 ? "\($0 / 1000)k" : "\($0)" },
                          panels: panels, caption: "sequence length (tokens); rows: needle depth",
                          goodness: { $0 }, format: { String(Int(($0 * 100).rounded())) + "%" }).svg()
    }
}

/// The stored `tune` grid of one run: rows (p, aggregation), columns θ, the score per cell.
public enum TuneHeatmap {
    /// One SVG per stored evaluation (task, text, options) that has points for this run's tables.
    public static func svgs(store: CalibrationStore, run: Int64) throws -> [String] {
        let tables = try store.tables().filter { $0.runID == run }
        let byID = Dictionary(uniqueKeysWithValues: tables.map { ($0.id, $0) })
        let rows = try store.evaluations()
        var out: [String] = []
        for key in Array(Set(rows.map(\.evaluationKey))).sorted() {
            let points = rows.filter { $0.evaluationKey == key }
            let mine = points.filter { $0.tableID.map { byID[$0] != nil } ?? false }
            guard let first = mine.first else { continue }
            let higher = first.metric == "accuracy"
            let lengths = Array(Set(points.map(\.length))).sorted()
            func score(_ ps: [EvaluationRecord]) -> Double? {
                let values = lengths.compactMap { S in ps.first { $0.length == S }?.value }
                guard values.count == lengths.count, !values.isEmpty else { return nil }
                return TuneRow.score(values, higherIsBetter: higher)
            }
            let vanilla = score(points.filter { $0.tableID == nil })
            let thetas = Array(Set(mine.compactMap(\.theta))).sorted()
            let tableIDs = Array(Set(mine.compactMap(\.tableID))).sorted()
            let values = tableIDs.map { t in thetas.map { th in score(mine.filter { $0.tableID == t && $0.theta == th }) } }
            let all = values.flatMap { $0 }.compactMap { $0 } + (vanilla.map { [$0] } ?? [])
            let (lo, hi) = (all.min() ?? 0, all.max() ?? 1)
            // Where the points were measured; a bfloat16/float16 evaluation is a heatmap of its own (its own key).
            var measured: [String] = []
            for p in points where !measured.contains(p.measuredBy) { measured.append(p.measuredBy) }
            // The method, where not dt_thre: each method's points are an evaluation (a heatmap) of their own.
            let method = LongMambaMethod.allCases.first { m in mine.contains { $0.detailJSON.contains("\"method\":\"\(m.rawValue)\"") } }
            let map = HeatmapSVG(
                rowLabels: tableIDs.map { t in byID[t].map { "p \($0.parameters.clampFraction) \($0.parameters.aggregation.rawValue)" } ?? "table \(t)" },
                columnLabels: thetas.map { "θ \($0)" },
                panels: [HeatmapSVG.Panel(title: "tune\(method.map { " (\($0.rawValue))" } ?? ""): \(first.task) \(higher ? "mean accuracy" : "geo-mean perplexity") at \(lengths.map(String.init).joined(separator: ",")) (vanilla \(vanilla.map { higher ? String(format: "%.0f%%", 100 * $0) : String(format: "%.2f", $0) } ?? "-")); measured by \(measured.joined(separator: " + "))", values: values)],
                caption: "channel threshold θ; rows: clamp fraction p and aggregation",
                goodness: { v in hi > lo ? (higher ? (v - lo) / (hi - lo) : (hi - v) / (hi - lo)) : 1 },
                format: { higher ? String(format: "%.0f%%", 100 * $0) : String(format: "%.2f", $0) })
            out.append(map.svg())
        }
        return out
    }
}
