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
    @Option(help: "Channel threshold θ for the global/local split.")
    var theta: Double = GlobalChannels.defaultTheta
    @Option(help: "JSON written by `longmamba eval --json` to add the perplexity plot.")
    var eval: String?
    @Option(help: "JSON written by `longmamba eval --task passkey --json` to add the passkey heatmap.")
    var passkey: String?
    @Option(help: "Output .html file.")
    var out: String

    func run() throws {
        let store = try CalibrationStore(path: db, readOnly: true)
        var curve: CalibrationReport.PerplexityCurve?
        if let eval { curve = try PerplexityResults.load(eval).curve }
        let html = try CalibrationReport.html(store: store, table: table, theta: theta, perplexity: curve,
                                              passkey: try passkey.map { try PasskeyResults.load($0) })
        try Data(html.utf8).write(to: URL(fileURLWithPath: out), options: .atomic)
        FileHandle.standardError.write(Data("wrote \(out) (\(html.utf8.count / 1024) KiB)\n".utf8))
    }
}
