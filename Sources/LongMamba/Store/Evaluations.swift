// Stored evaluation points (`tune`): one row per (evaluation, table or vanilla, θ, length,
// metric). `evaluation_key` identifies what was evaluated (task, model, text, options); the
// point key adds the table, θ, length and metric, so a rerun finds finished points.
import Foundation
import GRDB

/// `evaluations`: one evaluated point.
public struct EvaluationRecord: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "evaluations"
    /// Tasks and metrics this tool writes (a row with others comes from a newer tool).
    public static let knownTasks: Set<String> = ["perplexity", "passkey"]
    public static let knownMetrics: Set<String> = ["perplexity", "accuracy"]

    public var id: Int64?
    public var pointKey: String
    public var evaluationKey: String
    /// nil: vanilla (no table).
    public var tableID: Int64?
    public var theta: Double?
    public var task: String
    public var length: Int
    public var metric: String
    public var value: Double
    public var detailJSON: String
    /// SHA-256 of the evaluation text's token ids (or of the passkey prompt options).
    public var textHash: String
    public var toolVersion: String
    public var createdAt: String
    /// Where the point was measured: the runner ('swift' | 'torch'), its device ('cpu',
    /// 'cuda:0 (NVIDIA H100 …)') and numeric type. float32 points of either runner share keys;
    /// bfloat16/float16 ones have keys of their own (`EvaluationRecord.evaluationKey`).
    public var backend: String
    public var device: String
    public var dtype: String

    enum CodingKeys: String, CodingKey {
        case id, pointKey = "point_key", evaluationKey = "evaluation_key", tableID = "table_id", theta, task, length, metric, value
        case detailJSON = "detail_json", textHash = "text_hash", toolVersion = "tool_version", createdAt = "created_at"
        case backend, device, dtype
    }

    /// The runner this tool evaluates with.
    public static let swiftBackend = "swift", cpuDevice = "cpu", float32 = "float32"

    /// What was evaluated, as a key: task, model, text (or prompt options), settings, filter
    /// start, and the numeric type where it is not float32 (float32 keys are those of schema v3).
    public static func evaluationKey(task: String, fingerprint: String, textHash: String, settings: String, filterFrom: Int?,
                                     dtype: String = float32) -> String {
        var text = "\(task)|\(fingerprint)|\(textHash)|\(settings)|\(filterFrom.map(String.init) ?? "default")"
        if dtype != float32 { text += "|\(dtype)" }
        return SHA256.hash(data: Data(text.utf8)).hexString
    }
    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }

    public init(evaluationKey: String, tableID: Int64?, theta: Double?, task: String, length: Int, metric: String, value: Double,
                detailJSON: String = "{}", textHash: String) {
        self.evaluationKey = evaluationKey; self.tableID = tableID; self.theta = theta; self.task = task; self.length = length
        self.metric = metric; self.value = value; self.detailJSON = detailJSON; self.textHash = textHash
        pointKey = Self.pointKey(evaluationKey: evaluationKey, tableID: tableID, theta: theta, length: length, metric: metric)
        toolVersion = ToolInfo.version; createdAt = CalibrationStore.now()
        backend = Self.swiftBackend; device = Self.cpuDevice; dtype = Self.float32
    }

    public static func pointKey(evaluationKey: String, tableID: Int64?, theta: Double?, length: Int, metric: String) -> String {
        let text = "\(evaluationKey)|\(tableID.map(String.init) ?? "vanilla")|\(theta.map { "\($0)" } ?? "-")|\(length)|\(metric)"
        return SHA256.hash(data: Data(text.utf8)).hexString
    }
}

extension CalibrationStore {
    /// Stores one point (a point already stored is left as it is).
    public func saveEvaluation(_ record: EvaluationRecord) throws {
        var r = record
        try write { db in try r.insert(db, onConflict: .ignore) }  // point_key is UNIQUE
    }

    /// The stored point with this key, if any.
    public func evaluation(pointKey: String) throws -> EvaluationRecord? {
        try read { db in try EvaluationRecord.filter(Column("point_key") == pointKey).fetchOne(db) }
    }

    /// Every stored point, oldest first; refuses rows of tasks or metrics this tool does not know.
    public func evaluations(evaluationKey: String? = nil) throws -> [EvaluationRecord] {
        let rows = try read { db in
            var q = EvaluationRecord.order(Column("id"))
            if let evaluationKey { q = q.filter(Column("evaluation_key") == evaluationKey) }
            return try q.fetchAll(db)
        }
        for r in rows where !EvaluationRecord.knownTasks.contains(r.task) || !EvaluationRecord.knownMetrics.contains(r.metric) {
            throw StoreError.unknownEvaluation(path: path, id: r.id ?? 0, task: r.task, metric: r.metric, toolVersion: r.toolVersion)
        }
        return rows
    }
}

/// What joining another store's evaluation points added.
public struct EvaluationJoin: Sendable, Equatable {
    /// Points new to the target.
    public var added = 0
    /// Points the target already had with the same value.
    public var present = 0
    /// Points the target already had with another value (kept as they were; e.g. measured twice
    /// in bfloat16 on different GPUs).
    public var differing = 0
    public init() {}
}

extension CalibrationStore {
    /// Joins the evaluation points of `source` (e.g. the copy a `tune --shard i/n` wrote into):
    /// each point's table is found here by its content hash and the point key recomputed with
    /// this store's table id. All of `source`'s points or none (one transaction); a point whose
    /// table this store lacks, or whose key its columns do not give, refuses the join.
    public func joinEvaluations(from source: CalibrationStore) throws -> EvaluationJoin {
        let points = try source.evaluations()
        guard !points.isEmpty else { return EvaluationJoin() }
        var hashOf: [Int64: String] = [:]
        for t in try source.tables() { hashOf[t.id] = t.contentHash }
        var idOf: [String: Int64] = [:]
        for t in try tables() where idOf[t.contentHash] == nil { idOf[t.contentHash] = t.id }
        var joined: [EvaluationRecord] = []
        for p in points {
            let id = p.id ?? 0
            guard p.pointKey == EvaluationRecord.pointKey(evaluationKey: p.evaluationKey, tableID: p.tableID, theta: p.theta, length: p.length, metric: p.metric) else {
                throw StoreError.evaluationKeyMismatch(path: source.path, id: id)
            }
            var r = p
            r.id = nil
            if let table = p.tableID {
                guard let hash = hashOf[table], let mine = idOf[hash] else {
                    throw StoreError.evaluationOfMissingTable(source: source.path, id: id, table: table, contentHash: hashOf[table] ?? "unknown", target: path)
                }
                r.tableID = mine
                r.pointKey = EvaluationRecord.pointKey(evaluationKey: p.evaluationKey, tableID: mine, theta: p.theta, length: p.length, metric: p.metric)
            }
            joined.append(r)
        }
        return try write { db in
            var result = EvaluationJoin()
            for var r in joined {
                if let existing = try EvaluationRecord.filter(Column("point_key") == r.pointKey).fetchOne(db) {
                    if existing.value == r.value || (existing.value.isNaN && r.value.isNaN) { result.present += 1 } else { result.differing += 1 }
                } else {
                    try r.insert(db)
                    result.added += 1
                }
            }
            return result
        }
    }
}
