// Passkey accuracy as heatmaps: sequence length (columns) × needle depth (rows), one panel per
// method side by side, cells shaded from white (0 %) to green (100 %) with the value written in.
import Foundation

public enum PasskeyHeatmap {
    public static func svg(_ results: PasskeyResults) -> String {
        let lengths = Array(Set(results.points.map(\.length))).sorted()
        let depths = Array(Set(results.points.map(\.depth))).sorted()
        var panels: [(String, (PasskeyPoint) -> Double?)] = [("vanilla", { $0.vanillaAccuracy })]
        if results.table != nil { panels.append(("LongMamba θ=\(results.theta.map { "\($0)" } ?? "?")", { $0.longMambaAccuracy })) }
        let cell = 44.0, left = 52.0, top = 40.0, gap = 30.0, bottom = 36.0
        let panelW = Double(lengths.count) * cell
        let width = left + Double(panels.count) * panelW + Double(panels.count - 1) * gap + 12
        let height = top + Double(depths.count) * cell + bottom
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        func esc(_ s: String) -> String { s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;") }
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" font-family=\"sans-serif\" font-size=\"11\">\n"
        out += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        for (p, (name, value)) in panels.enumerated() {
            let x0 = left + Double(p) * (panelW + gap)
            out += "<text x=\"\(f(x0 + panelW / 2))\" y=\"16\" text-anchor=\"middle\" font-weight=\"bold\">passkey accuracy: \(esc(name))</text>\n"
            for (i, S) in lengths.enumerated() {
                out += "<text x=\"\(f(x0 + (Double(i) + 0.5) * cell))\" y=\"\(f(top + Double(depths.count) * cell + 14))\" text-anchor=\"middle\">\(S >= 1000 && S % 1000 == 0 ? "\(S / 1000)k" : "\(S)")</text>\n"
                for (j, d) in depths.enumerated() {
                    let point = results.points.first { $0.length == S && $0.depth == d }
                    let v = point.flatMap(value)
                    let shade = v.map { "rgb(\(Int(255 - 200 * $0)),\(Int(255 - 75 * $0)),\(Int(255 - 200 * $0)))" } ?? "#eeeeee"
                    let x = x0 + Double(i) * cell, y = top + Double(j) * cell
                    out += "<rect x=\"\(f(x))\" y=\"\(f(y))\" width=\"\(f(cell - 2))\" height=\"\(f(cell - 2))\" fill=\"\(shade)\" stroke=\"#999\" stroke-width=\"0.5\"/>\n"
                    out += "<text x=\"\(f(x + cell / 2 - 1))\" y=\"\(f(y + cell / 2 + 3))\" text-anchor=\"middle\">\(v.map { String(Int(($0 * 100).rounded())) + "%" } ?? "-")</text>\n"
                }
            }
            if p == 0 {
                for (j, d) in depths.enumerated() {
                    out += "<text x=\"\(f(left - 6))\" y=\"\(f(top + (Double(j) + 0.5) * cell + 3))\" text-anchor=\"end\">\(String(format: "%.2f", d))</text>\n"
                }
            }
        }
        out += "<text x=\"\(f(left + (width - left) / 2))\" y=\"\(f(height - 6))\" text-anchor=\"middle\">sequence length (tokens); rows: needle depth</text>\n"
        out += "</svg>"
        return out
    }
}
