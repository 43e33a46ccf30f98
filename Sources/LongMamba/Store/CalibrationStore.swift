// The SQLite store (GRDB, WAL, migrations). Readable with the plain `sqlite3` shell:
//
//   models              one row per model fingerprint (architecture, config JSON)
//   calibration_runs    one calibration set: corpus provenance, tokenizer hash, seed, K, L, status
//   recordings          Δ of one (run, sample, layer) in a stored representation (exact / sketch)
//   threshold_tables    immutable solved tables: method + parameters JSON (+ columns for LongMamba's
//                       p, aggregation, interval, max length), content hash, created-at
//   table_layers        per-layer arrays of a table: lengths, thresholds, kept fractions, budgets,
//                       cumulative decays, A (little-endian blobs; shapes in the columns)
//
// Tables and their layers are immutable (triggers refuse UPDATE and DELETE). Every write runs
// in one transaction, so an interrupted write leaves no partial run or table.
import Crypto
import Foundation
import GRDB

/// Why the store refused an operation.
public enum StoreError: Error, CustomStringConvertible, Sendable, Equatable {
    case newerSchema(path: String, found: Int, supported: Int)
    case unknownTable(path: String, id: Int64)
    case unknownRun(path: String, id: Int64)
    case readOnly(path: String)
    case locked(path: String)
    case diskFull(path: String)
    case notADatabase(path: String, detail: String)
    case invalid(String)
    case database(path: String, detail: String)

    public var description: String {
        switch self {
        case let .newerSchema(path, found, supported):
            return "\(path): written by a newer longmamba (schema version \(found); this tool understands up to \(supported)). Upgrade longmamba; the database was not modified."
        case let .unknownTable(path, id): return "\(path): no threshold table with id \(id) (list them with `longmamba tables --db \(path)`)"
        case let .unknownRun(path, id): return "\(path): no calibration run with id \(id)"
        case let .readOnly(path): return "\(path): the database is read-only (file permissions or a read-only mount); nothing was written"
        case let .locked(path): return "\(path): the database is locked by another writer; retry when it has finished (nothing was written)"
        case let .diskFull(path): return "\(path): disk full while writing; the transaction was rolled back and the database is unchanged"
        case let .notADatabase(path, detail): return "\(path): not a longmamba SQLite database (\(detail))"
        case let .invalid(s): return s
        case let .database(path, detail): return "\(path): \(detail)"
        }
    }
}

/// A model row.
public struct ModelInfo: Sendable, Equatable {
    public let id: Int64
    public let fingerprint: String
    public let architecture: String
    public let configJSON: String
}

/// A calibration run row.
public struct CalibrationRunInfo: Sendable, Equatable {
    public let id: Int64
    public let modelID: Int64
    public let corpusProvenanceJSON: String
    public let tokenizerHash: String?
    public let seed: Int64?
    public let sampleCount: Int
    public let trainingLength: Int
    public let layerCount: Int
    public let toolVersion: String
    public let status: String
    public let recordingMetadataJSON: String
}

/// A threshold table row (metadata only).
public struct ThresholdTableInfo: Sendable, Equatable {
    public let id: Int64
    public let runID: Int64
    public let method: String
    public let parametersJSON: String
    public let parameters: SolverParameters
    public let layerCount: Int
    public let lengths: [Int]
    public let contentHash: String
    public let toolVersion: String
    public let schemaVersion: Int
    public let createdAt: String
    public let modelFingerprint: String
    public let architecture: String
    public let recordingRepresentation: String
}

/// What to record about a new run (everything optional comes from the recording's metadata).
public struct RunProvenance: Sendable {
    public var corpusProvenanceJSON: String = "{}"
    public var tokenizerHash: String?
    public var seed: Int64?
    public var recordingMetadataJSON: String = "{}"
    public init() {}
}

public final class CalibrationStore: Sendable {
    /// Schema version this tool writes and understands.
    public static let schemaVersion = 1
    public static let longMambaMethod = "longmamba"
    public let path: String
    let writer: any DatabaseWriter

    /// Opens (creating and migrating if needed) a store. `readOnly` never writes, not even migrations.
    /// `busyTimeout`: seconds to wait for another writer before failing with `StoreError.locked`.
    public init(path: String, readOnly: Bool = false, busyTimeout: Double = 5) throws {
        self.path = path
        var config = Configuration()
        config.busyMode = .timeout(busyTimeout)
        config.foreignKeysEnabled = true
        if readOnly {
            guard FileManager.default.fileExists(atPath: path) else {
                throw StoreError.invalid("\(path): no such database (create one with `longmamba solve --db \(path) --recordings …`)")
            }
            config.readonly = true
            do { writer = try DatabaseQueue(path: path, configuration: config) } catch { throw CalibrationStore.map(error, path: path) }
            try checkSchema()
            return
        }
        do {
            writer = try DatabasePool(path: path, configuration: config)  // WAL
        } catch { throw CalibrationStore.map(error, path: path) }
        try checkSchema()
        do { try CalibrationStore.migrator.migrate(writer) } catch { throw CalibrationStore.map(error, path: path) }
    }

    /// Refuses a database whose schema is newer than this tool's.
    private func checkSchema() throws {
        let (version, superseded): (Int, Bool)
        do {
            (version, superseded) = try writer.read { db in
                let v = try Int.fetchOne(db, sql: "PRAGMA user_version") ?? 0
                let s = try db.tableExists("grdb_migrations") ? try CalibrationStore.migrator.hasBeenSuperseded(db) : false
                return (v, s)
            }
        } catch { throw CalibrationStore.map(error, path: path) }
        if version > CalibrationStore.schemaVersion || superseded {
            throw StoreError.newerSchema(path: path, found: max(version, CalibrationStore.schemaVersion + 1), supported: CalibrationStore.schemaVersion)
        }
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1: models, runs, recordings, tables") { db in
            try db.execute(sql: """
                CREATE TABLE models (
                    id INTEGER PRIMARY KEY,
                    fingerprint TEXT NOT NULL UNIQUE,
                    architecture TEXT NOT NULL,
                    config_json TEXT NOT NULL DEFAULT '{}',
                    created_at TEXT NOT NULL
                );
                CREATE TABLE calibration_runs (
                    id INTEGER PRIMARY KEY,
                    model_id INTEGER NOT NULL REFERENCES models(id),
                    recorded_quantity TEXT NOT NULL DEFAULT 'delta',
                    corpus_provenance_json TEXT NOT NULL DEFAULT '{}',
                    tokenizer_hash TEXT,
                    seed INTEGER,
                    sample_count INTEGER NOT NULL,
                    training_length INTEGER NOT NULL,
                    layer_count INTEGER NOT NULL,
                    recording_metadata_json TEXT NOT NULL DEFAULT '{}',
                    tool_version TEXT NOT NULL,
                    status TEXT NOT NULL CHECK (status IN ('recording', 'complete', 'failed')),
                    created_at TEXT NOT NULL
                );
                CREATE TABLE recordings (
                    run_id INTEGER NOT NULL REFERENCES calibration_runs(id),
                    sample_index INTEGER NOT NULL,
                    layer_index INTEGER NOT NULL,
                    token_count INTEGER NOT NULL,
                    channel_count INTEGER NOT NULL,
                    encoding TEXT NOT NULL,
                    delta_blob BLOB NOT NULL,
                    a_shape_json TEXT NOT NULL,
                    a_values BLOB NOT NULL,
                    content_hash TEXT NOT NULL,
                    PRIMARY KEY (run_id, sample_index, layer_index)
                );
                CREATE TABLE threshold_tables (
                    id INTEGER PRIMARY KEY,
                    run_id INTEGER NOT NULL REFERENCES calibration_runs(id),
                    method TEXT NOT NULL,
                    parameters_json TEXT NOT NULL,
                    clamp_fraction REAL,
                    aggregation TEXT,
                    interval_tokens INTEGER,
                    max_length INTEGER,
                    training_length INTEGER,
                    layer_count INTEGER NOT NULL,
                    length_count INTEGER NOT NULL,
                    content_hash TEXT NOT NULL,
                    tool_version TEXT NOT NULL,
                    schema_version INTEGER NOT NULL,
                    created_at TEXT NOT NULL
                );
                CREATE INDEX threshold_tables_by_hash ON threshold_tables(content_hash);
                CREATE TABLE table_layers (
                    table_id INTEGER NOT NULL REFERENCES threshold_tables(id),
                    layer_index INTEGER NOT NULL,
                    channel_count INTEGER NOT NULL,
                    length_count INTEGER NOT NULL,
                    lengths_i64 BLOB NOT NULL,
                    delta_thresholds_f32 BLOB NOT NULL,
                    kept_fractions_f32 BLOB NOT NULL,
                    decay_budgets_f32 BLOB NOT NULL,
                    cumulative_decays_f32 BLOB NOT NULL,
                    a_values_f32 BLOB NOT NULL,
                    a_shape_json TEXT NOT NULL,
                    PRIMARY KEY (table_id, layer_index)
                );
                CREATE TRIGGER threshold_tables_are_immutable BEFORE UPDATE ON threshold_tables
                    BEGIN SELECT RAISE(ABORT, 'threshold tables are immutable; solve again to add a new one'); END;
                CREATE TRIGGER threshold_tables_are_never_deleted BEFORE DELETE ON threshold_tables
                    BEGIN SELECT RAISE(ABORT, 'threshold tables are immutable'); END;
                CREATE TRIGGER table_layers_are_immutable BEFORE UPDATE ON table_layers
                    BEGIN SELECT RAISE(ABORT, 'threshold tables are immutable'); END;
                CREATE TRIGGER table_layers_are_never_deleted BEFORE DELETE ON table_layers
                    BEGIN SELECT RAISE(ABORT, 'threshold tables are immutable'); END;
                PRAGMA user_version = 1;
                """)
        }
        return m
    }

    /// Maps SQLite failures to errors that say what to do.
    static func map(_ error: any Error, path: String) -> any Error {
        if error is StoreError { return error }
        guard let e = error as? DatabaseError else { return error }
        switch e.resultCode {
        case .SQLITE_READONLY:
            return StoreError.readOnly(path: path)
        case .SQLITE_CANTOPEN:
            let dir = (path as NSString).deletingLastPathComponent
            if !FileManager.default.isWritableFile(atPath: dir.isEmpty ? "." : dir) { return StoreError.readOnly(path: path) }
            return StoreError.database(path: path, detail: "cannot open: \(e.message ?? "unknown reason")")
        case .SQLITE_BUSY, .SQLITE_LOCKED: return StoreError.locked(path: path)
        case .SQLITE_FULL: return StoreError.diskFull(path: path)
        case .SQLITE_NOTADB, .SQLITE_CORRUPT: return StoreError.notADatabase(path: path, detail: e.message ?? "\(e.resultCode)")
        default: return StoreError.database(path: path, detail: "\(e)")
        }
    }

    func write<T>(_ body: (Database) throws -> T) throws -> T {
        do { return try writer.write(body) } catch { throw CalibrationStore.map(error, path: path) }
    }

    func read<T>(_ body: (Database) throws -> T) throws -> T {
        do { return try writer.read(body) } catch { throw CalibrationStore.map(error, path: path) }
    }

    static func now() -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: Date())
    }

    static func hex(_ digest: some Sequence<UInt8>) -> String { digest.map { String(format: "%02x", $0) }.joined() }

    // MARK: models and runs

    /// The id of the model with this fingerprint, adding it if new.
    func modelID(_ db: Database, fingerprint: String, architecture: String, configJSON: String) throws -> Int64 {
        if let id = try Int64.fetchOne(db, sql: "SELECT id FROM models WHERE fingerprint = ?", arguments: [fingerprint]) { return id }
        try db.execute(sql: "INSERT INTO models (fingerprint, architecture, config_json, created_at) VALUES (?, ?, ?, ?)",
                       arguments: [fingerprint, architecture, configJSON, CalibrationStore.now()])
        return db.lastInsertedRowID
    }

    /// Imports recording files (one per sample) as a new complete run, in one transaction.
    /// `representation` nil picks exact for Mamba-2 / small layers, the sketch for Mamba-1.
    /// `failAfterLayers` is a test hook that simulates an interruption mid-write.
    public func importRecordings(_ paths: [String], representation: DeltaRepresentation? = nil, provenance: RunProvenance = RunProvenance(), failAfterLayers: Int? = nil) throws -> Int64 {
        guard !paths.isEmpty else { throw StoreError.invalid("no recording files given") }
        let files = try paths.map { try RecordingFile(path: $0) }
        try RecordingFile.checkConsistent(files)
        let first = files[0]
        let architecture = first.architecture ?? (first.aShapes[0].count == 1 ? "mamba2" : "mamba")
        let chosen = representation ?? DeltaRepresentation.automatic(architecture: architecture, channels: first.channels)
        let fingerprint = first.fingerprint ?? "unfingerprinted:\(architecture):\(first.layerCount)x\(first.channels)"
        var prov = provenance
        if prov.recordingMetadataJSON == "{}" {
            prov.recordingMetadataJSON = CalibrationStore.canonicalJSON(first.metadata)
        }
        if prov.tokenizerHash == nil { prov.tokenizerHash = first.metadata["tokenizer_hash"] }
        if prov.seed == nil, let s = first.metadata["seed"] { prov.seed = Int64(s) }
        if prov.corpusProvenanceJSON == "{}", let c = first.metadata["corpus"] { prov.corpusProvenanceJSON = c }
        let finalProvenance = prov
        var written = 0
        return try write { db in
            let model = try modelID(db, fingerprint: fingerprint, architecture: architecture, configJSON: first.metadata["config"] ?? "{}")
            try db.execute(sql: """
                INSERT INTO calibration_runs (model_id, corpus_provenance_json, tokenizer_hash, seed, sample_count, training_length,
                    layer_count, recording_metadata_json, tool_version, status, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'recording', ?)
                """, arguments: [model, finalProvenance.corpusProvenanceJSON, finalProvenance.tokenizerHash, finalProvenance.seed, files.count, first.length,
                                 first.layerCount, finalProvenance.recordingMetadataJSON, ToolInfo.version, CalibrationStore.now()])
            let run = db.lastInsertedRowID
            for (s, file) in files.enumerated() {
                for i in 0..<file.layerCount {
                    if let failAfterLayers, written >= failAfterLayers {
                        throw StoreError.invalid("simulated interruption after \(written) layers")
                    }
                    try insertRecording(db, run: run, sample: s, layer: try file.layer(i), representation: chosen)
                    written += 1
                }
            }
            try db.execute(sql: "UPDATE calibration_runs SET status = 'complete' WHERE id = ?", arguments: [run])
            return run
        }
    }

    func insertRecording(_ db: Database, run: Int64, sample: Int, layer: SortedDeltaLayer, representation: DeltaRepresentation) throws {
        try insertEncodedRecording(db, run: run, sample: sample, layer: layer.layer, length: layer.length, channels: layer.channels,
                                   encoding: representation.encodingName, blob: try DeltaBlob.encode(layer, as: representation),
                                   A: layer.A, aShape: layer.aShape)
    }

    func insertEncodedRecording(_ db: Database, run: Int64, sample: Int, layer: Int, length: Int, channels: Int,
                                encoding: String, blob: Data, A: [Float], aShape: [Int]) throws {
        let aData = A.withUnsafeBytes { Data($0) }
        var h = SHA256()
        h.update(data: Data(encoding.utf8)); h.update(data: blob); h.update(data: aData)
        try db.execute(sql: """
            INSERT INTO recordings (run_id, sample_index, layer_index, token_count, channel_count, encoding, delta_blob, a_shape_json, a_values, content_hash)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, arguments: [run, sample, layer, length, channels, encoding, blob,
                             CalibrationStore.jsonArray(aShape), aData, CalibrationStore.hex(h.finalize())])
    }

    public func run(_ id: Int64) throws -> CalibrationRunInfo {
        try read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM calibration_runs WHERE id = ?", arguments: [id]) else {
                throw StoreError.unknownRun(path: path, id: id)
            }
            return CalibrationRunInfo(id: row["id"], modelID: row["model_id"], corpusProvenanceJSON: row["corpus_provenance_json"],
                                      tokenizerHash: row["tokenizer_hash"], seed: row["seed"], sampleCount: row["sample_count"],
                                      trainingLength: row["training_length"], layerCount: row["layer_count"], toolVersion: row["tool_version"],
                                      status: row["status"], recordingMetadataJSON: row["recording_metadata_json"])
        }
    }

    public func model(_ id: Int64) throws -> ModelInfo {
        try read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM models WHERE id = ?", arguments: [id]) else {
                throw StoreError.invalid("\(path): no model with id \(id)")
            }
            return ModelInfo(id: row["id"], fingerprint: row["fingerprint"], architecture: row["architecture"], configJSON: row["config_json"])
        }
    }

    /// The K samples of one layer of a run, decoded from their stored representation.
    public func layerSamples(run: Int64, layer: Int) throws -> [SortedDeltaLayer] {
        try read { db in
            let rows = try Row.fetchAll(db, sql: "SELECT * FROM recordings WHERE run_id = ? AND layer_index = ? ORDER BY sample_index", arguments: [run, layer])
            return try rows.map { row in
                let aData: Data = row["a_values"]
                var A = [Float](repeating: 0, count: aData.count / 4)
                _ = A.withUnsafeMutableBytes { aData.copyBytes(to: $0) }
                let shapeJSON: String = row["a_shape_json"]
                let aShape = (try? JSONDecoder().decode([Int].self, from: Data(shapeJSON.utf8))) ?? [A.count]
                return try DeltaBlob.decode(row["delta_blob"], encoding: row["encoding"], layer: layer, length: row["token_count"],
                                            channels: row["channel_count"], A: A, aShape: aShape)
            }
        }
    }

    /// The encodings used by a run's recordings (for table metadata).
    public func recordingEncodings(run: Int64) throws -> [String] {
        try read { db in try String.fetchAll(db, sql: "SELECT DISTINCT encoding FROM recordings WHERE run_id = ? ORDER BY encoding", arguments: [run]) }
    }

    /// Bytes of stored recordings of a run.
    public func recordingBytes(run: Int64) throws -> Int {
        try read { db in try Int.fetchOne(db, sql: "SELECT COALESCE(SUM(LENGTH(delta_blob) + LENGTH(a_values)), 0) FROM recordings WHERE run_id = ?", arguments: [run]) ?? 0 }
    }

    // MARK: JSON helpers

    static func jsonArray(_ v: [Int]) -> String { "[" + v.map(String.init).joined(separator: ",") + "]" }

    static func canonicalJSON(_ dict: [String: String]) -> String {
        (try? String(data: JSONSerialization.data(withJSONObject: dict, options: [.sortedKeys, .withoutEscapingSlashes]), encoding: .utf8)) ?? "{}"
    }
}
