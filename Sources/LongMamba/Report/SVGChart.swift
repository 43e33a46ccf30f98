// A small SVG chart builder for the self-contained HTML reports: lines and points, linear or
// log10 axes, a legend, horizontal reference lines. No JavaScript, no external files.
import Foundation

public struct SVGChart {
    public enum Scale { case linear, log10 }

    public struct Series {
        public var name: String
        public var points: [(x: Double, y: Double)]
        public var color: String
        public var drawLine = true
        public var drawPoints = false
        public init(name: String, points: [(x: Double, y: Double)], color: String, drawLine: Bool = true, drawPoints: Bool = false) {
            self.name = name; self.points = points; self.color = color; self.drawLine = drawLine; self.drawPoints = drawPoints
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var xScale: Scale = .linear
    public var yScale: Scale = .linear
    public var width = 520.0
    public var height = 300.0
    public var series: [Series] = []
    /// Horizontal reference lines (y value, label, colour).
    public var referenceLines: [(y: Double, label: String, color: String)] = []
    public var showLegend = true

    public init(title: String, xLabel: String, yLabel: String) {
        self.title = title; self.xLabel = xLabel; self.yLabel = yLabel
    }

    /// Colours that stay apart for up to eight series.
    public static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]

    public func svg() -> String {
        let left = 62.0, right = 14.0, top = 30.0, bottom = 44.0
        let plotW = width - left - right, plotH = height - top - bottom
        func transform(_ v: Double, _ scale: Scale) -> Double? {
            switch scale {
            case .linear: return v.isFinite ? v : nil
            case .log10: return v > 0 && v.isFinite ? Foundation.log10(v) : nil
            }
        }
        var xs: [Double] = [], ys: [Double] = []
        for s in series { for p in s.points { if let x = transform(p.x, xScale), let y = transform(p.y, yScale) { xs.append(x); ys.append(y) } } }
        for r in referenceLines { if let y = transform(r.y, yScale) { ys.append(y) } }
        var x0 = xs.min() ?? 0, x1 = xs.max() ?? 1, y0 = ys.min() ?? 0, y1 = ys.max() ?? 1
        if x1 - x0 < 1e-12 { x0 -= 0.5; x1 += 0.5 }
        if y1 - y0 < 1e-12 { y0 -= 0.5; y1 += 0.5 }
        let pad = (y1 - y0) * 0.05
        y0 -= pad; y1 += pad
        func px(_ x: Double) -> Double { left + (x - x0) / (x1 - x0) * plotW }
        func py(_ y: Double) -> Double { top + (1 - (y - y0) / (y1 - y0)) * plotH }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }

        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" font-family=\"sans-serif\" font-size=\"11\">\n"
        out += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        out += "<text x=\"\(f(width / 2))\" y=\"18\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">\(Self.escape(title))</text>\n"
        out += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(plotW))\" height=\"\(f(plotH))\" fill=\"none\" stroke=\"#999\"/>\n"
        for (value, isX) in ticks(x0, x1, xScale).map({ ($0, true) }) + ticks(y0, y1, yScale).map({ ($0, false) }) {
            let label = tickLabel(value, isX ? xScale : yScale)
            if isX {
                out += "<line x1=\"\(f(px(value)))\" y1=\"\(f(top))\" x2=\"\(f(px(value)))\" y2=\"\(f(top + plotH))\" stroke=\"#eee\"/>"
                out += "<text x=\"\(f(px(value)))\" y=\"\(f(top + plotH + 14))\" text-anchor=\"middle\">\(label)</text>\n"
            } else {
                out += "<line x1=\"\(f(left))\" y1=\"\(f(py(value)))\" x2=\"\(f(left + plotW))\" y2=\"\(f(py(value)))\" stroke=\"#eee\"/>"
                out += "<text x=\"\(f(left - 4))\" y=\"\(f(py(value) + 4))\" text-anchor=\"end\">\(label)</text>\n"
            }
        }
        out += "<text x=\"\(f(left + plotW / 2))\" y=\"\(f(height - 8))\" text-anchor=\"middle\">\(Self.escape(xLabel))</text>\n"
        out += "<text transform=\"translate(14,\(f(top + plotH / 2))) rotate(-90)\" text-anchor=\"middle\">\(Self.escape(yLabel))</text>\n"
        for r in referenceLines {
            guard let y = transform(r.y, yScale) else { continue }
            out += "<line x1=\"\(f(left))\" y1=\"\(f(py(y)))\" x2=\"\(f(left + plotW))\" y2=\"\(f(py(y)))\" stroke=\"\(r.color)\" stroke-dasharray=\"5,3\"/>"
            out += "<text x=\"\(f(left + plotW - 4))\" y=\"\(f(py(y) - 4))\" text-anchor=\"end\" fill=\"\(r.color)\">\(Self.escape(r.label))</text>\n"
        }
        for s in series {
            let pts = s.points.compactMap { p -> (Double, Double)? in
                guard let x = transform(p.x, xScale), let y = transform(p.y, yScale) else { return nil }
                return (px(x), py(y))
            }
            if s.drawLine && pts.count > 1 {
                out += "<polyline fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"1.6\" points=\"" + pts.map { "\(f($0.0)),\(f($0.1))" }.joined(separator: " ") + "\"/>\n"
            }
            if s.drawPoints {
                for p in pts { out += "<circle cx=\"\(f(p.0))\" cy=\"\(f(p.1))\" r=\"2.2\" fill=\"\(s.color)\"/>" }
                out += "\n"
            }
        }
        if showLegend && !series.isEmpty {
            let legendWidth = 14 + 6.2 * Double(series.map(\.name.count).max() ?? 0)
            out += "<rect x=\"\(f(left + 4))\" y=\"\(f(top + 2))\" width=\"\(f(legendWidth))\" height=\"\(f(Double(series.count) * 14 + 4))\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#ccc\"/>\n"
            for (i, s) in series.enumerated() {
                let y = top + 12 + Double(i) * 14
                out += "<rect x=\"\(f(left + 8))\" y=\"\(f(y - 8))\" width=\"10\" height=\"10\" fill=\"\(s.color)\"/>"
                out += "<text x=\"\(f(left + 22))\" y=\"\(f(y + 1))\">\(Self.escape(s.name))</text>\n"
            }
        }
        out += "</svg>"
        return out
    }

    /// About five round tick values in transformed space.
    func ticks(_ a: Double, _ b: Double, _ scale: Scale) -> [Double] {
        if scale == .log10 {
            let lo = Int(Foundation.floor(a)), hi = Int(Foundation.ceil(b))
            if hi - lo <= 3 {
                // Few decades: 1, 2, 5 × 10ⁿ; within less than a factor of ~2.5, round values of the data's own range.
                let decades = (lo...hi).flatMap { e in [1.0, 2, 5].map { Foundation.log10($0) + Double(e) } }.filter { $0 >= a && $0 <= b }
                if decades.count >= 2 { return decades }
                return ticks(Foundation.pow(10, a), Foundation.pow(10, b), .linear).filter { $0 > 0 }.map { Foundation.log10($0) }
            }
            let step = max(1, (hi - lo) / 6)
            return stride(from: lo, through: hi, by: step).map(Double.init).filter { $0 >= a && $0 <= b }
        }
        let raw = (b - a) / 5
        let magnitude = Foundation.pow(10, Foundation.floor(Foundation.log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? raw
        var t = Foundation.ceil(a / step) * step
        var out: [Double] = []
        while t <= b + step * 1e-9 { out.append(t); t += step }
        return out
    }

    func tickLabel(_ v: Double, _ scale: Scale) -> String {
        switch scale {
        case .log10:
            let value = Foundation.pow(10, v)
            if abs(v - v.rounded()) > 1e-9 || (v >= -3 && v <= 6) {
                // Plain numbers for the 1-2-5 ticks and for 1…1e6 (lengths read better as 2k, 16k).
                if value >= 1000 { return String(format: "%.0fk", value / 1000) }
                if value >= 1 { return String(format: "%.0f", value) }
                return String(format: "%.2g", value)
            }
            return "1e\(Int(v.rounded()))"
        case .linear:
            let v = v == 0 ? 0 : v  // no "-0"
            if abs(v) >= 10_000 { return String(format: "%.0fk", v / 1000) }
            if v == v.rounded() { return String(format: "%.0f", v) }
            return String(format: "%.3g", v)
        }
    }

    public static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
