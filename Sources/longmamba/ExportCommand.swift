import ArgumentParser
import Foundation
import LongMamba

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a table as safetensors, JSON, or the authors' PyTorch artifact directories.")

    @Option(help: "SQLite database.") var db: String
    @Option(help: "Table id.") var table: Int64
    @Option(help: "safetensors, json or longmamba-artifacts.") var format: ExportFormat
    @Option(help: "Output file (a directory for longmamba-artifacts).") var out: String
    @Option(help: "The channel threshold θ chosen for this table (e.g. by `tune`): recorded in the export's metadata.") var theta: Double?

    func run() throws {
        let store = try CalibrationStore(path: db, readOnly: true)
        if let theta, !(theta > 0) { throw ValidationError("--theta must be > 0, got \(theta)") }
        try TableExport.export(store: store, table: table, format: format, to: out, theta: theta)
        FileHandle.standardError.write(Data("wrote table \(table) as \(format.rawValue) to \(out)\n".utf8))
    }
}
