import ArgumentParser
import Foundation
import LongMamba

/// `longmamba check`: verifies a whole store and prints what is damaged.
struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Verify a store: SQLite integrity and foreign keys, every row's checks, every content hash.",
        discussion: "Exits 0 when the store is healthy, 1 when something is damaged (one line each).")

    @Option(help: "SQLite database.") var db: String

    func run() throws {
        let report = try CalibrationStore(path: db, readOnly: true).check()
        let counts = "\(report.runs) runs, \(report.sequences) sampled sequences, \(report.recordings) recordings, \(report.tables) tables, \(report.evaluations) evaluations"
        if report.healthy {
            print("\(db): healthy (\(counts))")
            return
        }
        print("\(db): \(report.problems.count) problem\(report.problems.count == 1 ? "" : "s") (\(counts) checked):")
        for p in report.problems { print("  \(p)") }
        throw ExitCode(1)
    }
}
