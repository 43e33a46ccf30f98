import ArgumentParser
import Foundation
import LongMamba

struct SweepCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Solve one table per (clamp fraction, aggregation) from stored recordings, then summarise.")

    @Option(help: "SQLite database.") var db: String
    @Option(name: .customLong("run"), help: "Calibration run id.") var runID: Int64
    @Option(help: "Clamp fractions p (repeat or comma-separate).") var clamp: [String] = []
    @Option(help: "Aggregations: max, mean (repeat or comma-separate).") var aggregate: [String] = ["max"]
    @Option(help: "Tabulate every this many tokens (default: the run's calibrated grid).") var interval: TokenCount?
    @Option(name: .customLong("max-length"), help: "Longest tabulated length (default: the run's calibrated grid).") var maxLength: TokenCount?
    @Option(help: "θ values > 0 for global-channel counts (repeat or comma-separate).") var theta: [String] = ["0.01,0.05,0.1"]
    @Option(name: .customLong("summary-lengths"), help: "Lengths at which to summarise thresholds (repeat or comma-separate; k = ×1000).") var summaryLengths: [String] = ["4k,16k,64k,256k"]
    @Flag(help: "No progress on stderr.") var quiet = false

    func run() throws {
        let ps = try listValues(clamp, name: "clamp") { Double($0) }
        let aggs = try listValues(aggregate, name: "aggregate") { Aggregation(rawValue: $0) }
        let thetas = try thetaValues(theta)
        let lengths = try lengthValues(summaryLengths, name: "summary-lengths")
        let store = try CalibrationStore(path: db)
        let service = TableService(store: store)
        var rows: [[String]] = []
        // Tables already solved with the same parameters are reused, so a rerun (or one after a
        // kill) only solves what is missing.
        let grid = try ps.flatMap { p in try aggs.map { try service.parameters(run: runID, clampFraction: p, aggregation: $0, interval: interval?.value, maxLength: maxLength?.value) } }
        let display = ProgressDisplay(enabled: !quiet)
        let ids = try service.tables(run: runID, for: grid) { event in
            if case .solvedLayer = event { display.show(event) }
        }
        for (parameters, id) in zip(grid, ids) {
            let p = parameters.clampFraction, agg = parameters.aggregation
            print("table \(id): p = \(p), aggregation = \(agg.rawValue)")
            let info = try store.table(id)
            let layers = try (0..<info.layerCount).map { try store.tableLayer(table: id, layer: $0) }
            let channels = layers.reduce(0) { $0 + $1.channels }
            var row = [String(id), String(p), agg.rawValue]
            for th in thetas {
                let global = layers.reduce(0) { $0 + GlobalChannels.count(cumulativeDecay: $1.cumulativeDecay, theta: th) }
                row.append("\(global)/\(channels)")
            }
            for S in lengths {
                guard let t = LengthRounding.nearestIndex(of: S, in: info.lengths) else { row.append("-"); continue }
                var sum = 0.0, n = 0
                for l in layers { for c in 0..<l.channels { sum += Double(l.deltaThreshold[t * l.channels + c]); n += 1 } }
                row.append(String(format: "%.4g", sum / Double(max(n, 1))))
            }
            rows.append(row)
        }
        let header = ["table", "p", "agg"] + thetas.map { "global@θ=\($0)" } + lengths.map { "mean τ@\($0)" }
        print("")
        printTable(header: header, rows: rows)
    }
}

/// Plain aligned text table.
func printTable(header: [String], rows: [[String]]) {
    let widths = header.indices.map { i in ([header[i]] + rows.map { i < $0.count ? $0[i] : "" }).map(\.count).max() ?? 0 }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }.joined(separator: "  ")
    }
    print(line(header))
    for r in rows { print(line(r)) }
}
