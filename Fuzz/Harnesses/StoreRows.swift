// The `store-rows` harness: a valid store whose rows are altered as another program could alter
// them — SQLite stays well-formed, only our rows are wrong — then read through every path the
// CLI reads it by (issue "A store altered outside the tool crashes its readers"). The input is a
// list of mutations, 8 bytes each:
//   [kind, table, row, column, p0, p1, p2, p3]
// kinds: truncate / extend / flip a byte of / reorder the elements of / write a special float
// into a blob; set a column to an integer, a real, text, NULL, or a JSON garble; delete or
// duplicate a row; an unknown encoding or method; recompute the content hashes (so that later
// mutations reach the checks behind them).
import Foundation
import GRDB
@testable import LongMamba

/// The template store: the fixture Mamba-2 calibrated (2 samples, tables of two p), a tune point.
nonisolated(unsafe) var rowTemplate: String?

func makeRowTemplate(in directory: String) throws -> String {
    let path = directory + "/template.sqlite"
    try? FileManager.default.removeItem(atPath: path)
    var o = CalibrationOptions(modelDirectory: "Fixtures/models/mamba2-tiny-calib", corpusPaths: ["Fixtures/corpus/fixture.jsonl.zst"], databasePath: path)
    o.sampleCount = 2; o.interval = 128; o.maxLength = 1024; o.clampFractions = [0.05, 0.2]
    _ = try CalibrationJob(options: o).run()
    let store = try CalibrationStore(path: path)
    try store.saveEvaluation(EvaluationRecord(evaluationKey: "k", tableID: 1, theta: 0.05, task: "perplexity", length: 512, metric: "perplexity", value: 20, textHash: "h"))
    try store.close()
    return path
}

let rowColumns: [(table: String, columns: [String])] = [
    ("threshold_tables", ["run_id", "method", "parameters_json", "clamp_fraction", "aggregation", "interval_tokens", "max_length", "training_length", "layer_count", "length_count", "content_hash"]),
    ("table_layers", ["table_id", "layer_index", "channel_count", "length_count", "lengths_i64", "delta_thresholds_f32", "kept_fractions_f32", "decay_budgets_f32", "cumulative_decays_f32", "a_values_f32", "a_shape_json"]),
    ("recordings", ["run_id", "sample_index", "layer_index", "token_count", "channel_count", "encoding", "delta_blob", "a_shape_json", "a_values", "content_hash"]),
    ("calibration_runs", ["model_id", "sample_count", "sample_length", "layer_count", "status", "recording_metadata_json", "calibration_key"]),
    ("run_samples", ["run_id", "sample_index", "token_count", "token_ids_i32"]),
    ("models", ["fingerprint", "architecture", "config_json"]),
    ("evaluations", ["table_id", "theta", "task", "length", "metric", "value", "detail_json"]),
]

/// Applies the input's mutations to the store at `path` (triggers dropped first).
func mutateRows(_ path: String, _ bytes: UnsafeRawBufferPointer) throws {
    let queue = try DatabaseQueue(path: path)
    try queue.writeWithoutTransaction { db in
        for t in ["threshold_tables_are_immutable", "threshold_tables_are_never_deleted", "table_layers_are_immutable", "table_layers_are_never_deleted"] {
            try db.execute(sql: "DROP TRIGGER IF EXISTS \(t)")
        }
        var i = 0
        while i + 8 <= bytes.count {
            let op = Array(bytes[i..<(i + 8)]); i += 8
            let (table, columns) = rowColumns[Int(op[1]) % rowColumns.count]
            let rowids = try Int64.fetchAll(db, sql: "SELECT rowid FROM \(table)")
            guard !rowids.isEmpty else { continue }
            let rowid = rowids[Int(op[2]) % rowids.count]
            let column = columns[Int(op[3]) % columns.count]
            let p = Int(op[4]) | Int(op[5]) << 8
            let value = try DatabaseValue.fetchOne(db, sql: "SELECT \(column) FROM \(table) WHERE rowid = ?", arguments: [rowid]) ?? .null
            func set(_ v: DatabaseValueConvertible?) throws { try db.execute(sql: "UPDATE \(table) SET \(column) = ? WHERE rowid = ?", arguments: [v, rowid]) }
            let blob: Data? = Data.fromDatabaseValue(value)
            switch op[0] % 16 {
            case 0: if let b = blob { try set(Data(b.prefix(max(0, b.count - 1 - p % 64)))) }            // truncate
            case 1: if let b = blob { try set(b + Data(repeating: op[6], count: 1 + p % 64)) }           // extend
            case 2: if var b = blob, !b.isEmpty { b[p % b.count] ^= max(op[6], 1); try set(b) }          // flip
            case 3: if var b = blob, b.count >= 8 {                                                      // swap two elements
                let w = op[6] % 2 == 0 ? 4 : 8, n = b.count / w, x = p % n, y = Int(op[7]) % n
                let ex = b[(x * w)..<(x * w + w)], ey = b[(y * w)..<(y * w + w)]
                b.replaceSubrange((x * w)..<(x * w + w), with: ey); b.replaceSubrange((y * w)..<(y * w + w), with: ex); try set(b)
            }
            case 4: if var b = blob, b.count >= 4 {                                                      // a special float
                let specials: [Float] = [.nan, .infinity, -.infinity, -1, 0, 1e30, 2, -0.0, .leastNonzeroMagnitude]
                let v = specials[Int(op[6]) % specials.count].bitPattern.littleEndian
                let at = (p % (b.count / 4)) * 4
                withUnsafeBytes(of: v) { b.replaceSubrange(at..<(at + 4), with: $0) }
                try set(b)
            }
            case 5: try set([Int64(p) - 32768, 0, -1, Int64.max, Int64.min, 1 << 40, 2, 3][Int(op[6]) % 8])  // integer
            case 6: try set(Double(Int(op[6]) - 128) / 7)                                                // real
            case 7: try set(["", "{", "[]", "null", "{\"a\":1}", "[1,2", "\u{FFFD}", "[0.5]", "{\"aggregation\":\"max\"}"][Int(op[6]) % 9])  // text / JSON garble
            case 8: try set(nil as Int?)                                                                // NULL
            case 9: try db.execute(sql: "DELETE FROM \(table) WHERE rowid = ?", arguments: [rowid])      // delete
            case 10: try set(["logrice-v2", "exact-f64-v1", "dt_scale", "alpha", "longmamba", "exact-f32-v1", "logrice-v1"][Int(op[6]) % 7])  // names
            case 11: try set(Data(repeating: op[6], count: p % 300))                                    // a blob of anything
            case 12: if let b = blob, b.count >= 8 { try set(b.suffix(from: b.startIndex + (p % (b.count / 2)))) }  // drop a prefix
            case 13: try set(["[8]", "[8,64]", "[0]", "[-1]", "[1e9]", "[]", "[8,0]", "[4]"][Int(op[6]) % 8])     // shapes
            default: try rehash(db)                                                                      // consistent hashes again
            }
        }
    }
    try queue.close()
}

/// Recomputes every recording's and table's content hash from the rows as they now are.
func rehash(_ db: Database) throws {
    // Raw values throughout: GRDB's typed subscripts trap on a value they cannot convert.
    func text(_ v: DatabaseValue) -> String { String.fromDatabaseValue(v) ?? "" }
    func bytes(_ v: DatabaseValue) -> Data { Data.fromDatabaseValue(v) ?? Data() }
    for row in try Row.fetchAll(db, sql: "SELECT rowid, encoding, delta_blob, a_values FROM recordings") {
        let hash = RecordingRecord.contentHash(encoding: text(row[1]), blob: bytes(row[2]), aValues: bytes(row[3]))
        try db.execute(sql: "UPDATE recordings SET content_hash = ? WHERE rowid = ?", arguments: [hash, row[0] as DatabaseValue])
    }
    for t in try Row.fetchAll(db, sql: """
        SELECT t.id, t.method, t.parameters_json, m.fingerprint FROM threshold_tables t
        JOIN calibration_runs r ON r.id = t.run_id JOIN models m ON m.id = r.model_id
        """) {
        guard let p = try? SolverParameters(canonicalJSON: text(t[2])), let id = Int64.fromDatabaseValue(t[0]) else { continue }
        var h = TableHasher(method: text(t[1]), parameters: p, modelFingerprint: text(t[3]))
        guard let layers = try? TableLayerRecord.filter(Column("table_id") == id).order(Column("layer_index")).fetchAll(db) else { continue }
        for l in layers { h.add(l.layerTable) }
        try db.execute(sql: "UPDATE threshold_tables SET content_hash = ? WHERE id = ?", arguments: [h.finalize(), id])
    }
}

/// Every read path of the CLI, on an altered store: errors are fine, traps are not.
func readEverything(_ path: String) {
    guard let store = try? CalibrationStore(path: path, readOnly: true, busyTimeout: 0) else { return }
    _ = try? store.check()
    for info in (try? store.tables()) ?? [] {
        for layer in 0..<min(info.layerCount, 8) { _ = try? store.tableLayer(table: info.id, layer: layer) }
        for S in [1, 200, 640, 100_000] { _ = try? TableLookup(store: store).lookup(table: info.id, length: S, theta: 0.05) }
        if let source = try? StoredTableSource(store: store, table: info.id) { _ = try? source.filter(length: 700, theta: 0.01) }
        for format in ExportFormat.allCases { try? TableExport.export(store: store, table: info.id, format: format, to: scratchDirectory + "/export.\(format.rawValue)", theta: 0.05) }
        _ = try? CalibrationReport.html(store: store, table: info.id)
        _ = try? TunedTheta.best(store: store, table: info.id)
    }
    for run in (try? store.runs()) ?? [] {
        guard let id = run.id else { continue }
        _ = try? store.sequences(run: id)
        _ = try? store.calibratedGrid(run: id)
        for layer in 0..<min(run.layerCount, 8) { _ = try? store.layerSamples(run: id, layer: layer) }
        _ = try? store.recording(run: id, sample: 0, layer: 0)
    }
    _ = try? store.evaluations()
    try? store.close()
    // The writer's path: solving the run again from its (altered) recordings.
    if let writable = try? CalibrationStore(path: path, busyTimeout: 0) {
        _ = try? TableService(store: writable).solve(run: 1, clampFraction: 0.1, aggregation: .max)
        try? writable.close()
    }
}
