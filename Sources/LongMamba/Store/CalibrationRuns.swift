// Runs, their sampled sequences and their recordings. One writer path: every run row is
// inserted by `insertRun`, every recording by `RecordingRecord.insert`.
//
// A run recorded sample by sample (`calibrate`) is created with its calibration key and its
// sampled token sequences; each finished sample's layers are committed in one transaction, and
// the run becomes complete when all its samples are there. A killed process leaves whole samples
// only, so rerunning the same command resumes after the last committed sample.
import Foundation
import GRDB

/// What to record about a new run (everything optional comes from the recording's metadata).
public struct RunProvenance: Sendable {
    public var corpusProvenanceJSON: String = "{}"
    public var tokenizerHash: String?
    public var seed: Int64?
    public var recordingMetadataJSON: String = "{}"
    public init() {}
}

/// The identity and shape of a run about to be created.
public struct NewRun: Sendable {
    public var fingerprint: String
    public var architecture: String
    public var configJSON: String = "{}"
    /// What fixes the recordings (see `CalibrationInputs.key`); nil for imported recording files.
    public var calibrationKey: String?
    public var description: String?
    public var sampleCount: Int
    public var sampleLength: Int
    public var layerCount: Int
    public var provenance = RunProvenance()

    public init(fingerprint: String, architecture: String, sampleCount: Int, sampleLength: Int, layerCount: Int) {
        self.fingerprint = fingerprint; self.architecture = architecture
        self.sampleCount = sampleCount; self.sampleLength = sampleLength; self.layerCount = layerCount
    }
}

extension CalibrationStore {
    // MARK: writing

    /// The one place a run row is inserted (its model row is added if new).
    private func insertRun(_ db: Database, _ new: NewRun, status: RunStatus) throws -> Int64 {
        guard new.sampleCount > 0, new.sampleLength > 0, new.layerCount > 0 else {
            throw StoreError.invalidRunShape(sampleCount: new.sampleCount, sampleLength: new.sampleLength, layerCount: new.layerCount)
        }
        let model: Int64
        if let existing = try ModelInfo.filter(Column("fingerprint") == new.fingerprint).fetchOne(db), let id = existing.id {
            model = id
        } else {
            var row = ModelInfo(id: nil, fingerprint: new.fingerprint, architecture: new.architecture, configJSON: new.configJSON,
                                createdAt: CalibrationStore.now())
            try row.insert(db)
            model = row.id!
        }
        var run = CalibrationRunInfo(id: nil, modelID: model, calibrationKey: new.calibrationKey, description: new.description,
                                     corpusProvenanceJSON: new.provenance.corpusProvenanceJSON, tokenizerHash: new.provenance.tokenizerHash,
                                     seed: new.provenance.seed, sampleCount: new.sampleCount, sampleLength: new.sampleLength,
                                     layerCount: new.layerCount, recordingMetadataJSON: new.provenance.recordingMetadataJSON,
                                     toolVersion: ToolInfo.version, status: status, createdAt: CalibrationStore.now())
        try run.insert(db)
        return run.id!
    }

    /// The one place a run's status changes (recording → complete; nothing goes back).
    private func markComplete(_ db: Database, run id: Int64) throws {
        try db.execute(sql: "UPDATE calibration_runs SET status = ? WHERE id = ?", arguments: [RunStatus.complete, id])
    }

    /// Creates a run in status 'recording' with its sampled sequences (one transaction), or
    /// returns the run another process created first with the same calibration key (`created`
    /// false). `soleCalibration` refuses, inside the same transaction, a database that already
    /// holds a run with another key, so two processes starting different calibrations cannot
    /// both succeed.
    public func beginRun(_ new: NewRun, sequences: [[Int32]], soleCalibration: Bool = false) throws -> (run: Int64, created: Bool) {
        guard sequences.count == new.sampleCount else {
            throw StoreError.sampleCountMismatch(path: path, sequences: sequences.count, sampleCount: new.sampleCount)
        }
        return try write { db in
            if let key = new.calibrationKey, let existing = try CalibrationRunInfo.filter(Column("calibration_key") == key).fetchOne(db), let id = existing.id {
                return (id, false)
            }
            if soleCalibration, let other = try CalibrationRunInfo.order(Column("id")).fetchOne(db) {
                throw StoreError.otherCalibration(path: path, run: other.id ?? 0, existing: other.description)
            }
            let run = try insertRun(db, new, status: .recording)
            for (k, s) in sequences.enumerated() { try RunSampleRecord(run: run, sample: k, tokens: s).insert(db) }
            return (run, true)
        }
    }

    /// Commits every layer of one sample of a recording run in one transaction (all or nothing).
    /// A layer another process already committed is skipped when its content hash is the same
    /// (two processes of one calibration), and refused when it differs.
    public func commitSample(run id: Int64, sample: Int, layers: [EncodedLayer]) throws {
        let info = try run(id)
        for l in layers {
            guard sample >= 0, sample < info.sampleCount, l.layer >= 0, l.layer < info.layerCount else {
                throw StoreError.sampleOutOfRange(path: path, run: id, sample: sample, layer: l.layer, sampleCount: info.sampleCount, layerCount: info.layerCount)
            }
            guard l.length == info.sampleLength else {
                throw StoreError.sampleLengthMismatch(path: path, run: id, sample: sample, layer: l.layer, expected: info.sampleLength, found: l.length)
            }
        }
        try write { db in
            let status = try RunStatus.fetchOne(db, sql: "SELECT status FROM calibration_runs WHERE id = ?", arguments: [id]) ?? info.status
            for l in layers {
                let record = RecordingRecord(run: id, sample: sample, layer: l)
                let stored = try String.fetchOne(db, sql: "SELECT content_hash FROM recordings WHERE run_id = ? AND sample_index = ? AND layer_index = ?",
                                                 arguments: [id, sample, l.layer])
                if let stored {
                    guard stored == record.contentHash else { throw StoreError.recordingDiffers(source: "this process", target: path, sample: sample, layer: l.layer) }
                    continue
                }
                guard status == .recording else { throw StoreError.runNotRecording(path: path, run: id, status: status) }
                try record.insert(db)
            }
        }
    }

    /// Marks a run complete once every (sample, layer) is stored.
    public func finishRun(_ id: Int64) throws {
        let info = try run(id)
        try write { db in
            let stored = try RecordingRecord.filter(Column("run_id") == id).fetchCount(db)
            guard stored == info.sampleCount * info.layerCount else {
                throw StoreError.incompleteRecordings(path: path, run: id, stored: stored, expected: info.sampleCount * info.layerCount)
            }
            try markComplete(db, run: id)
        }
    }

    /// Imports recording files (one per sample) as a new complete run, in one transaction.
    /// `representation` nil picks exact for Mamba-2 / small layers, the sketch for Mamba-1.
    public func importRecordings(_ paths: [String], representation: DeltaRepresentation? = nil,
                                 provenance: RunProvenance = RunProvenance()) throws -> Int64 {
        try importRecordings(paths, representation: representation, provenance: provenance, failAfterLayers: nil)
    }

    /// `failAfterLayers` stops the transaction part-way (tests of the all-or-nothing write).
    func importRecordings(_ paths: [String], representation: DeltaRepresentation?, provenance: RunProvenance, failAfterLayers: Int?) throws -> Int64 {
        guard !paths.isEmpty else { throw StoreError.noRecordingFiles }
        let files = try paths.map { try RecordingFile(path: $0) }
        try RecordingFile.checkConsistent(files)
        let first = files[0]
        let architecture = first.architecture ?? (first.aShapes[0].count == 1 ? "mamba2" : "mamba")
        let chosen = representation ?? DeltaRepresentation.automatic(architecture: architecture, channels: first.channels)
        var new = NewRun(fingerprint: first.fingerprint ?? "unfingerprinted:\(architecture):\(first.layerCount)x\(first.channels)",
                         architecture: architecture, sampleCount: files.count, sampleLength: first.length, layerCount: first.layerCount)
        new.configJSON = first.metadata["config"] ?? "{}"
        new.provenance = provenance
        if new.provenance.recordingMetadataJSON == "{}" { new.provenance.recordingMetadataJSON = JSONText.canonical(first.metadata) }
        if new.provenance.tokenizerHash == nil { new.provenance.tokenizerHash = first.metadata["tokenizer_hash"] }
        if new.provenance.seed == nil, let s = first.metadata["seed"] { new.provenance.seed = Int64(s) }
        if new.provenance.corpusProvenanceJSON == "{}", let c = first.metadata["corpus"] { new.provenance.corpusProvenanceJSON = c }
        let run = new
        var written = 0
        return try write { db in
            let id = try insertRun(db, run, status: .recording)
            for (s, file) in files.enumerated() {
                for i in 0..<file.layerCount {
                    if let failAfterLayers, written >= failAfterLayers { throw SimulatedInterruption(afterLayers: written) }
                    try RecordingRecord(run: id, sample: s, layer: try EncodedLayer(try file.layer(i), as: chosen)).insert(db)
                    written += 1
                }
            }
            try markComplete(db, run: id)
            return id
        }
    }

    /// Copies the recordings of run `id` of `other` into run `target` of this store (one transaction).
    /// Samples already present are skipped; a different stored value for the same sample is an error.
    public func mergeRecordings(from other: CalibrationStore, run id: Int64, into target: Int64) throws -> Int {
        let rows = try other.read { db in
            try RecordingRecord.filter(Column("run_id") == id).order(Column("sample_index"), Column("layer_index")).fetchAll(db)
        }
        // A shard altered after it was written is refused before anything of it is merged.
        let sampleLength = try other.run(id).sampleLength
        for r in rows { try r.validate(path: other.path, sampleLength: sampleLength) }
        return try write { db in
            var added = 0
            for var row in rows {
                if let existing = try RecordingRecord.filter(Column("run_id") == target && Column("sample_index") == row.sampleIndex
                                                             && Column("layer_index") == row.layerIndex).fetchOne(db) {
                    guard existing.contentHash == row.contentHash else {
                        throw StoreError.recordingDiffers(source: other.path, target: path, sample: row.sampleIndex, layer: row.layerIndex)
                    }
                    continue
                }
                row.runID = target
                try row.insert(db)
                added += 1
            }
            return added
        }
    }

    // MARK: reading

    public func run(_ id: Int64) throws -> CalibrationRunInfo {
        try read { db in
            guard let run = try CalibrationRunInfo.fetchOne(db, key: id) else { throw StoreError.unknownRun(path: path, id: id) }
            try run.validate(path: path)
            return run
        }
    }

    /// The run with this calibration key, if any.
    public func run(calibrationKey: String) throws -> CalibrationRunInfo? {
        try read { db in try CalibrationRunInfo.filter(Column("calibration_key") == calibrationKey).fetchOne(db) }
    }

    /// The table grid (interval, longest length) a run was calibrated with: the one `calibrate`
    /// stored in the run's recording metadata (`table_interval`, `table_max_length`), else, for
    /// runs of older tools, that of the run's first LongMamba table; nil when neither exists.
    /// `tune`, `merge`, `solve` and `sweep` default to it.
    public func calibratedGrid(run id: Int64) throws -> (interval: Int, maxLength: Int)? {
        let info = try run(id)
        if let object = try? JSONSerialization.jsonObject(with: Data(info.recordingMetadataJSON.utf8)) as? [String: Any],
           let interval = (object["table_interval"] as? NSNumber)?.intValue, let maxLength = (object["table_max_length"] as? NSNumber)?.intValue,
           interval > 0, maxLength >= interval {
            return (interval, maxLength)
        }
        let first = try tables().first { $0.runID == id && $0.method == CalibrationStore.longMambaMethod }
        return first.map { ($0.parameters.interval, $0.parameters.maxLength) }
    }

    /// Every run, oldest first.
    public func runs() throws -> [CalibrationRunInfo] {
        try read { db in
            let runs = try CalibrationRunInfo.order(Column("id")).fetchAll(db)
            for r in runs { try r.validate(path: path) }
            return runs
        }
    }

    /// The sampled token sequences of a run, by sample index (empty for imported recordings).
    public func sequences(run id: Int64) throws -> [[Int32]] {
        let info = try run(id)
        return try read { db in
            try RunSampleRecord.filter(Column("run_id") == id).order(Column("sample_index")).fetchAll(db)
                .map { try $0.validatedTokens(path: path, sampleLength: info.sampleLength) }
        }
    }

    /// Samples whose every layer is stored.
    public func recordedSamples(run id: Int64) throws -> Set<Int> {
        let info = try run(id)
        return try read { db in
            Set(try Int.fetchAll(db, sql: "SELECT sample_index FROM recordings WHERE run_id = ? GROUP BY sample_index HAVING COUNT(*) = ?",
                                 arguments: [id, info.layerCount]))
        }
    }

    public func model(_ id: Int64) throws -> ModelInfo {
        try read { db in
            guard let model = try ModelInfo.fetchOne(db, key: id) else { throw StoreError.unknownModel(path: path, id: id) }
            return model
        }
    }

    /// Model fingerprint and config of a run.
    public func runModel(_ id: Int64) throws -> ModelInfo { try model(try run(id).modelID) }

    /// The K samples of one layer of a run, decoded from their stored representation.
    public func layerSamples(run: Int64, layer: Int) throws -> [SortedDeltaLayer] {
        let sampleLength = try self.run(run).sampleLength
        let records = try read { db in
            try RecordingRecord.filter(Column("run_id") == run && Column("layer_index") == layer).order(Column("sample_index")).fetchAll(db)
        }
        for r in records { try r.validate(path: path, sampleLength: sampleLength) }
        // Samples decode independently (a sketch decode is an exp per value): one per core.
        var decoded = [Result<SortedDeltaLayer, Error>?](repeating: nil, count: records.count)
        decoded.withUnsafeMutableBufferPointer { buf in
            nonisolated(unsafe) let out = buf
            DispatchQueue.concurrentPerform(iterations: records.count) { i in
                let r = records[i]
                out[i] = Result { try self.decode(r) }
            }
        }
        return try decoded.compactMap { try $0?.get() }
    }

    /// One stored recording decoded, with its encoding (`longmamba recording`).
    public func recording(run: Int64, sample: Int, layer: Int) throws -> (encoding: String, decoded: SortedDeltaLayer) {
        let record = try read { db in
            try RecordingRecord.filter(Column("run_id") == run && Column("sample_index") == sample && Column("layer_index") == layer).fetchOne(db)
        }
        guard let r = record else { throw StoreError.noSuchRecording(path: path, run: run, sample: sample, layer: layer) }
        try r.validate(path: path, sampleLength: try self.run(run).sampleLength)
        return (r.encoding, try decode(r))
    }

    /// A checked recording's Δ; a blob that does not decode (possible only if its hash was
    /// recomputed by whoever altered it) names the row.
    func decode(_ r: RecordingRecord) throws -> SortedDeltaLayer {
        do {
            return try DeltaBlob.decode(r.deltaBlob, encoding: r.encoding, layer: r.layerIndex, length: r.tokenCount, channels: r.channelCount, A: r.A, aShape: r.aShape)
        } catch let error as DeltaBlobError {
            throw StoreError.invalidRow(path: path, row: "run \(r.runID) sample \(r.sampleIndex) layer \(r.layerIndex)", column: "delta_blob", problem: "does not decode: \(error)")
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
}
