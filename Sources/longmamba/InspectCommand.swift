import ArgumentParser
import Foundation
import LongMamba

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show one table: metadata and per-layer summary.")

    @Option(help: "SQLite database.") var db: String
    @Option(help: "Table id.") var table: Int64
    @Option(help: "θ > 0 for the global-channel count.") var theta: Double = GlobalChannels.defaultTheta

    func validate() throws { try checkTheta(theta) }

    func run() throws {
        let store = try CalibrationStore(path: db, readOnly: true)
        let info = try store.table(table)
        for (k, v) in try store.tableMetadata(table).sorted(by: { $0.key < $1.key }) { print("\(k): \(v)") }
        print("")
        var probe: [Int] = []
        for S in [info.lengths.first, info.lengths.first(where: { $0 > info.parameters.trainingLength }), info.lengths.last].compactMap({ $0 }) where !probe.contains(S) { probe.append(S) }
        var rows: [[String]] = []
        for i in 0..<info.layerCount {
            let l = try store.tableLayer(table: table, layer: i)
            let global = GlobalChannels.count(cumulativeDecay: l.cumulativeDecay, theta: theta)
            var row = [String(i), String(l.channels), "\(global)", String(format: "%.4g…%.4g", l.decayBudget.min() ?? 0, l.decayBudget.max() ?? 0)]
            for S in probe {
                let t = l.lengths.firstIndex(of: S)!
                let slice = l.deltaThreshold[(t * l.channels)..<((t + 1) * l.channels)]
                row.append(String(format: "%.4g…%.4g", slice.min() ?? 0, slice.max() ?? 0))
            }
            rows.append(row)
        }
        printTable(header: ["layer", "channels", "global@θ=\(theta)", "D range"] + probe.map { "τ@\($0)" }, rows: rows)
    }
}
