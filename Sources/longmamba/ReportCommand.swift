import ArgumentParser
import Foundation
import LongMamba

/// `longmamba report`: a self-contained HTML page with SVG plots of one table.
struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Write an HTML report (inline SVG plots) of a stored table.")

    @Option(help: "SQLite database.")
    var db: String
    @Option(help: "Table id.")
    var table: Int64
    @Option(help: "Channel threshold θ > 0 for the global/local split (default: the θ `tune` chose for this table, else 0.05).")
    var theta: Double?
    @Option(help: "JSON written by `longmamba eval --json` to add the perplexity plot (repeat for several methods, drawn side by side; the run's scale tables too).")
    var eval: [String] = []
    @Option(help: "JSON written by `longmamba eval --task passkey --json` to add the passkey heatmap (repeat for several methods).")
    var passkey: [String] = []
    @Option(help: "Output .html file.")
    var out: String

    func validate() throws {
        if let theta { try checkTheta(theta) }
    }

    func run() throws {
        let store = try CalibrationStore(path: db, readOnly: true)
        let info = try store.table(table)
        let chosen: Double, note: String
        if let theta {
            (chosen, note) = (theta, "given")
        } else if let tuned = try TunedTheta.best(store: store, table: table) {
            (chosen, note) = (tuned.theta, "chosen by tune: \(tuned.task) at \(tuned.lengths.map(String.init).joined(separator: ", ")) tokens")
        } else {
            (chosen, note) = (GlobalChannels.defaultTheta, "the default: tune has not evaluated this table")
        }
        if theta == nil { FileHandle.standardError.write(Data("θ = \(chosen) (\(note))\n".utf8)) }
        // Results drawn into this table's report must have measured this table at this θ, or one
        // of the run's scale tables (per-layer methods, drawn beside it).
        let scaleTables = try store.scaleTables(run: info.runID)
        let perplexities = try eval.map { path in
            let results = try PerplexityResults.load(path)
            try CalibrationReport.check(results, path: path, table: info, theta: chosen, scaleTables: scaleTables)
            return results
        }
        let passkeyResults = try passkey.map { path in
            let results = try PasskeyResults.load(path)
            try CalibrationReport.check(results, path: path, table: info, theta: chosen, scaleTables: scaleTables)
            return results
        }
        let html = try CalibrationReport.html(store: store, table: table, theta: chosen, thetaNote: note, perplexities: perplexities.map(\.curve),
                                              passkeys: passkeyResults, positions: perplexities)
        do { try Data(html.utf8).write(to: URL(fileURLWithPath: out), options: .atomic) } catch {
            throw ReportError.cannotWrite(path: out, reason: SystemMessage.of(error))
        }
        FileHandle.standardError.write(Data("wrote \(out) (\(html.utf8.count / 1024) KiB)\n".utf8))
    }
}
