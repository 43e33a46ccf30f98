// Per-layer scale tables (delta_scale, a_power) and the SPSA calibration that makes them
// (docs/store-format.md "Scale tables (v5)"). The store persists: SPSA is `ScaleCalibration`.
import Foundation
import GRDB

/// Where a table's rows are: per channel (`table_layers`) or per layer (`table_scales`).
public enum TableRowKind: String, Sendable, Codable {
    case perChannel = "per_channel"
    case perLayer = "per_layer"
}

/// What a stored table is, as far as this tool can tell.
public enum StoredTableKind: Sendable, Equatable {
    /// LongMamba's per-channel Δ thresholds (every `--method` mode applies them).
    case thresholds
    /// One scale per layer and calibrated length.
    case scales(ScaleMethod)
    /// A method this tool does not know (a newer tool's table): refused, and left in the store.
    case unknown(method: String, rowKind: String)
}

/// The SPSA settings and data a scale table was calibrated with; its canonical JSON is part
/// of the table's content hash.
public struct ScaleTableParameters: Sendable, Equatable, Codable {
    /// The calibrated lengths S, increasing.
    public var lengths: [Int]
    /// c: the perturbation's size in log-scale space at step 1.
    public var perturbation: Double
    /// K: samples per loss evaluation.
    public var sampleCount: Int
    /// SHA-256 of the samples' token ids (i32 little-endian, in sample order).
    public var samplesHash: String
    public var seed: UInt64
    /// A: the step-size schedule's stability constant.
    public var stability: Int
    /// a: the step size at step 1 (before the stability constant).
    public var stepSize: Double
    /// SPSA steps per length.
    public var steps: Int
    /// L of the run the samples came from (the filter start default is 1.5 × L).
    public var trainingLength: Int

    enum CodingKeys: String, CodingKey {
        case lengths, perturbation, sampleCount = "sample_count", samplesHash = "samples_hash", seed, stability
        case stepSize = "step_size", steps, trainingLength = "training_length"
    }

    public init(lengths: [Int], perturbation: Double, sampleCount: Int, samplesHash: String, seed: UInt64, stability: Int,
                stepSize: Double, steps: Int, trainingLength: Int) {
        self.lengths = lengths; self.perturbation = perturbation; self.sampleCount = sampleCount; self.samplesHash = samplesHash
        self.seed = seed; self.stability = stability; self.stepSize = stepSize; self.steps = steps; self.trainingLength = trainingLength
    }

    /// Canonical JSON: keys sorted, no spaces, numbers in their shortest round-trip form.
    public var canonicalJSON: String {
        "{\"lengths\":\(JSONText.array(lengths)),\"perturbation\":\(perturbation),\"sample_count\":\(sampleCount),"
            + "\"samples_hash\":\"\(samplesHash)\",\"seed\":\(seed),\"stability\":\(stability),\"step_size\":\(stepSize),"
            + "\"steps\":\(steps),\"training_length\":\(trainingLength)}"
    }

    /// Checks the values a table can be applied with.
    func problem() -> String? {
        if lengths.isEmpty { return "no calibrated lengths" }
        if zip(lengths, lengths.dropFirst()).contains(where: { $0 >= $1 }) || lengths[0] < 2 { return "lengths \(lengths) are not increasing lengths ≥ 2" }
        if !(perturbation > 0 && perturbation.isFinite) { return "perturbation \(perturbation) is not > 0" }
        if !(stepSize > 0 && stepSize.isFinite) { return "step_size \(stepSize) is not > 0" }
        if sampleCount < 1 || steps < 0 || stability < 0 || trainingLength < 1 { return "sample_count, steps, stability or training_length out of range" }
        return nil
    }
}

/// A scale table as users see it.
public struct ScaleTableInfo: Sendable, Equatable {
    public let id: Int64
    public let runID: Int64
    public let method: ScaleMethod
    public let parametersJSON: String
    public let parameters: ScaleTableParameters
    public let layerCount: Int
    public var lengths: [Int] { parameters.lengths }
    public let contentHash: String
    public let toolVersion: String
    public let createdAt: String
    public let modelFingerprint: String
    public let architecture: String
}

/// `table_scales`: one layer's scales at every calibrated length.
struct ScaleLayerRecord: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "table_scales"
    var tableID: Int64
    var layerIndex: Int
    var lengthCount: Int
    var lengths: Data     // i64 [T]
    var scales: Data      // f32 [T]
    enum CodingKeys: String, CodingKey {
        case tableID = "table_id", layerIndex = "layer_index", lengthCount = "length_count", lengths = "lengths_i64", scales = "scales_f32"
    }
}

/// `scale_jobs`: one SPSA calibration, its parameters and samples.
public struct ScaleJobRecord: Codable, Sendable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "scale_jobs"
    public var id: Int64?
    public var jobKey: String
    public var runID: Int64
    public var method: String
    public var parametersJSON: String
    public var sampleCount: Int
    public var sampleLength: Int
    var tokenIDs: Data    // i32 [K, sample_length]
    public var tableID: Int64?
    var createdAt: String
    enum CodingKeys: String, CodingKey {
        case id, jobKey = "job_key", runID = "run_id", method, parametersJSON = "parameters_json", sampleCount = "sample_count"
        case sampleLength = "sample_length", tokenIDs = "token_ids_i32", tableID = "table_id", createdAt = "created_at"
    }
    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }

    /// The samples: [K][sample_length].
    public var samples: [[Int]] {
        let all = [Int32](littleEndianData: tokenIDs).map(Int.init)
        guard sampleLength > 0 else { return [] }
        return stride(from: 0, to: all.count, by: sampleLength).map { Array(all[$0..<min(all.count, $0 + sampleLength)]) }
    }
}

/// `scale_steps`: one committed SPSA step.
public struct ScaleStepRecord: Codable, Sendable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "scale_steps"
    public var jobID: Int64
    public var length: Int
    public var step: Int
    var logScalesData: Data
    public var lossPlus: Double?
    public var lossMinus: Double?
    public var bestLoss: Double
    var bestLogScalesData: Data
    public var outcome: String
    public var backend = "swift"
    public var device = "cpu"
    public var dtype = "float32"
    var createdAt: String
    enum CodingKeys: String, CodingKey {
        case jobID = "job_id", length, step, logScalesData = "log_scales_f32", lossPlus = "loss_plus", lossMinus = "loss_minus"
        case bestLoss = "best_loss", bestLogScalesData = "best_log_scales_f32", outcome, backend, device, dtype, createdAt = "created_at"
    }

    public init(job: Int64, length: Int, step: Int, logScales: [Float], lossPlus: Double?, lossMinus: Double?, bestLoss: Double,
                bestLogScales: [Float], outcome: String) {
        jobID = job; self.length = length; self.step = step; logScalesData = logScales.littleEndianData
        self.lossPlus = lossPlus; self.lossMinus = lossMinus; self.bestLoss = bestLoss; bestLogScalesData = bestLogScales.littleEndianData
        self.outcome = outcome; createdAt = CalibrationStore.now()
    }
    /// u after this step: [layers]
    public var logScales: [Float] { [Float](littleEndianData: logScalesData) }
    /// The best point evaluated so far at this length: [layers]
    public var bestLogScales: [Float] { [Float](littleEndianData: bestLogScalesData) }
}

/// SHA-256 of a scale table's content (docs/store-format.md "Scale tables (v5)").
struct ScaleTableHasher {
    private var h = SHA256()
    init(method: String, parametersJSON: String, modelFingerprint: String) {
        add(method); add(parametersJSON); add(modelFingerprint)
    }
    private mutating func add(_ s: String) { h.update(data: Data(s.utf8)); h.update(data: Data([0])) }
    mutating func add(layer: Int, lengths: Data, scales: Data) {
        add("layer \(layer) scales")
        h.update(data: lengths); h.update(data: scales)
    }
    func finalize() -> String { h.finalize().hexString }
}

extension CalibrationStore {
    /// What table `id` is (thresholds, scales, or a method this tool does not know).
    public func tableKind(_ id: Int64) throws -> StoredTableKind {
        let row = try read { db in try Row.fetchOne(db, sql: "SELECT method, row_kind FROM threshold_tables WHERE id = ?", arguments: [id]) }
        guard let row, let method = String.fromDatabaseValue(row["method"] as DatabaseValue),
              let kind = String.fromDatabaseValue(row["row_kind"] as DatabaseValue) else { throw StoreError.unknownTable(path: path, id: id) }
        if method == CalibrationStore.longMambaMethod && kind == TableRowKind.perChannel.rawValue { return .thresholds }
        if let m = ScaleMethod(rawValue: method), kind == TableRowKind.perLayer.rawValue { return .scales(m) }
        return .unknown(method: method, rowKind: kind)
    }

    /// Every table id with its kind, oldest first (a table of an unknown method is listed, not read).
    public func tableKinds() throws -> [(id: Int64, kind: StoredTableKind)] {
        let ids = try read { db in try Int64.fetchAll(db, sql: "SELECT id FROM threshold_tables ORDER BY id") }
        return try ids.map { ($0, try tableKind($0)) }
    }

    /// Saves a scale table and its layers in one transaction, or returns the run's table with the
    /// same method, parameters and content hash when one exists. `scales`: [layers][T].
    public func saveScaleTable(run runID: Int64, method: ScaleMethod, parameters: ScaleTableParameters, scales: [[Float]]) throws -> Int64 {
        if let problem = parameters.problem() { throw StoreError.invalidScaleTable(path: path, problem: problem) }
        for (l, row) in scales.enumerated() {
            guard row.count == parameters.lengths.count else {
                throw StoreError.invalidScaleTable(path: path, problem: "layer \(l) has \(row.count) scales for \(parameters.lengths.count) lengths")
            }
            if let bad = row.first(where: { !($0 > 0 && $0.isFinite) }) {
                throw StoreError.invalidScaleTable(path: path, problem: "layer \(l) has the scale \(bad) (scales are finite and > 0)")
            }
        }
        let model = try runModel(runID)
        let json = parameters.canonicalJSON
        let lengths = parameters.lengths.map { Int64($0) }.littleEndianData
        var hasher = ScaleTableHasher(method: method.rawValue, parametersJSON: json, modelFingerprint: model.fingerprint)
        for (l, row) in scales.enumerated() { hasher.add(layer: l, lengths: lengths, scales: row.littleEndianData) }
        var record = ThresholdTableRecord(
            id: nil, runID: runID, method: method.rawValue, parametersJSON: json, clampFraction: nil, aggregation: nil, intervalTokens: nil,
            maxLength: nil, trainingLength: parameters.trainingLength, layerCount: scales.count, lengthCount: parameters.lengths.count,
            contentHash: hasher.finalize(), toolVersion: ToolInfo.version, schemaVersion: CalibrationStore.schemaVersion,
            createdAt: CalibrationStore.now(), rowKind: TableRowKind.perLayer.rawValue)
        return try write { db in
            if let existing = try Int64.fetchOne(db, sql: """
                SELECT id FROM threshold_tables WHERE run_id = ? AND method = ? AND parameters_json = ? AND content_hash = ? ORDER BY id LIMIT 1
                """, arguments: [runID, method.rawValue, json, record.contentHash]) {
                return existing
            }
            try record.insert(db)
            for (l, row) in scales.enumerated() {
                try ScaleLayerRecord(tableID: record.id!, layerIndex: l, lengthCount: row.count, lengths: lengths, scales: row.littleEndianData).insert(db)
            }
            return record.id!
        }
    }

    /// A scale table's row, checked (and its content hash verified once per store object).
    public func scaleTable(_ id: Int64) throws -> ScaleTableInfo {
        let info = try scaleTableRow(id)
        if !verifiedTables.withLock({ $0.contains(id) }) { _ = try readScales(info) }
        return info
    }

    /// Every layer's scales at every calibrated length: [layers][T], checked against the hash.
    public func scales(table id: Int64) throws -> [[Float]] {
        try readScales(try scaleTableRow(id))
    }

    /// The `threshold_tables` row of a scale table with its parameters, checked (not its layers).
    private func scaleTableRow(_ id: Int64) throws -> ScaleTableInfo {
        switch try tableKind(id) {
        case .scales: break
        case .thresholds: throw StoreError.notAScaleTable(path: path, id: id, kind: "a LongMamba threshold table")
        case let .unknown(method, rowKind): throw StoreError.unknownTableMethod(path: path, id: id, method: method, rowKind: rowKind)
        }
        return try read { db in
            guard let t = try ThresholdTableRecord.fetchOne(db, key: id), let run = try CalibrationRunInfo.fetchOne(db, key: t.runID),
                  let model = try ModelInfo.fetchOne(db, key: run.modelID), let method = ScaleMethod(rawValue: t.method) else {
                throw StoreError.unknownTable(path: path, id: id)
            }
            func bad(_ column: String, _ problem: String) -> StoreError { .invalidRow(path: path, row: "table \(id)", column: column, problem: problem) }
            let p: ScaleTableParameters
            do { p = try JSONDecoder().decode(ScaleTableParameters.self, from: Data(t.parametersJSON.utf8)) } catch {
                throw bad("parameters_json", "not the scale parameters object {lengths, perturbation, sample_count, samples_hash, seed, stability, step_size, steps, training_length}: \(SystemMessage.of(error))")
            }
            if let problem = p.problem() { throw bad("parameters_json", problem) }
            guard p.canonicalJSON == t.parametersJSON else { throw bad("parameters_json", "not in canonical form") }
            guard t.lengthCount == p.lengths.count else { throw bad("length_count", "\(t.lengthCount), but parameters_json has \(p.lengths.count) lengths") }
            guard t.trainingLength == nil || t.trainingLength == p.trainingLength else { throw bad("training_length", "disagrees with parameters_json") }
            guard t.layerCount >= 1, t.layerCount <= 1 << 16 else { throw bad("layer_count", "\(t.layerCount) is not a layer count") }
            return ScaleTableInfo(id: id, runID: t.runID, method: method, parametersJSON: t.parametersJSON, parameters: p, layerCount: t.layerCount,
                                  contentHash: t.contentHash, toolVersion: t.toolVersion, createdAt: t.createdAt,
                                  modelFingerprint: model.fingerprint, architecture: model.architecture)
        }
    }

    /// Reads every layer's scales and verifies the content hash (and remembers that it did).
    private func readScales(_ info: ScaleTableInfo) throws -> [[Float]] {
        let rows = try read { db in
            try ScaleLayerRecord.filter(Column("table_id") == info.id).order(Column("layer_index")).fetchAll(db)
        }
        guard rows.map(\.layerIndex) == Array(0..<info.layerCount) else {
            throw StoreError.invalidRow(path: path, row: "table \(info.id)", column: "table_scales",
                                        problem: "\(rows.count) layer rows, expected exactly 0 to \(info.layerCount - 1)")
        }
        let T = info.lengths.count
        let lengths = info.lengths.map { Int64($0) }.littleEndianData
        var hasher = ScaleTableHasher(method: info.method.rawValue, parametersJSON: info.parametersJSON, modelFingerprint: info.modelFingerprint)
        let scales = try rows.map { r -> [Float] in
            func bad(_ column: String, _ problem: String) -> StoreError { .invalidRow(path: path, row: "table \(info.id) layer \(r.layerIndex)", column: column, problem: problem) }
            guard r.lengthCount == T else { throw bad("length_count", "\(r.lengthCount), but the table has \(T) lengths") }
            guard r.lengths == lengths else { throw bad("lengths_i64", "not the table's lengths \(info.lengths)") }
            guard r.scales.count == 4 * T else { throw bad("scales_f32", "holds \(r.scales.count) bytes, expected \(4 * T) (T=\(T) × 4)") }
            let s = [Float](littleEndianData: r.scales)
            if let v = s.first(where: { !($0 > 0 && $0.isFinite) }) { throw bad("scales_f32", "holds \(v); scales are finite and > 0") }
            hasher.add(layer: r.layerIndex, lengths: r.lengths, scales: r.scales)
            return s
        }
        let computed = hasher.finalize()
        guard computed == info.contentHash else { throw StoreError.alteredTable(path: path, table: info.id, stored: info.contentHash, computed: computed) }
        verifiedTables.withLock { _ = $0.insert(info.id) }
        return scales
    }

    /// Every scale table, oldest first (optionally of one run and method).
    public func scaleTables(run: Int64? = nil, method: ScaleMethod? = nil) throws -> [ScaleTableInfo] {
        try tableKinds().compactMap { t -> ScaleTableInfo? in
            guard case let .scales(m) = t.kind, method == nil || m == method else { return nil }
            let info = try scaleTable(t.id)
            return run == nil || info.runID == run ? info : nil
        }
    }

    // MARK: SPSA jobs and steps

    /// The job with this key, or a new one with these samples (one transaction: two processes
    /// starting the same job share it).
    public func scaleJob(run runID: Int64, method: ScaleMethod, parameters: ScaleTableParameters, samples: [[Int]]) throws -> ScaleJobRecord {
        let json = parameters.canonicalJSON
        let key = SHA256.hash(data: Data("\(runID)|\(method.rawValue)|\(json)".utf8)).hexString
        return try write { db in
            if let existing = try ScaleJobRecord.filter(Column("job_key") == key).fetchOne(db) { return existing }
            let length = samples.first?.count ?? 0
            var job = ScaleJobRecord(id: nil, jobKey: key, runID: runID, method: method.rawValue, parametersJSON: json, sampleCount: samples.count,
                                     sampleLength: length, tokenIDs: samples.flatMap { $0.map { Int32(truncatingIfNeeded: $0) } }.littleEndianData,
                                     tableID: nil, createdAt: CalibrationStore.now())
            try job.insert(db)
            return job
        }
    }

    public func scaleJob(_ id: Int64) throws -> ScaleJobRecord {
        guard let job = try read({ db in try ScaleJobRecord.fetchOne(db, key: id) }) else { throw StoreError.unknownScaleJob(path: path, id: id) }
        return job
    }

    /// The job's committed steps at one length, in order.
    public func scaleSteps(job: Int64, length: Int) throws -> [ScaleStepRecord] {
        try read { db in try ScaleStepRecord.filter(Column("job_id") == job && Column("length") == length).order(Column("step")).fetchAll(db) }
    }

    /// Commits one step and returns the step as stored: a step another process stored first is
    /// left as it is and returned instead.
    @discardableResult
    public func appendScaleStep(_ step: ScaleStepRecord) throws -> ScaleStepRecord {
        try write { db in
            try step.insert(db, onConflict: .ignore)
            return try ScaleStepRecord.filter(Column("job_id") == step.jobID && Column("length") == step.length && Column("step") == step.step)
                .fetchOne(db) ?? step
        }
    }

    /// Saves the finished job's table and links it to the job.
    public func finishScaleJob(_ job: ScaleJobRecord, parameters: ScaleTableParameters, scales: [[Float]]) throws -> Int64 {
        guard let method = ScaleMethod(rawValue: job.method), let jobID = job.id else { throw StoreError.unknownScaleJob(path: path, id: job.id ?? 0) }
        let table = try saveScaleTable(run: job.runID, method: method, parameters: parameters, scales: scales)
        try write { db in try db.execute(sql: "UPDATE scale_jobs SET table_id = ? WHERE id = ?", arguments: [table, jobID]) }
        return table
    }
}
