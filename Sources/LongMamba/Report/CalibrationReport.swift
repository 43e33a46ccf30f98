// `longmamba report`: one self-contained HTML page (inline SVG, no scripts) showing what a
// calibration found: channel classification by cumulative decay, Δ distributions of global and
// local channels, threshold and kept-fraction curves against sequence length, and the metadata.
import Foundation

public enum CalibrationReport {
    /// Optional extra section: perplexity against length (from `longmamba eval`).
    public struct PerplexityCurve: Sendable {
        public var lengths: [Int]
        public var vanilla: [Double]
        public var longMamba: [Double?]
        /// How global channels were filtered (nil: dt_thre).
        public var method: String?
        public init(lengths: [Int], vanilla: [Double], longMamba: [Double?], method: String? = nil) {
            self.lengths = lengths; self.vanilla = vanilla; self.longMamba = longMamba; self.method = method
        }
    }

    /// Several methods' curves on one chart: vanilla once (from the first), one line per method.
    public static func perplexityChart(methods curves: [PerplexityCurve], theta: Double? = nil) -> SVGChart {
        guard curves.count > 1 else { return perplexityChart(curves[0], theta: theta) }
        var chart = perplexityChart(PerplexityCurve(lengths: curves[0].lengths, vanilla: curves[0].vanilla, longMamba: []), theta: theta)
        chart.title = "perplexity: vanilla vs LongMamba's methods"
        for (i, c) in curves.enumerated() {
            let points = zip(c.lengths, c.longMamba).compactMap { l, v in v.map { (x: Double(l), y: $0) } }
            let scale = c.method.flatMap(ScaleMethod.init(rawValue:)) != nil   // per-layer scales: no θ
            chart.series.append(SVGChart.Series(name: "\(c.method ?? "dt_thre")" + (scale ? "" : theta.map { " θ=\($0)" } ?? ""), points: points,
                                                color: SVGChart.palette[(i + 1) % SVGChart.palette.count], drawPoints: true))
        }
        return chart
    }

    /// Perplexity against length, vanilla and LongMamba, both axes logarithmic (the report's
    /// section and `eval --svg`).
    public static func perplexityChart(_ curve: PerplexityCurve, theta: Double? = nil) -> SVGChart {
        var chart = SVGChart(title: "perplexity: vanilla vs LongMamba", xLabel: "sequence length (tokens)", yLabel: "perplexity (log)")
        chart.xScale = .log10; chart.yScale = .log10
        chart.series = [SVGChart.Series(name: "vanilla", points: zip(curve.lengths, curve.vanilla).map { (x: Double($0), y: $1) }, color: "#1f77b4", drawPoints: true)]
        let longMamba = zip(curve.lengths, curve.longMamba).compactMap { l, v in v.map { (x: Double(l), y: $0) } }
        if !longMamba.isEmpty {
            chart.series.append(SVGChart.Series(name: theta.map { "LongMamba θ=\($0)" } ?? "LongMamba", points: longMamba, color: "#d62728", drawPoints: true))
        }
        return chart
    }

    /// Perplexity against position inside the window (`eval --by-position`): per length a
    /// vanilla line (solid) and a LongMamba line (dashed colours alternate), positions on x.
    public static func positionChart(_ results: PerplexityResults) -> SVGChart {
        var chart = SVGChart(title: "perplexity by position", xLabel: "position in the window (tokens)", yLabel: "perplexity (log)")
        chart.yScale = .log10
        for (i, p) in results.points.enumerated() {
            guard let buckets = p.byPosition else { continue }
            let color = SVGChart.palette[(2 * i) % SVGChart.palette.count]
            chart.series.append(SVGChart.Series(name: "vanilla \(p.length)", points: buckets.map { (x: Double($0.start + $0.end) / 2, y: $0.vanillaPerplexity) }, color: color, drawPoints: true))
            let lm = buckets.compactMap { b in b.longMambaPerplexity.map { (x: Double(b.start + b.end) / 2, y: $0) } }
            if !lm.isEmpty {
                chart.series.append(SVGChart.Series(name: "LongMamba \(p.length)", points: lm, color: SVGChart.palette[(2 * i + 1) % SVGChart.palette.count], drawPoints: true))
            }
        }
        return chart
    }

    /// `thetaNote`: where θ came from, printed beside it (e.g. "chosen by tune"). Evaluation
    /// results drawn here must have been checked with `check(_:path:table:theta:)`.
    public static func html(store: CalibrationStore, table id: Int64, theta: Double = GlobalChannels.defaultTheta, thetaNote: String? = nil,
                            perplexity: PerplexityCurve? = nil, passkey: PasskeyResults? = nil) throws -> String {
        try html(store: store, table: id, theta: theta, thetaNote: thetaNote, perplexities: perplexity.map { [$0] } ?? [],
                 passkeys: passkey.map { [$0] } ?? [])
    }

    /// The report with evaluations of several methods (one file each) side by side.
    public static func html(store: CalibrationStore, table id: Int64, theta: Double = GlobalChannels.defaultTheta, thetaNote: String? = nil,
                            perplexities: [PerplexityCurve], passkeys: [PasskeyResults], positions: [PerplexityResults] = []) throws -> String {
        guard theta > 0 else { throw ReportError.nonPositiveTheta(theta) }
        let info = try store.table(id)
        // "table 3, θ = 0.01, alpha", or a scale table's "delta_scale, db#5".
        func sectionName(_ method: String?, _ table: String?) -> String {
            if let method, ScaleMethod(rawValue: method) != nil { return "\(esc(method)): per-layer scales, \(esc(table ?? ""))" }
            return "table \(id), θ = \(theta), \(esc(method ?? "dt_thre"))"
        }
        let metadata = try store.tableMetadata(id)
        let layers = try (0..<info.layerCount).map { try store.tableLayer(table: id, layer: $0) }
        let p = info.parameters
        var body = "<h1>LongMamba calibration — table \(id)</h1>\n"
        body += "<p class=\"sub\">\(esc(info.architecture)) · model \(esc(String(info.modelFingerprint.prefix(16)))) · p = \(p.clampFraction) · aggregate \(p.aggregation.rawValue) · L = \(p.trainingLength) · θ = \(theta)\(thetaNote.map { " (\(esc($0)))" } ?? "") · \(info.lengths.count) lengths up to \(info.lengths.last ?? 0)</p>\n"

        // Channel classification.
        // The one global-channel rule (a_c > θ in float32), as lookup and the runner apply it.
        let globalMasks = layers.map { GlobalChannels.mask(cumulativeDecay: $0.cumulativeDecay, theta: theta) }
        let globalCounts = globalMasks.map { $0.lazy.filter { $0 }.count }
        body += "<h2>Channels by cumulative decay</h2>\n<p>Cumulative decay a<sub>c</sub> = exp(A·D<sub>c</sub>) at the training length, one point per channel (log scale). Channels above θ = \(theta) (dashed) are <b>global</b> and get filtered at long lengths; the others are local and untouched. Global channels per layer: \(globalCounts.map(String.init).joined(separator: " ")) (of \(layers.first?.channels ?? 0)).</p>\n<div class=\"grid\">\n"
        for l in layers {
            var chart = SVGChart(title: "layer \(l.layer): \(globalCounts[l.layer]) global", xLabel: "channel", yLabel: "a (log)")
            chart.width = 300; chart.height = 190; chart.yScale = .log10; chart.showLegend = false
            let floorValue = 1e-30
            let global = l.cumulativeDecay.enumerated().filter { globalMasks[l.layer][$0.offset] }.map { (x: Double($0.offset), y: max(Double($0.element), floorValue)) }
            let local = l.cumulativeDecay.enumerated().filter { !globalMasks[l.layer][$0.offset] }.map { (x: Double($0.offset), y: max(Double($0.element), floorValue)) }
            chart.series = [SVGChart.Series(name: "local", points: local, color: "#999999", drawLine: false, drawPoints: true),
                            SVGChart.Series(name: "global", points: global, color: "#d62728", drawLine: false, drawPoints: true)]
            chart.referenceLines = [(y: theta, label: "θ", color: "#d62728")]
            body += chart.svg() + "\n"
        }
        body += "</div>\n"

        // A layer with global channels, and a few global and local channels of it.
        let focusLayer = layers.max { globalCounts[$0.layer] < globalCounts[$1.layer] } ?? layers[0]
        let order = focusLayer.cumulativeDecay.indices.sorted { focusLayer.cumulativeDecay[$0] > focusLayer.cumulativeDecay[$1] }
        let globals = Array(order.filter { globalMasks[focusLayer.layer][$0] }.prefix(3))
        let locals = Array(order.filter { !globalMasks[focusLayer.layer][$0] }.prefix(3))
        let picked = globals.map { ($0, "global") } + locals.map { ($0, "local") }
        func name(_ c: Int, _ kind: String) -> String { String(format: "ch %d (%@, a=%.3g)", c, kind, focusLayer.cumulativeDecay[c]) }

        body += "<h2>Δ distributions (layer \(focusLayer.layer))</h2>\n<p>Recorded Δ of sample 0 sorted in descending order, for the three global channels with the largest cumulative decay and the three local channels just below θ. The clamp caps each curve at its k-th largest value, k = max(1, ⌊L·p⌋) = \(max(1, Int(Double(p.trainingLength) * p.clampFraction))).</p>\n"
        let runID = try store.tableRunID(id)
        if let sample = try store.layerSamples(run: runID, layer: focusLayer.layer).first {
            var chart = SVGChart(title: "sorted Δ, layer \(focusLayer.layer), sample 0", xLabel: "rank", yLabel: "Δ (log)")
            chart.yScale = .log10
            chart.series = picked.enumerated().map { i, pc in
                let row = sample.sortedDelta[(pc.0 * sample.length)..<((pc.0 + 1) * sample.length)]
                return SVGChart.Series(name: name(pc.0, pc.1), points: row.enumerated().map { (x: Double($0.offset + 1), y: Double($0.element)) },
                                       color: SVGChart.palette[i % SVGChart.palette.count])
            }
            body += chart.svg() + "\n"
        }

        body += "<h2>Thresholds and kept fractions against sequence length (layer \(focusLayer.layer))</h2>\n<p>τ<sub>c</sub>(S): a global channel keeps token t only if Δ<sub>c,t</sub> &gt; τ<sub>c</sub>(S); α<sub>c</sub>(S) is the share of the stretched curve kept. Up to the training length τ = 0 and α = 1 (no filtering).</p>\n<div class=\"grid\">\n"
        let T = focusLayer.lengths.count, C = focusLayer.channels
        for (title, values, label) in [("threshold τ(S)", focusLayer.deltaThreshold, "τ"), ("kept fraction α(S)", focusLayer.keptFraction, "α")] {
            var chart = SVGChart(title: title, xLabel: "sequence length S (tokens)", yLabel: label)
            chart.xScale = .log10
            chart.series = picked.enumerated().map { i, pc in
                SVGChart.Series(name: name(pc.0, pc.1), points: (0..<T).map { (x: Double(focusLayer.lengths[$0]), y: Double(values[$0 * C + pc.0])) },
                                color: SVGChart.palette[i % SVGChart.palette.count])
            }
            body += chart.svg() + "\n"
        }
        body += "</div>\n"

        if !perplexities.isEmpty {
            body += "<h2>Perplexity against length (table \(id), θ = \(theta))</h2>\n"
            body += perplexityChart(methods: perplexities, theta: theta).svg() + "\n"
        }
        for results in positions where results.points.contains(where: { $0.byPosition != nil }) {
            body += "<h2>Perplexity by position (\(sectionName(results.method, results.table)))</h2>\n" + positionChart(results).svg() + "\n"
        }
        for passkey in passkeys {
            body += "<h2>Passkey retrieval (\(sectionName(passkey.method, passkey.table)))</h2>\n" + PasskeyHeatmap.svg(passkey) + "\n"
        }
        let grids = try TuneHeatmap.svgs(store: store, run: info.runID)
        if !grids.isEmpty {
            body += "<h2>Tuning θ and p (stored evaluations)</h2>\n" + grids.joined(separator: "\n") + "\n"
        }

        body += "<h2>Table metadata</h2>\n<table>\n"
        for key in metadata.keys.sorted() {
            let value = metadata[key] ?? ""
            if value.count > 160 {
                body += "<tr><th>\(esc(key))</th><td><details><summary>\(esc(String(value.prefix(120))))…</summary><pre>\(esc(value))</pre></details></td></tr>\n"
            } else {
                body += "<tr><th>\(esc(key))</th><td>\(esc(value))</td></tr>\n"
            }
        }
        body += "</table>\n"
        return """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>LongMamba table \(id)</title>
        <style>
        body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1400px; }
        h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
        .sub { color: #555; } .grid { display: flex; flex-wrap: wrap; gap: 8px; }
        table { border-collapse: collapse; font-size: 12px; } th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: left; vertical-align: top; }
        th { background: #f5f5f5; } pre { white-space: pre-wrap; max-width: 1000px; }
        </style></head><body>
        \(body)
        <p class="sub">Generated by \(ToolInfo.name) \(ToolInfo.version).</p>
        </body></html>
        """
    }

    static func esc(_ s: String) -> String { SVGChart.escape(s) }
}

extension CalibrationStore {
    /// The calibration run a table was solved from.
    public func tableRunID(_ id: Int64) throws -> Int64 { try table(id).runID }
}
