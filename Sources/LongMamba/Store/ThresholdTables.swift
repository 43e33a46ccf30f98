// Solving from stored recordings into new immutable tables, and reading tables back.
import Crypto
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

extension Array where Element: BitwiseCopyable {
    var littleEndianData: Data { withUnsafeBytes { Data($0) } }
    init(littleEndianData data: Data) {
        let n = data.count / MemoryLayout<Element>.stride
        self = [Element](unsafeUninitializedCapacity: n) { buf, count in
            _ = data.copyBytes(to: UnsafeMutableRawBufferPointer(buf))
            count = n
        }
    }
}

extension CalibrationStore {
    /// Solves a stored run into a new table (steps 3-5) and returns its id.
    /// `trainingLength` nil uses the run's recorded length L.
    public func solve(run runID: Int64, clampFraction: Double, aggregation: Aggregation, interval: Int = 1000, maxLength: Int = 256_000,
                      trainingLength: Int? = nil, method: SolverMethod = .fast) throws -> Int64 {
        let run = try self.run(runID)
        guard run.status == "complete" else {
            throw StoreError.invalid("\(path): run \(runID) has status '\(run.status)'; only complete runs can be solved")
        }
        let params = SolverParameters(clampFraction: clampFraction, aggregation: aggregation, interval: interval, maxLength: maxLength,
                                      trainingLength: trainingLength ?? run.trainingLength)
        try params.validate()
        var layers: [LayerTable] = []
        for i in 0..<run.layerCount {
            let samples = try layerSamples(run: runID, layer: i)
            guard samples.count == run.sampleCount else {
                throw StoreError.invalid("\(path): run \(runID) layer \(i) has \(samples.count) stored samples, expected \(run.sampleCount)")
            }
            layers.append(try DeltaThresholdSolver.solveLayer(samples: samples, parameters: params, method: method))
        }
        return try saveTable(run: runID, parameters: params, layers: layers)
    }

    /// SHA-256 of the table's content: method, parameters, model fingerprint and every layer's arrays.
    /// Not the created-at time or the id, so the same inputs give the same hash.
    public static func contentHash(method: String, parameters: SolverParameters, modelFingerprint: String, layers: [LayerTable]) -> String {
        var h = SHA256()
        func add(_ s: String) { h.update(data: Data(s.utf8)); h.update(data: Data([0])) }
        add(method); add(parameters.canonicalJSON); add(modelFingerprint)
        for l in layers {
            add("layer \(l.layer) channels \(l.channels) A \(l.aShape)")
            h.update(data: l.lengths.map { Int64($0) }.littleEndianData)
            for a in [l.deltaThreshold, l.keptFraction, l.decayBudget, l.cumulativeDecay, l.A] { h.update(data: a.littleEndianData) }
        }
        return hex(h.finalize())
    }

    /// Adds a table and its layers in one transaction. `failAfterLayers` simulates an interruption (tests).
    public func saveTable(run runID: Int64, method: String = CalibrationStore.longMambaMethod, parameters: SolverParameters, layers: [LayerTable], failAfterLayers: Int? = nil) throws -> Int64 {
        let run = try self.run(runID)
        let model = try self.model(run.modelID)
        let hash = CalibrationStore.contentHash(method: method, parameters: parameters, modelFingerprint: model.fingerprint, layers: layers)
        return try write { db in
            try db.execute(sql: """
                INSERT INTO threshold_tables (run_id, method, parameters_json, clamp_fraction, aggregation, interval_tokens, max_length,
                    training_length, layer_count, length_count, content_hash, tool_version, schema_version, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [runID, method, parameters.canonicalJSON, parameters.clampFraction, parameters.aggregation.rawValue,
                                 parameters.interval, parameters.maxLength, parameters.trainingLength, layers.count,
                                 parameters.lengths.count, hash, ToolInfo.version, CalibrationStore.schemaVersion, CalibrationStore.now()])
            let table = db.lastInsertedRowID
            for (n, l) in layers.enumerated() {
                if let failAfterLayers, n >= failAfterLayers { throw StoreError.invalid("simulated interruption after \(n) layers") }
                try db.execute(sql: """
                    INSERT INTO table_layers (table_id, layer_index, channel_count, length_count, lengths_i64, delta_thresholds_f32,
                        kept_fractions_f32, decay_budgets_f32, cumulative_decays_f32, a_values_f32, a_shape_json)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [table, l.layer, l.channels, l.lengths.count, l.lengths.map { Int64($0) }.littleEndianData,
                                     l.deltaThreshold.littleEndianData, l.keptFraction.littleEndianData, l.decayBudget.littleEndianData,
                                     l.cumulativeDecay.littleEndianData, l.A.littleEndianData, CalibrationStore.jsonArray(l.aShape)])
            }
            return table
        }
    }

    /// All tables, oldest first.
    public func tables() throws -> [ThresholdTableInfo] {
        let ids = try read { db in try Int64.fetchAll(db, sql: "SELECT id FROM threshold_tables ORDER BY id") }
        return try ids.map { try table($0) }
    }

    public func table(_ id: Int64) throws -> ThresholdTableInfo {
        try read { db in
            guard let row = try Row.fetchOne(db, sql: """
                SELECT t.*, m.fingerprint, m.architecture FROM threshold_tables t
                JOIN calibration_runs r ON r.id = t.run_id JOIN models m ON m.id = r.model_id WHERE t.id = ?
                """, arguments: [id]) else { throw StoreError.unknownTable(path: path, id: id) }
            let json: String = row["parameters_json"]
            let params = try SolverParameters(canonicalJSON: json)
            let runID: Int64 = row["run_id"]
            let encodings = try String.fetchAll(db, sql: "SELECT DISTINCT encoding FROM recordings WHERE run_id = ? ORDER BY encoding", arguments: [runID])
            return ThresholdTableInfo(id: row["id"], runID: runID, method: row["method"], parametersJSON: json, parameters: params,
                                      layerCount: row["layer_count"], lengths: params.lengths, contentHash: row["content_hash"],
                                      toolVersion: row["tool_version"], schemaVersion: row["schema_version"], createdAt: row["created_at"],
                                      modelFingerprint: row["fingerprint"], architecture: row["architecture"],
                                      recordingRepresentation: encodings.joined(separator: ","))
        }
    }

    /// One layer of a table.
    public func tableLayer(table id: Int64, layer: Int) throws -> LayerTable {
        try read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM table_layers WHERE table_id = ? AND layer_index = ?", arguments: [id, layer]) else {
                if try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM threshold_tables WHERE id = ?", arguments: [id]) == 0 {
                    throw StoreError.unknownTable(path: path, id: id)
                }
                throw StoreError.invalid("\(path): table \(id) has no layer \(layer)")
            }
            let shapeJSON: String = row["a_shape_json"]
            return LayerTable(layer: layer, channels: row["channel_count"],
                              lengths: [Int64](littleEndianData: row["lengths_i64"]).map { Int($0) },
                              deltaThreshold: [Float](littleEndianData: row["delta_thresholds_f32"]),
                              keptFraction: [Float](littleEndianData: row["kept_fractions_f32"]),
                              decayBudget: [Float](littleEndianData: row["decay_budgets_f32"]),
                              cumulativeDecay: [Float](littleEndianData: row["cumulative_decays_f32"]),
                              A: [Float](littleEndianData: row["a_values_f32"]),
                              aShape: (try? JSONDecoder().decode([Int].self, from: Data(shapeJSON.utf8))) ?? [])
        }
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
            "run_id": String(run.id), "sample_count": String(run.sampleCount), "recorded_length": String(run.trainingLength),
            "seed": run.seed.map(String.init) ?? "", "tokenizer_hash": run.tokenizerHash ?? "",
            "corpus_provenance": run.corpusProvenanceJSON, "recording_metadata": run.recordingMetadataJSON,
            "recording_representation": t.recordingRepresentation, "run_tool_version": run.toolVersion,
        ]
    }
}
