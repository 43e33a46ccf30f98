import ArgumentParser
import Foundation
import LongMamba

struct TablesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tables", abstract: "List the tables in a database: LongMamba thresholds (per channel) and per-layer scales.")

    @Option(help: "SQLite database.") var db: String
    @Flag(help: "Print JSON (snake_case keys) instead of a text table.") var json = false

    struct Row: Encodable {
        var id: Int64, runId: Int64, method: String, rowKind: String, clampFraction: Double? = nil, aggregation: String? = nil, interval: Int? = nil
        var maxLength: Int? = nil, lengths: [Int]? = nil
        var trainingLength: Int, layerCount: Int, lengthCount: Int, architecture: String, recordingRepresentation: String? = nil
        var modelFingerprint: String, contentHash: String, createdAt: String

        /// The text table's cells.
        var cells: [String] {
            let p = clampFraction.map { "\($0)" } ?? "-"
            let grid = maxLength.map(String.init) ?? (lengths ?? []).map(String.init).joined(separator: ",")
            return [String(id), String(runId), method, p, aggregation ?? "-", interval.map(String.init) ?? "-", grid,
                    String(trainingLength), String(layerCount), architecture, recordingRepresentation ?? "-", createdAt, String(contentHash.prefix(12))]
        }
    }

    func run() throws {
        let store = try CalibrationStore(path: db, readOnly: true)
        var listed: [Row] = []
        var unknown: [String] = []
        for (id, kind) in try store.tableKinds() {
            switch kind {
            case .thresholds:
                let t = try store.table(id)
                listed.append(Row(id: t.id, runId: t.runID, method: t.method, rowKind: TableRowKind.perChannel.rawValue, clampFraction: t.parameters.clampFraction,
                                  aggregation: t.parameters.aggregation.rawValue, interval: t.parameters.interval, maxLength: t.parameters.maxLength,
                                  trainingLength: t.parameters.trainingLength, layerCount: t.layerCount, lengthCount: t.lengths.count, architecture: t.architecture,
                                  recordingRepresentation: t.recordingRepresentation, modelFingerprint: t.modelFingerprint, contentHash: t.contentHash, createdAt: t.createdAt))
            case .scales:
                let t = try store.scaleTable(id)
                listed.append(Row(id: t.id, runId: t.runID, method: t.method.rawValue, rowKind: TableRowKind.perLayer.rawValue, lengths: t.lengths,
                                  trainingLength: t.parameters.trainingLength, layerCount: t.layerCount, lengthCount: t.lengths.count, architecture: t.architecture,
                                  modelFingerprint: t.modelFingerprint, contentHash: t.contentHash, createdAt: t.createdAt))
            case let .unknown(method, rowKind):
                unknown.append("table \(id): method '\(method)' (\(rowKind) rows) is not one this tool knows (a newer tool's?); not listed, left in the store")
            }
        }
        for line in unknown { FileHandle.standardError.write(Data("note: \(line)\n".utf8)) }
        if json {
            try printJSON(listed)
            return
        }
        let rows = listed.map(\.cells)
        if rows.isEmpty { print("no tables in \(db)"); return }
        printTable(header: ["id", "run", "method", "p", "agg", "interval", "max_len (scales: lengths)", "L", "layers", "arch", "recording", "created_at", "hash"], rows: rows)
    }
}

/// `longmamba runs`: the calibration runs of a database, with how far each has got.
struct RunsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "runs", abstract: "List the calibration runs in a database: status, samples committed, grid, key.")

    @Option(help: "SQLite database.") var db: String
    @Flag(help: "Print JSON (snake_case keys) instead of a text table.") var json = false

    struct Row: Encodable {
        var id: Int64, status: String, samplesCommitted: Int, sampleCount: Int, sampleLength: Int, layerCount: Int
        var tableInterval: Int?, tableMaxLength: Int?, calibrationKey: String?, description: String?, modelFingerprint: String, createdAt: String
    }

    func run() throws {
        let store = try CalibrationStore(path: db, readOnly: true)
        let rows = try store.runs().compactMap { r -> Row? in
            guard let id = r.id else { return nil }
            let grid = try store.calibratedGrid(run: id)
            return Row(id: id, status: r.status.rawValue, samplesCommitted: try store.recordedSamples(run: id).count, sampleCount: r.sampleCount,
                       sampleLength: r.sampleLength, layerCount: r.layerCount, tableInterval: grid?.interval, tableMaxLength: grid?.maxLength,
                       calibrationKey: r.calibrationKey, description: r.description, modelFingerprint: try store.model(r.modelID).fingerprint,
                       createdAt: r.createdAtText)
        }
        if json {
            try printJSON(rows)
            return
        }
        if rows.isEmpty { print("no calibration runs in \(db)"); return }
        printTable(header: ["id", "status", "samples", "L", "layers", "grid", "key", "created_at", "inputs"], rows: rows.map { r in
            [String(r.id), r.status, "\(r.samplesCommitted)/\(r.sampleCount)", String(r.sampleLength), String(r.layerCount),
             r.tableInterval.map { "\($0)…\(r.tableMaxLength ?? 0)" } ?? "-", String((r.calibrationKey ?? "imported").prefix(12)), r.createdAt,
             r.description ?? "imported recordings"]
        })
    }
}
