// `longmamba check`: a whole store verified, everything a reader would meet: SQLite's own
// integrity and foreign keys, every run, sampled sequence, recording (sizes, hash, decode) and
// table (rows and content hash), and every evaluation row. Each problem is one line; an empty
// list is a healthy store.
import Foundation
import GRDB

/// What `CalibrationStore.check` looked at and what it found.
public struct StoreCheckReport: Sendable {
    public var runs = 0, sequences = 0, recordings = 0, tables = 0, evaluations = 0
    public var problems: [String] = []
    public var healthy: Bool { problems.isEmpty }
}

extension CalibrationStore {
    public func check() throws -> StoreCheckReport {
        var report = StoreCheckReport()
        func note(_ error: Error) { report.problems.append(StoreCheckReport.line(error, path: path)) }
        // SQLite's own checks first: a damaged page would make the rest unreliable.
        let (integrity, foreignKeys) = try read { db in
            (try String.fetchAll(db, sql: "PRAGMA integrity_check"),
             try Row.fetchAll(db, sql: "PRAGMA foreign_key_check").map { "\($0[0] as DatabaseValue) row \($0[1] as DatabaseValue) refers to a missing \($0[2] as DatabaseValue) row" })
        }
        if integrity != ["ok"] { report.problems += integrity.prefix(20).map { "SQLite integrity_check: \($0)" } }
        report.problems += foreignKeys.prefix(20).map { "foreign key: \($0)" }

        let runIDs = try read { db in try Int64.fetchAll(db, sql: "SELECT id FROM calibration_runs ORDER BY id") }
        for id in runIDs {
            report.runs += 1
            let info: CalibrationRunInfo
            do { info = try run(id) } catch { note(error); continue }
            do { report.sequences += try sequences(run: id).count } catch { note(error) }
            // Read as raw values: GRDB's typed subscript traps on a value it cannot convert.
            let keys = try read { db in
                try Row.fetchAll(db, sql: "SELECT sample_index, layer_index FROM recordings WHERE run_id = ? ORDER BY sample_index, layer_index", arguments: [id])
                    .map { (Int.fromDatabaseValue($0[0] as DatabaseValue), Int.fromDatabaseValue($0[1] as DatabaseValue), $0[0] as DatabaseValue, $0[1] as DatabaseValue) }
            }
            for (sampleIndex, layerIndex, rawSample, rawLayer) in keys {
                report.recordings += 1
                guard let sample = sampleIndex, let layer = layerIndex else {
                    report.problems.append("run \(id): a recording's sample_index \(rawSample) / layer_index \(rawLayer) are not integers")
                    continue
                }
                do {
                    guard sample >= 0, sample < info.sampleCount, layer >= 0, layer < info.layerCount else {
                        throw StoreError.sampleOutOfRange(path: path, run: id, sample: sample, layer: layer, sampleCount: info.sampleCount, layerCount: info.layerCount)
                    }
                    _ = try recording(run: id, sample: sample, layer: layer)
                } catch { note(error) }
            }
        }
        let tableIDs = try read { db in try Int64.fetchAll(db, sql: "SELECT id FROM threshold_tables ORDER BY id") }
        for id in tableIDs {
            report.tables += 1
            do {
                verifiedTables.withLock { _ = $0.remove(id) }   // verify again, whatever this store object saw before
                switch try tableKind(id) {
                case .scales: _ = try scales(table: id)
                default: try verifyTable(try table(id))   // an unknown method is reported by table()
                }
            } catch { note(error) }
        }
        do { report.evaluations = try evaluations().count } catch { note(error) }
        return report
    }
}

extension StoreCheckReport {
    /// One line for a problem: the error's own message without the store's path and advice.
    static func line(_ error: Error, path: String) -> String {
        var text = "\(error)"
        if text.hasPrefix(path + ": ") { text.removeFirst(path.count + 2) }
        if let advice = text.range(of: "; the store was altered outside longmamba (check it with") { text = String(text[..<advice.lowerBound]) }
        if let advice = text.range(of: " (`longmamba check --db") { text = String(text[..<advice.lowerBound]) }
        return text
    }
}
