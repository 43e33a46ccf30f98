// Immutable threshold tables: saved once, read back (solving them is `TableService`).
import Foundation
import GRDB

extension SolverParameters {
    /// Canonical JSON (sorted keys) of the LongMamba parameters; part of the content hash.
    public var canonicalJSON: String {
        "{\"aggregation\":\"\(aggregation.rawValue)\",\"clamp_fraction\":\(clampFraction),\"interval\":\(interval),\"max_length\":\(maxLength),\"training_length\":\(trainingLength)}"
    }

    init(canonicalJSON json: String) throws {
        struct P: Decodable { let aggregation: Aggregation; let clamp_fraction: Double; let interval: Int; let max_length: Int; let training_length: Int }
        let p = try JSONDecoder().decode(P.self, from: Data(json.utf8))
        self.init(clampFraction: p.clamp_fraction, aggregation: p.aggregation, interval: p.interval, maxLength: p.max_length, trainingLength: p.training_length)
    }
}

/// A threshold table as users see it: its row, its parameters decoded, and the model and
/// recording representation it came from.
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

extension CalibrationStore {
    /// SHA-256 of the table's content: method, parameters, model fingerprint and every layer's arrays.
    /// Not the created-at time or the id, so the same inputs give the same hash.
    public static func contentHash(method: String, parameters: SolverParameters, modelFingerprint: String, layers: [LayerTable]) -> String {
        var h = TableHasher(method: method, parameters: parameters, modelFingerprint: modelFingerprint)
        for l in layers { h.add(l) }
        return h.finalize()
    }

    /// Adds a table and its layers in one transaction, or returns the table of this run with the
    /// same method, parameters and content hash when one exists (checked in the same
    /// transaction, so two processes solving the same table store it once).
    public func saveTable(run runID: Int64, method: String = CalibrationStore.longMambaMethod, parameters: SolverParameters, layers: [LayerTable]) throws -> Int64 {
        try saveTable(run: runID, method: method, parameters: parameters, layers: layers, failAfterLayers: nil)
    }

    /// `failAfterLayers` stops the transaction part-way (tests of the all-or-nothing write).
    func saveTable(run runID: Int64, method: String, parameters: SolverParameters, layers: [LayerTable], failAfterLayers: Int?) throws -> Int64 {
        let model = try runModel(runID)
        var record = ThresholdTableRecord(
            id: nil, runID: runID, method: method, parametersJSON: parameters.canonicalJSON, clampFraction: parameters.clampFraction,
            aggregation: parameters.aggregation.rawValue, intervalTokens: parameters.interval, maxLength: parameters.maxLength,
            trainingLength: parameters.trainingLength, layerCount: layers.count, lengthCount: parameters.lengths.count,
            contentHash: CalibrationStore.contentHash(method: method, parameters: parameters, modelFingerprint: model.fingerprint, layers: layers),
            toolVersion: ToolInfo.version, schemaVersion: CalibrationStore.schemaVersion, createdAt: CalibrationStore.now())
        return try write { db in
            if let existing = try Int64.fetchOne(db, sql: """
                SELECT id FROM threshold_tables WHERE run_id = ? AND method = ? AND parameters_json = ? AND content_hash = ? ORDER BY id LIMIT 1
                """, arguments: [runID, method, record.parametersJSON, record.contentHash]) {
                return existing
            }
            try record.insert(db)
            let table = record.id!
            for (n, l) in layers.enumerated() {
                if let failAfterLayers, n >= failAfterLayers { throw SimulatedInterruption(afterLayers: n) }
                try TableLayerRecord(table: table, l).insert(db)
            }
            return table
        }
    }

    /// All LongMamba threshold tables, oldest first (scale tables: `scaleTables`; tables of a
    /// method this tool does not know are skipped here and refused when asked for by id).
    public func tables() throws -> [ThresholdTableInfo] {
        try tableKinds().filter { $0.kind == .thresholds }.map { try table($0.id) }
    }

    public func table(_ id: Int64) throws -> ThresholdTableInfo {
        switch try tableKind(id) {
        case .thresholds: break
        case let .scales(method): throw StoreError.notAThresholdTable(path: path, id: id, method: method.rawValue)
        case let .unknown(method, rowKind): throw StoreError.unknownTableMethod(path: path, id: id, method: method, rowKind: rowKind)
        }
        return try read { db in
            guard let t = try ThresholdTableRecord.fetchOne(db, key: id), let run = try CalibrationRunInfo.fetchOne(db, key: t.runID),
                  let model = try ModelInfo.fetchOne(db, key: run.modelID) else { throw StoreError.unknownTable(path: path, id: id) }
            let params = try t.validatedParameters(path: path)
            let encodings = try String.fetchAll(db, sql: "SELECT DISTINCT encoding FROM recordings WHERE run_id = ? ORDER BY encoding", arguments: [t.runID])
            return ThresholdTableInfo(id: id, runID: t.runID, method: t.method, parametersJSON: t.parametersJSON, parameters: params,
                                      layerCount: t.layerCount, lengths: params.lengths, contentHash: t.contentHash,
                                      toolVersion: t.toolVersion, schemaVersion: t.schemaVersion, createdAt: t.createdAt,
                                      modelFingerprint: model.fingerprint, architecture: model.architecture,
                                      recordingRepresentation: encodings.joined(separator: ","))
        }
    }

    /// One layer of a table, checked (the whole table is verified against its content hash the
    /// first time one of its layers is read through this store).
    public func tableLayer(table id: Int64, layer: Int) throws -> LayerTable {
        let info = try table(id)
        try verifyTable(info)
        return try read { db in
            guard let row = try TableLayerRecord.filter(Column("table_id") == id && Column("layer_index") == layer).fetchOne(db) else {
                throw StoreError.missingTableLayer(path: path, table: id, layer: layer)
            }
            return try row.validated(path: path, parameters: info.parameters)
        }
    }

    /// Checks every layer row of a table (present once each, 0 ..< layer_count, consistent with
    /// the model's shape) and its content hash; done once per table and store object.
    func verifyTable(_ info: ThresholdTableInfo) throws {
        if verifiedTables.withLock({ $0.contains(info.id) }) { return }
        let config = try? ModelConfig.parse(Data(try runModel(info.runID).configJSON.utf8), path: "models.config_json")
        if let config, config.layerCount != info.layerCount {
            throw StoreError.invalidRow(path: path, row: "table \(info.id)", column: "layer_count", problem: "\(info.layerCount), but the model has \(config.layerCount) layers")
        }
        let indices = try read { db in   // raw values: a non-integer index is damage, not a trap
            try DatabaseValue.fetchAll(db, sql: "SELECT layer_index FROM table_layers WHERE table_id = ? ORDER BY layer_index", arguments: [info.id])
                .map { Int.fromDatabaseValue($0) ?? -1 }
        }
        guard indices == Array(0..<info.layerCount) else {
            let missing = Set(0..<info.layerCount).subtracting(indices).sorted()
            let problem = missing.isEmpty ? "layer rows \(indices.prefix(8)) are not exactly 0 to \(info.layerCount - 1)" : "layer \(missing[0]) is missing (\(indices.count) layer rows of \(info.layerCount))"
            throw StoreError.invalidRow(path: path, row: "table \(info.id)", column: "table_layers", problem: problem)
        }
        var hasher = TableHasher(method: info.method, parameters: info.parameters, modelFingerprint: info.modelFingerprint)
        for i in 0..<info.layerCount {
            let layer = try read { db in
                try TableLayerRecord.filter(Column("table_id") == info.id && Column("layer_index") == i).fetchOne(db)
            }
            guard let layer else { throw StoreError.missingTableLayer(path: path, table: info.id, layer: i) }
            let l = try layer.validated(path: path, parameters: info.parameters)
            if let config, l.channels != config.channelCount {
                throw StoreError.invalidRow(path: path, row: "table \(info.id) layer \(i)", column: "channel_count", problem: "\(l.channels), but the model's layers have \(config.channelCount) channels")
            }
            hasher.add(l)
        }
        let computed = hasher.finalize()
        guard computed == info.contentHash else { throw StoreError.alteredTable(path: path, table: info.id, stored: info.contentHash, computed: computed) }
        verifiedTables.withLock { _ = $0.insert(info.id) }
    }

    /// Every table metadata field as strings (for exports' `__metadata__`).
    public func tableMetadata(_ id: Int64) throws -> [String: String] {
        let t = try table(id)
        let run = try self.run(t.runID)
        let model = try self.model(run.modelID)
        return [
            "table_id": String(t.id), "method": t.method, "parameters": t.parametersJSON,
            "clamp_fraction": String(t.parameters.clampFraction), "aggregation": t.parameters.aggregation.rawValue,
            "interval": String(t.parameters.interval), "max_length": String(t.parameters.maxLength),
            "training_length": String(t.parameters.trainingLength), "layer_count": String(t.layerCount),
            "length_count": String(t.lengths.count), "content_hash": t.contentHash, "tool": ToolInfo.name,
            "tool_version": t.toolVersion, "schema_version": String(t.schemaVersion), "created_at": t.createdAt,
            "model_fingerprint": model.fingerprint, "architecture": model.architecture, "model_config": model.configJSON,
            "run_id": String(t.runID), "sample_count": String(run.sampleCount), "recorded_length": String(run.sampleLength),
            "calibration_key": run.calibrationKey ?? "",
            "seed": run.seed.map(String.init) ?? "", "tokenizer_hash": run.tokenizerHash ?? "",
            "corpus_provenance": run.corpusProvenanceJSON, "recording_metadata": run.recordingMetadataJSON,
            "recording_representation": t.recordingRepresentation, "run_tool_version": run.toolVersion,
        ]
    }
}
