import ArgumentParser
import Foundation
import LongMamba

struct TablesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tables", abstract: "List the threshold tables in a database.")

    @Option(help: "SQLite database.") var db: String

    func run() throws {
        let store = try CalibrationStore(path: db, readOnly: true)
        let rows = try store.tables().map { t in
            [String(t.id), String(t.runID), t.method, String(t.parameters.clampFraction), t.parameters.aggregation.rawValue,
             String(t.parameters.interval), String(t.parameters.maxLength), String(t.parameters.trainingLength), String(t.layerCount),
             t.architecture, t.recordingRepresentation, t.createdAt, String(t.contentHash.prefix(12))]
        }
        if rows.isEmpty { print("no tables in \(db)"); return }
        printTable(header: ["id", "run", "method", "p", "agg", "interval", "max_len", "L", "layers", "arch", "recording", "created_at", "hash"], rows: rows)
    }
}
