// Why the store refused an operation. Every case names the database file; the message says what
// to do, and a refused write never leaves a partial run, sample or table behind.

public enum StoreError: Error, CustomStringConvertible, Sendable, Equatable {
    // Opening and SQLite failures.
    case noSuchDatabase(path: String)
    case newerSchema(path: String, found: Int, supported: Int)
    case olderSchema(path: String, found: Int, current: Int)
    case readOnly(path: String)
    case locked(path: String)
    case diskFull(path: String)
    case notADatabase(path: String, detail: String)
    /// A valid SQLite file without longmamba's schema: empty, or another application's tables.
    case noLongMambaSchema(path: String, foreignTables: [String])
    case database(path: String, detail: String)
    // Rows that do not exist.
    case unknownTable(path: String, id: Int64)
    case unknownRun(path: String, id: Int64)
    case unknownModel(path: String, id: Int64)
    case missingTableLayer(path: String, table: Int64, layer: Int)
    case noSuchRecording(path: String, run: Int64, sample: Int, layer: Int)
    // Rows altered outside the tool (RowValidation.swift).
    /// A row that cannot be what the tool wrote: `row` ("table 3 layer 0"), the column, what is wrong.
    case invalidRow(path: String, row: String, column: String, problem: String)
    /// A table whose rows no longer give its content hash.
    case alteredTable(path: String, table: Int64, stored: String, computed: String)
    /// A recording whose bytes no longer give its content hash.
    case alteredRecording(path: String, run: Int64, sample: Int, layer: Int)
    /// A row SQLite returns but whose columns have the wrong types (`detail`: the decoder's words).
    case damagedRow(path: String, detail: String)
    // Runs and their recordings.
    case noRecordingFiles
    case invalidRunShape(sampleCount: Int, sampleLength: Int, layerCount: Int)
    case sampleCountMismatch(path: String, sequences: Int, sampleCount: Int)
    case runNotComplete(path: String, run: Int64, status: RunStatus)
    case runNotRecording(path: String, run: Int64, status: RunStatus)
    case sampleOutOfRange(path: String, run: Int64, sample: Int, layer: Int, sampleCount: Int, layerCount: Int)
    case sampleLengthMismatch(path: String, run: Int64, sample: Int, layer: Int, expected: Int, found: Int)
    case incompleteRecordings(path: String, run: Int64, stored: Int, expected: Int)
    case missingSamples(path: String, run: Int64, layer: Int, stored: Int, expected: Int)
    case recordingDiffers(source: String, target: String, sample: Int, layer: Int)
    /// The database already holds a run of another calibration (refused atomically).
    case otherCalibration(path: String, run: Int64, existing: String?)
    // Evaluations.
    case unknownEvaluation(path: String, id: Int64, task: String, metric: String, toolVersion: String)
    /// `merge`: a point of `source` evaluated a table that `target` does not hold (same content hash).
    case evaluationOfMissingTable(source: String, id: Int64, table: Int64, contentHash: String, target: String)
    /// `merge`: a point whose point_key is not the one its own columns give (another key rule, or altered).
    case evaluationKeyMismatch(path: String, id: Int64)
    // Scale tables (v5).
    /// A table of a method this tool does not know (a newer tool's): refused, left in the store.
    case unknownTableMethod(path: String, id: Int64, method: String, rowKind: String)
    /// A scale table where a threshold table is needed, or the reverse.
    case notAThresholdTable(path: String, id: Int64, method: String)
    case notAScaleTable(path: String, id: Int64, kind: String)
    case invalidScaleTable(path: String, problem: String)
    case unknownScaleJob(path: String, id: Int64)

    public var description: String {
        switch self {
        case let .noSuchDatabase(path):
            return "\(path): no such database (create one with `longmamba calibrate --model DIR --corpus FILE --db \(path)`)"
        case let .newerSchema(path, found, supported):
            return "\(path): written by a newer longmamba (schema version \(found); this tool understands up to \(supported)). Upgrade longmamba; the database was not modified."
        case let .olderSchema(path, found, current):
            return "\(path): schema version \(found), older than this tool's \(current); a read-only open does not migrate. Run `longmamba migrate --db \(path)` once (the data is kept)."
        case let .readOnly(path): return "\(path): the database is read-only (file permissions or a read-only mount); nothing was written"
        case let .locked(path): return "\(path): the database is locked by another writer; retry when it has finished (nothing was written)"
        case let .diskFull(path): return "\(path): disk full while writing; this write was rolled back and everything committed before it is kept. Free space and rerun the same command to continue."
        case let .notADatabase(path, detail): return "\(path): not a longmamba SQLite database (\(detail))"
        case let .noLongMambaSchema(path, tables):
            if tables.isEmpty {
                return "\(path): the file holds no longmamba schema (an empty database); check the path, or create a store with `longmamba calibrate --db \(path) …`"
            }
            let shown = tables.prefix(5).joined(separator: ", ") + (tables.count > 5 ? ", …" : "")
            return "\(path): the file holds no longmamba schema but another application's tables (\(shown)); nothing was written. Use another path."
        case let .database(path, detail): return "\(path): \(detail)"
        case let .unknownTableMethod(path, id, method, rowKind):
            return "\(path): table \(id) has the method '\(method)' (\(rowKind) rows), which this tool does not know; written by a newer tool? Upgrade longmamba to use it; it was left in the store."
        case let .notAThresholdTable(path, id, method):
            return "\(path): table \(id) holds \(method) scales (one per layer), not LongMamba Δ thresholds; θ, --method and the per-channel outputs do not apply to it"
        case let .notAScaleTable(path, id, kind):
            return "\(path): table \(id) is \(kind), not a per-layer scale table"
        case let .invalidScaleTable(path, problem):
            return "\(path): not a valid scale table: \(problem); nothing was written"
        case let .unknownScaleJob(path, id):
            return "\(path): no scale calibration job with id \(id) (`longmamba calibrate-scales` prints the job it uses)"
        case let .unknownTable(path, id): return "\(path): no threshold table with id \(id) (list them with `longmamba tables --db \(path)`)"
        case let .unknownRun(path, id): return "\(path): no calibration run with id \(id)"
        case let .unknownModel(path, id): return "\(path): no model with id \(id)"
        case let .missingTableLayer(path, table, layer): return "\(path): table \(table) has no layer \(layer)"
        case let .noSuchRecording(path, run, sample, layer): return "\(path): run \(run) has no recording of sample \(sample), layer \(layer)"
        case let .invalidRow(path, row, column, problem):
            return "\(path): \(row): \(column) \(problem); the store was altered outside longmamba (check it with `longmamba check --db \(path)`)"
        case let .alteredTable(path, table, stored, computed):
            return "\(path): table \(table): its rows give content hash \(computed.prefix(12)), not the \(stored.prefix(12)) it was written with: the store was altered after the table was written (`longmamba check --db \(path)` lists what is damaged)"
        case let .alteredRecording(path, run, sample, layer):
            return "\(path): run \(run) sample \(sample) layer \(layer): the recording's bytes do not give its content hash: the store was altered after it was written"
        case let .damagedRow(path, detail):
            return "\(path): a row has a column of the wrong type (\(detail)); the store was altered outside longmamba (check it with `longmamba check --db \(path)`)"
        case .noRecordingFiles: return "no recording files given"
        case let .invalidRunShape(K, L, layers):
            return "a run needs K ≥ 1 samples, L ≥ 1 tokens and ≥ 1 layer (got K = \(K), L = \(L), layers = \(layers))"
        case let .sampleCountMismatch(path, sequences, K):
            return "\(path): a run of K = \(K) samples was given \(sequences) sampled sequences"
        case let .runNotComplete(path, run, status):
            return "\(path): run \(run) has status '\(status.rawValue)'; only complete runs can be solved"
        case let .runNotRecording(path, run, status): return "\(path): run \(run) is '\(status.rawValue)', not recording"
        case let .sampleOutOfRange(path, run, sample, layer, K, layers):
            return "\(path): run \(run) has samples 0 to \(K - 1) and layers 0 to \(layers - 1); got sample \(sample) layer \(layer)"
        case let .sampleLengthMismatch(path, run, sample, layer, expected, found):
            return "\(path): run \(run) records L = \(expected) tokens; sample \(sample) layer \(layer) has \(found)"
        case let .incompleteRecordings(path, run, stored, expected):
            return "\(path): run \(run) has \(stored) of \(expected) (sample, layer) recordings; cannot mark it complete"
        case let .missingSamples(path, run, layer, stored, expected):
            return "\(path): run \(run) layer \(layer) has \(stored) stored samples, expected \(expected)"
        case let .unknownEvaluation(path, id, task, metric, toolVersion):
            return "\(path): evaluation row \(id) has task '\(task)' and metric '\(metric)', written by longmamba \(toolVersion), which this tool does not know; upgrade longmamba (nothing was changed)"
        case let .evaluationOfMissingTable(source, id, table, hash, target):
            return "\(source): evaluation row \(id) measured table \(table) (content hash \(hash.prefix(12))), which \(target) does not hold; merge the calibration or solve that table in \(target) first (nothing was joined from \(source))"
        case let .evaluationKeyMismatch(path, id):
            return "\(path): evaluation row \(id) has a point_key that its own columns do not give (written by another key rule, or altered outside longmamba); nothing was joined from \(path)"
        case let .otherCalibration(path, run, existing):
            return "\(path) already holds calibration run \(run) with other inputs (\(existing ?? "imported recordings"))"
        case let .recordingDiffers(source, target, sample, layer):
            return "\(source): sample \(sample) layer \(layer) differs from the one already in \(target) (different model build or inputs?)"
        }
    }
}

/// A write stopped on purpose part-way (tests of the all-or-nothing transactions only).
struct SimulatedInterruption: Error, Equatable {
    let afterLayers: Int
}
