import ArgumentParser
import Foundation
import LongMamba

/// `longmamba migrate`: bring a database of an older schema to this tool's (any writing command does it too).
struct MigrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Migrate a calibration database to this tool's schema (runs, recordings and tables are kept).")

    @Option(help: "SQLite database.") var db: String

    func run() throws {
        guard FileManager.default.fileExists(atPath: db) else { throw StoreError.noSuchDatabase(path: db) }
        _ = try CalibrationStore(path: db)
        print("\(db): schema version \(CalibrationStore.schemaVersion)")
    }
}
