// Calibration runs recorded sample by sample (for `longmamba calibrate`): a run is created with
// its sampled token sequences, each finished sample's layers are committed in one transaction,
// and the run becomes 'complete' when all its samples are there. A killed process leaves whole
// samples only, so rerunning the same command resumes after the last committed sample.
import Crypto
import Foundation
import GRDB

/// A recorded-by-sample run as `calibrate` sees it.
public struct ResumableRun: Sendable {
    public let id: Int64
    /// Identity of the calibration inputs (model, tokenizer, corpus files, sampler options, L).
    public let calibrationKey: String
    /// Token sequences of the run's samples (all K, also those of other shards).
    public let sequences: [[Int32]]
    /// Samples whose every layer is stored.
    public let recordedSamples: Set<Int>
    public let status: String
}

/// One sample's layers, already encoded in their stored representation.
public struct EncodedSample: Sendable {
    public struct Layer: Sendable {
        public let layer: Int
        public let length: Int
        public let channels: Int
        public let encoding: String
        public let blob: Data
        public let A: [Float]
        public let aShape: [Int]
    }
    public let sampleIndex: Int
    public var layers: [Layer] = []
    public init(sampleIndex: Int) { self.sampleIndex = sampleIndex }

    /// Encodes one layer's Δ as soon as the model hands it over, so only the encoded form is kept.
    public mutating func add(_ delta: LayerDelta, representation: DeltaRepresentation) throws {
        let sorted = try SortedDeltaLayer(layerDelta: delta, source: "sample \(sampleIndex)")
        layers.append(Layer(layer: delta.layer, length: delta.length, channels: delta.channels,
                            encoding: representation.encodingName, blob: try DeltaBlob.encode(sorted, as: representation),
                            A: delta.A, aShape: delta.aShape))
    }
}

extension CalibrationStore {
    /// The run with this calibration key, if any.
    public func resumableRun(calibrationKey: String) throws -> ResumableRun? {
        try read { db in
            let rows = try Row.fetchAll(db, sql: "SELECT id, status, layer_count, recording_metadata_json FROM calibration_runs ORDER BY id")
            for row in rows {
                let metadataJSON: String = row["recording_metadata_json"]
                guard let metadata = try? JSONSerialization.jsonObject(with: Data(metadataJSON.utf8)) as? [String: Any],
                      metadata["calibration_key"] as? String == calibrationKey else { continue }
                let id: Int64 = row["id"], layerCount: Int = row["layer_count"]
                let sequences = (metadata["sequences"] as? [[NSNumber]] ?? []).map { $0.map { Int32(truncating: $0) } }
                let complete = try Int.fetchAll(db, sql: """
                    SELECT sample_index FROM recordings WHERE run_id = ? GROUP BY sample_index HAVING COUNT(*) = ?
                    """, arguments: [id, layerCount])
                return ResumableRun(id: id, calibrationKey: calibrationKey, sequences: sequences,
                                    recordedSamples: Set(complete), status: row["status"])
            }
            return nil
        }
    }

    /// Calibration keys and descriptions of every run (to refuse mixing models or seeds in one database).
    public func calibrationKeys() throws -> [(id: Int64, key: String?, description: String?)] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT id, recording_metadata_json FROM calibration_runs ORDER BY id").map { row in
                let json: String = row["recording_metadata_json"]
                let m = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any]
                return (row["id"], m?["calibration_key"] as? String, m?["calibration_description"] as? String)
            }
        }
    }

    /// Creates a run in status 'recording' holding its sampled sequences and calibration key.
    public func beginRun(calibrationKey: String, description: String, fingerprint: String, architecture: String, configJSON: String,
                         sequences: [[Int32]], trainingLength: Int, layerCount: Int, provenance: RunProvenance,
                         extraMetadata: [String: Any] = [:]) throws -> Int64 {
        var metadata = extraMetadata
        metadata["calibration_key"] = calibrationKey
        metadata["calibration_description"] = description
        metadata["sequences"] = sequences.map { $0.map { Int($0) } }
        var withMetadata = provenance
        withMetadata.recordingMetadataJSON = String(decoding: try JSONSerialization.data(withJSONObject: metadata, options: [.sortedKeys, .withoutEscapingSlashes]), as: UTF8.self)
        return try beginRun(fingerprint: fingerprint, architecture: architecture, configJSON: configJSON, provenance: withMetadata,
                            sampleCount: sequences.count, trainingLength: trainingLength, layerCount: layerCount)
    }

    /// Commits every layer of one sample in one transaction (all or nothing).
    public func commitSample(run: Int64, _ sample: EncodedSample) throws {
        try write { db in
            for l in sample.layers {
                try insertEncodedRecording(db, run: run, sample: sample.sampleIndex, layer: l.layer, length: l.length, channels: l.channels,
                                           encoding: l.encoding, blob: l.blob, A: l.A, aShape: l.aShape)
            }
        }
    }

    /// Copies the recordings of run `id` of `other` into run `into` of this store (one transaction).
    /// Samples already present are skipped; a different stored value for the same sample is an error.
    public func mergeRecordings(from other: CalibrationStore, run id: Int64, into target: Int64) throws -> Int {
        let rows = try other.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM recordings WHERE run_id = ? ORDER BY sample_index, layer_index", arguments: [id])
        }
        return try write { db in
            var added = 0
            for row in rows {
                let sample: Int = row["sample_index"], layer: Int = row["layer_index"], hash: String = row["content_hash"]
                if let existing = try String.fetchOne(db, sql: "SELECT content_hash FROM recordings WHERE run_id = ? AND sample_index = ? AND layer_index = ?",
                                                      arguments: [target, sample, layer]) {
                    guard existing == hash else {
                        throw StoreError.invalid("\(other.path): sample \(sample) layer \(layer) differs from the one already in \(path) (different model build or inputs?)")
                    }
                    continue
                }
                try db.execute(sql: """
                    INSERT INTO recordings (run_id, sample_index, layer_index, token_count, channel_count, encoding, delta_blob, a_shape_json, a_values, content_hash)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [target, sample, layer, row["token_count"], row["channel_count"], row["encoding"], row["delta_blob"],
                                     row["a_shape_json"], row["a_values"], hash])
                added += 1
            }
            return added
        }
    }

    /// Model fingerprint and config of a run.
    public func runModel(_ id: Int64) throws -> ModelInfo { try model(try run(id).modelID) }
}
