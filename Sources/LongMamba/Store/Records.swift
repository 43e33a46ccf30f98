// One GRDB record type per table of the schema (docs/contracts.md "Store"): rows are read and
// written through these, never mapped by hand. Column names are the schema's, in CodingKeys.
import Foundation
import GRDB

/// Where a calibration run stands: 'recording' until every (sample, layer) is stored, then
/// 'complete' (only complete runs are solved).
public enum RunStatus: String, Codable, Sendable, DatabaseValueConvertible {
    case recording, complete
}

/// `models`: one row per model fingerprint.
public struct ModelInfo: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "models"
    public var id: Int64?
    public var fingerprint: String
    public var architecture: String
    public var configJSON: String
    var createdAt: String

    enum CodingKeys: String, CodingKey {
        case id, fingerprint, architecture, configJSON = "config_json", createdAt = "created_at"
    }
    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// `calibration_runs`: one calibration set (schema v2).
public struct CalibrationRunInfo: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "calibration_runs"
    public var id: Int64?
    public var modelID: Int64
    /// What identifies the calibration's inputs (model, tokenizer, corpus files, sampler
    /// options, L); nil for runs imported from recording files.
    public var calibrationKey: String?
    /// The key in words, for messages.
    public var description: String?
    public var corpusProvenanceJSON: String
    public var tokenizerHash: String?
    public var seed: Int64?
    /// K
    public var sampleCount: Int
    /// Tokens per recorded sample (the L the run was recorded at).
    public var sampleLength: Int
    public var layerCount: Int
    /// The recordings' `__metadata__` (architecture, Δ path, dt limit, tool version, …).
    public var recordingMetadataJSON: String
    public var toolVersion: String
    public var status: RunStatus
    var createdAt: String
    /// When the run was created (ISO 8601, UTC).
    public var createdAtText: String { createdAt }

    enum CodingKeys: String, CodingKey {
        case id, modelID = "model_id", calibrationKey = "calibration_key", description
        case corpusProvenanceJSON = "corpus_provenance_json", tokenizerHash = "tokenizer_hash", seed
        case sampleCount = "sample_count", sampleLength = "sample_length", layerCount = "layer_count"
        case recordingMetadataJSON = "recording_metadata_json", toolVersion = "tool_version", status, createdAt = "created_at"
    }
    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// `run_samples`: the token ids of one sampled sequence of a run (v2; in v1 they sat in the JSON).
struct RunSampleRecord: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "run_samples"
    var runID: Int64
    var sampleIndex: Int
    var tokenCount: Int
    /// int32 little-endian [tokenCount]
    var tokenIDs: Data

    enum CodingKeys: String, CodingKey {
        case runID = "run_id", sampleIndex = "sample_index", tokenCount = "token_count", tokenIDs = "token_ids_i32"
    }

    init(run: Int64, sample: Int, tokens: [Int32]) {
        runID = run; sampleIndex = sample; tokenCount = tokens.count; tokenIDs = tokens.littleEndianData
    }
    var tokens: [Int32] { [Int32](littleEndianData: tokenIDs) }
}

/// `recordings`: Δ of one (run, sample, layer) in its stored representation.
struct RecordingRecord: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "recordings"
    var runID: Int64
    var sampleIndex: Int
    var layerIndex: Int
    var tokenCount: Int
    var channelCount: Int
    /// `DeltaRepresentation.encodingName`
    var encoding: String
    var deltaBlob: Data
    var aShapeJSON: String
    /// f32 little-endian
    var aValues: Data
    /// SHA-256 of encoding, blob and A (equal hashes: equal recordings, e.g. when merging shards).
    var contentHash: String

    enum CodingKeys: String, CodingKey {
        case runID = "run_id", sampleIndex = "sample_index", layerIndex = "layer_index", tokenCount = "token_count"
        case channelCount = "channel_count", encoding, deltaBlob = "delta_blob", aShapeJSON = "a_shape_json"
        case aValues = "a_values", contentHash = "content_hash"
    }

    init(run: Int64, sample: Int, layer: EncodedLayer) {
        runID = run; sampleIndex = sample; layerIndex = layer.layer; tokenCount = layer.length; channelCount = layer.channels
        encoding = layer.encoding; deltaBlob = layer.blob; aShapeJSON = JSONText.array(layer.aShape); aValues = layer.A.littleEndianData
        contentHash = Self.contentHash(encoding: encoding, blob: deltaBlob, aValues: aValues)
    }

    /// SHA-256 of encoding ‖ blob ‖ A (docs/store-format.md "Content hashes"): written with the
    /// row, verified when it is read.
    static func contentHash(encoding: String, blob: Data, aValues: Data) -> String {
        var h = SHA256()
        h.update(data: Data(encoding.utf8)); h.update(data: blob); h.update(data: aValues)
        return h.finalize().hexString
    }

    var A: [Float] { [Float](littleEndianData: aValues) }
    var aShape: [Int] { JSONText.intArray(aShapeJSON) ?? [A.count] }
}

/// `threshold_tables`: an immutable solved table (metadata; its arrays are in `table_layers`).
struct ThresholdTableRecord: Codable, FetchableRecord, MutablePersistableRecord {
    static let databaseTableName = "threshold_tables"
    var id: Int64?
    var runID: Int64
    var method: String
    var parametersJSON: String
    var clampFraction: Double?
    var aggregation: String?
    var intervalTokens: Int?
    var maxLength: Int?
    var trainingLength: Int?
    var layerCount: Int
    var lengthCount: Int
    var contentHash: String
    var toolVersion: String
    var schemaVersion: Int
    var createdAt: String
    /// 'per_channel' (rows in table_layers) or 'per_layer' (rows in table_scales), v5.
    var rowKind: String = TableRowKind.perChannel.rawValue

    enum CodingKeys: String, CodingKey {
        case rowKind = "row_kind"
        case id, runID = "run_id", method, parametersJSON = "parameters_json", clampFraction = "clamp_fraction", aggregation
        case intervalTokens = "interval_tokens", maxLength = "max_length", trainingLength = "training_length"
        case layerCount = "layer_count", lengthCount = "length_count", contentHash = "content_hash"
        case toolVersion = "tool_version", schemaVersion = "schema_version", createdAt = "created_at"
    }
    mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// `table_layers`: the arrays of one layer of a table (little-endian blobs, shapes in columns).
struct TableLayerRecord: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "table_layers"
    var tableID: Int64
    var layerIndex: Int
    var channelCount: Int
    var lengthCount: Int
    var lengths: Data            // i64 [T]
    var deltaThresholds: Data    // f32 [T, C]
    var keptFractions: Data      // f32 [T, C]
    var decayBudgets: Data       // f32 [C]
    var cumulativeDecays: Data   // f32 [C]
    var aValues: Data            // f32 [C, N] | [C]
    var aShapeJSON: String

    enum CodingKeys: String, CodingKey {
        case tableID = "table_id", layerIndex = "layer_index", channelCount = "channel_count", lengthCount = "length_count"
        case lengths = "lengths_i64", deltaThresholds = "delta_thresholds_f32", keptFractions = "kept_fractions_f32"
        case decayBudgets = "decay_budgets_f32", cumulativeDecays = "cumulative_decays_f32", aValues = "a_values_f32"
        case aShapeJSON = "a_shape_json"
    }

    init(table: Int64, _ l: LayerTable) {
        tableID = table; layerIndex = l.layer; channelCount = l.channels; lengthCount = l.lengths.count
        lengths = l.lengths.map { Int64($0) }.littleEndianData
        deltaThresholds = l.deltaThreshold.littleEndianData; keptFractions = l.keptFraction.littleEndianData
        decayBudgets = l.decayBudget.littleEndianData; cumulativeDecays = l.cumulativeDecay.littleEndianData
        aValues = l.A.littleEndianData; aShapeJSON = JSONText.array(l.aShape)
    }

    var layerTable: LayerTable {
        LayerTable(layer: layerIndex, channels: channelCount, lengths: [Int64](littleEndianData: lengths).map { Int($0) },
                   deltaThreshold: [Float](littleEndianData: deltaThresholds), keptFraction: [Float](littleEndianData: keptFractions),
                   decayBudget: [Float](littleEndianData: decayBudgets), cumulativeDecay: [Float](littleEndianData: cumulativeDecays),
                   A: [Float](littleEndianData: aValues), aShape: JSONText.intArray(aShapeJSON) ?? [])
    }
}

/// One layer of a sample, already encoded in its stored representation (what the store is given).
public struct EncodedLayer: Sendable {
    public let layer: Int
    public let length: Int
    public let channels: Int
    public let encoding: String
    public let blob: Data
    public let A: [Float]
    public let aShape: [Int]
}

/// Small JSON texts of the schema (shapes) and canonical dictionaries.
enum JSONText {
    static func array(_ v: [Int]) -> String { "[" + v.map(String.init).joined(separator: ",") + "]" }
    static func intArray(_ s: String) -> [Int]? { try? JSONDecoder().decode([Int].self, from: Data(s.utf8)) }
    static func canonical(_ dict: [String: String]) -> String { canonical(object: dict) }
    /// Sorted keys, unescaped slashes; values may be numbers and nested objects.
    static func canonical(object: [String: Any]) -> String {
        (try? String(data: JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]), encoding: .utf8)) ?? "{}"
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
