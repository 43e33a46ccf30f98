// The bridge from the model runner to the store: each layer's Δ, as the runner hands it out,
// is checked, sorted per channel and written in its stored representation (one transaction per
// layer). A run stays 'recording' until `CalibrationStore.finishRun` marks it complete, so an
// interrupted calibration is never solved by mistake.
import Foundation

public struct StoreDeltaRecorder: DeltaRecorder {
    public let store: CalibrationStore
    public let run: Int64
    public let sample: Int
    public let representation: DeltaRepresentation

    public init(store: CalibrationStore, run: Int64, sample: Int, representation: DeltaRepresentation) {
        self.store = store; self.run = run; self.sample = sample; self.representation = representation
    }

    public mutating func record(_ layerDelta: LayerDelta) throws {
        let layer = try SortedDeltaLayer(layerDelta: layerDelta, source: "run \(run) sample \(sample)")
        try store.addRecording(run: run, sample: sample, layer: layer, representation: representation)
    }
}

extension CalibrationStore {
    /// Starts a run (status 'recording') for a model, adding the model row if new.
    public func beginRun(fingerprint: String, architecture: String, configJSON: String = "{}", provenance: RunProvenance = RunProvenance(),
                         sampleCount: Int, trainingLength: Int, layerCount: Int) throws -> Int64 {
        guard sampleCount > 0, trainingLength > 0, layerCount > 0 else {
            throw StoreError.invalid("a run needs K ≥ 1 samples, L ≥ 1 tokens and ≥ 1 layer (got K = \(sampleCount), L = \(trainingLength), layers = \(layerCount))")
        }
        return try write { db in
            let model = try modelID(db, fingerprint: fingerprint, architecture: architecture, configJSON: configJSON)
            try db.execute(sql: """
                INSERT INTO calibration_runs (model_id, corpus_provenance_json, tokenizer_hash, seed, sample_count, training_length,
                    layer_count, recording_metadata_json, tool_version, status, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'recording', ?)
                """, arguments: [model, provenance.corpusProvenanceJSON, provenance.tokenizerHash, provenance.seed, sampleCount, trainingLength,
                                 layerCount, provenance.recordingMetadataJSON, ToolInfo.version, CalibrationStore.now()])
            return db.lastInsertedRowID
        }
    }

    /// Stores one (sample, layer) of a run that is still recording.
    public func addRecording(run: Int64, sample: Int, layer: SortedDeltaLayer, representation: DeltaRepresentation) throws {
        let info = try self.run(run)
        guard info.status == "recording" else { throw StoreError.invalid("\(path): run \(run) is '\(info.status)', not recording") }
        guard sample >= 0, sample < info.sampleCount, layer.layer >= 0, layer.layer < info.layerCount else {
            throw StoreError.invalid("\(path): run \(run) has samples 0..<\(info.sampleCount) and layers 0..<\(info.layerCount); got sample \(sample) layer \(layer.layer)")
        }
        guard layer.length == info.trainingLength else {
            throw StoreError.invalid("\(path): run \(run) records L = \(info.trainingLength) tokens; sample \(sample) layer \(layer.layer) has \(layer.length)")
        }
        try write { db in try insertRecording(db, run: run, sample: sample, layer: layer, representation: representation) }
    }

    /// Marks a run complete once every (sample, layer) is stored (or failed).
    public func finishRun(_ run: Int64, failed: Bool = false) throws {
        let info = try self.run(run)
        try write { db in
            if !failed {
                let stored = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM recordings WHERE run_id = ?", arguments: [run]) ?? 0
                guard stored == info.sampleCount * info.layerCount else {
                    throw StoreError.invalid("\(path): run \(run) has \(stored) of \(info.sampleCount * info.layerCount) (sample, layer) recordings; cannot mark it complete")
                }
            }
            try db.execute(sql: "UPDATE calibration_runs SET status = ? WHERE id = ?", arguments: [failed ? "failed" : "complete", run])
        }
    }
}
