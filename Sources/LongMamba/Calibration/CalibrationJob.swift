// The main job (`longmamba calibrate`): sample K sequences of the training length L from the
// corpus, run the model on each and store its Δ sample by sample, then solve one table per
// requested (clamp fraction p, aggregation). Rerunning the same command resumes: samples already
// committed are skipped, and the final table is identical to an uninterrupted run's.
import Foundation

/// What to calibrate and how.
public struct CalibrationOptions: Sendable {
    public var modelDirectory: String
    public var corpusPaths: [String]
    public var databasePath: String
    /// K: sequences (paper: 5).
    public var sampleCount = 5
    /// L: tokens per sequence; nil = the model's training length.
    public var length: Int?
    public var seed: UInt64 = 0
    /// p values; empty = the paper's default for the architecture (Mamba-2 5%, Mamba-1 20%).
    public var clampFractions: [Double] = []
    public var aggregations: [Aggregation] = [.max]
    public var interval = 1000
    public var maxLength = 256_000
    /// tokenizer.json; nil = the one in the model directory.
    public var tokenizerPath: String?
    public var subsets: [String] = []
    public var excludedSubsets: [String] = []
    public var packing: Packing = .document
    /// Record only samples k with k % count == index (for spreading a run over machines).
    public var shardIndex = 0
    public var shardCount = 1
    /// Also time one plain forward (no recording) so the recording speed can be read against it.
    public var measurePrefill = false
    /// Keep every layer's f32 weights in memory (faster with several samples); nil: when they take ≤ 4 GiB.
    public var residentWeights: Bool?

    public init(modelDirectory: String, corpusPaths: [String], databasePath: String) {
        self.modelDirectory = modelDirectory; self.corpusPaths = corpusPaths; self.databasePath = databasePath
    }
}

/// Progress events for a display.
public enum CalibrationEvent: Sendable {
    case sampling(SamplingProgress)
    case sampled(sequences: Int, seconds: Double)
    case resumed(run: Int64, recorded: Int, total: Int)
    case layer(sample: Int, layer: Int, layers: Int)
    case sampleCommitted(sample: Int, done: Int, total: Int, tokensPerSecond: Double)
    case solving(clampFraction: Double, aggregation: Aggregation)
    /// `done` of `layers` layers of the table being solved, after `seconds`.
    case solvedLayer(done: Int, layers: Int, seconds: Double)
    case solved(table: Int64)
    /// A table with exactly the requested parameters already existed and is returned again.
    case reused(table: Int64)
}

/// What a finished (or shard-finished) calibration produced.
public struct CalibrationResult: Sendable {
    public var runID: Int64
    public var tableIDs: [Int64] = []
    /// Samples recorded by this invocation / found already committed.
    public var samplesRecorded = 0
    public var samplesResumed = 0
    /// False when this shard finished but other shards' samples are still missing.
    public var complete = false
    public var recordingSeconds = 0.0
    public var tokensRecorded = 0
    public var tokensPerSecond: Double { recordingSeconds > 0 ? Double(tokensRecorded) / recordingSeconds : 0 }
    /// Plain forward speed on sample 0 in this run (`measurePrefill`), else nil.
    public var prefillTokensPerSecond: Double?
}

/// Everything that fixes a calibration's recordings, checked and loaded (step 1 of `calibrate`).
public struct CalibrationInputs {
    public let model: MambaModel
    public let tokenizer: BPETokenizer
    public let tokenizerPath: String
    public let files: [CorpusFile]
    public let fingerprint: String
    /// L: tokens per sample.
    public let sampleLength: Int
    public let sampler: SamplerOptions
    /// SHA-256 of the inputs (model fingerprint, tokenizer, corpus file names and sizes, sampler
    /// options): the run's identity, a column of `calibration_runs`.
    public let key: String
    /// The key in words, for messages.
    public let description: String
    /// The inputs that fix the recordings, by name and in words (stored with the run as
    /// `calibration_inputs`): the refusal of another calibration names those that differ.
    public let namedInputs: [String: String]
    /// `namedInputs`' names in the order messages list them.
    public static let inputNames = ["model", "tokenizer", "corpus", "seed", "samples (K)", "length (L)", "packing", "subsets",
                                    "excluded subsets", "min document tokens", "max line bytes", "skip bad lines"]

    public init(_ o: CalibrationOptions) throws {
        guard o.sampleCount >= 1 else { throw CalibrationError.tooFewSamples(o.sampleCount) }
        guard o.shardCount >= 1, o.shardIndex >= 0, o.shardIndex < o.shardCount else {
            throw CalibrationError.badShard(index: o.shardIndex, count: o.shardCount)
        }
        model = MambaModel(checkpoint: try ModelCheckpoint(directory: o.modelDirectory), keepWeightsResident: o.residentWeights)
        let config = model.config
        sampleLength = try CalibrationJob.trainingLength(o, config)
        // Refuse up front what would end in an out-of-memory kill.
        let needed = MemoryEstimate.recordingBytes(config: config, tokens: sampleLength, residentWeights: model.keepWeightsResident)
        if let available = MemoryEstimate.availableBytes(), needed > available {
            throw CalibrationError.insufficientMemory(modelDirectory: o.modelDirectory, needed: needed, available: available, residentWeights: model.keepWeightsResident)
        }
        tokenizerPath = o.tokenizerPath ?? BPETokenizer.defaultPath(modelDirectory: o.modelDirectory)
        guard FileManager.default.fileExists(atPath: tokenizerPath) else { throw CalibrationError.noTokenizer(modelDirectory: o.modelDirectory) }
        tokenizer = try BPETokenizer(contentsOf: tokenizerPath)
        // Checked before the corpus pass: a tokenizer of another model would otherwise be found
        // out only when a sampled id falls outside the embedding, after the whole pass.
        guard tokenizer.largestTokenId < config.paddedVocabSize else {
            throw CalibrationError.tokenizerBeyondVocabulary(tokenizer: tokenizerPath, largestId: tokenizer.largestTokenId,
                                                             vocabulary: config.paddedVocabSize, modelDirectory: o.modelDirectory)
        }
        files = try CorpusFile.expand(o.corpusPaths)
        fingerprint = model.checkpoint.fingerprint()
        sampler = SamplerOptions(count: o.sampleCount, length: sampleLength, seed: o.seed, packing: o.packing,
                                 subsets: o.subsets, excludedSubsets: o.excludedSubsets)
        let names = files.map { ($0.path as NSString).lastPathComponent }
        let corpus = files.map { "\(($0.path as NSString).lastPathComponent) (\($0.sizeBytes) bytes)" }.joined(separator: ", ")
        namedInputs = [
            "model": fingerprint, "tokenizer": tokenizer.sha256, "corpus": corpus, "seed": "\(o.seed)",
            "samples (K)": "\(o.sampleCount)", "length (L)": "\(sampleLength)", "packing": sampler.packing.rawValue,
            "subsets": sampler.subsets.isEmpty ? "all" : sampler.subsets.joined(separator: ","),
            "excluded subsets": sampler.excludedSubsets.isEmpty ? "none" : sampler.excludedSubsets.joined(separator: ","),
            "min document tokens": "\(sampler.minDocumentTokens)", "max line bytes": "\(sampler.maxLineBytes)",
            "skip bad lines": "\(sampler.skipBadLines)",
        ]
        description = "model \(fingerprint.prefix(12)), tokenizer \(tokenizer.sha256.prefix(12)), corpus \(names.joined(separator: ",")), seed \(o.seed), K \(o.sampleCount), L \(sampleLength), packing \(o.packing.rawValue)"
            + (o.subsets.isEmpty ? "" : ", subsets \(o.subsets.joined(separator: ","))")
        let keyMaterial: [String: Any] = [
            "fingerprint": fingerprint, "tokenizer": tokenizer.sha256,
            "corpus": files.map { ["name": ($0.path as NSString).lastPathComponent, "size": $0.sizeBytes] as [String: Any] },
            "sampler": (try? JSONSerialization.jsonObject(with: JSONEncoder.sortedKeys.encode(sampler))) ?? [:],
        ]
        key = SHA256.hash(data: try JSONSerialization.data(withJSONObject: keyMaterial, options: [.sortedKeys])).hexString
    }

    /// The inputs by which a stored run differs from these, as "name: stored → this" (the run's
    /// `calibration_inputs`; runs of older tools name fewer inputs, from their description).
    public func differences(from run: CalibrationRunInfo) -> [String] {
        let metadata = (try? JSONSerialization.jsonObject(with: Data(run.recordingMetadataJSON.utf8))) as? [String: Any]
        if let stored = metadata?["calibration_inputs"] as? [String: String] {
            return Self.inputNames.compactMap { name in
                let a = stored[name] ?? "?", b = namedInputs[name] ?? "?"
                return a == b ? nil : "\(name): \(a) → \(b)"
            }
        }
        // Older runs: their description's comma-separated parts ("seed 1", "K 5", …).
        let old = (run.description ?? "").components(separatedBy: ", "), new = description.components(separatedBy: ", ")
        let differing = zip(old, new).filter { $0 != $1 }.map { "\($0) → \($1)" }
        return differing.isEmpty
            ? ["inputs the stored run does not name (it predates named inputs: packing, subsets, corpus sizes or sampler limits)"]
            : differing
    }
}

public struct CalibrationJob {
    public let options: CalibrationOptions

    public init(options: CalibrationOptions) { self.options = options }

    /// The model's training length: --length, else config's training length, else an error.
    static func trainingLength(_ options: CalibrationOptions, _ config: ModelConfig) throws -> Int {
        if let l = options.length { return l }
        if let l = config.trainingLength { return l }
        throw CalibrationError.noTrainingLength(modelDirectory: options.modelDirectory)
    }

    /// The paper's p: 5 % for Mamba-2 and Zamba2, 20 % for Mamba-1.
    public static func defaultClampFraction(_ architecture: Architecture) -> Double { architecture.isMamba2Family ? 0.05 : 0.2 }

    /// The (p, aggregation) grid to solve: every requested p (default: the architecture's) × every aggregation.
    public static func grid(clampFractions: [Double], aggregations: [Aggregation], interval: Int, maxLength: Int,
                            trainingLength: Int, architecture: Architecture) -> [SolverParameters] {
        let clamps = clampFractions.isEmpty ? [defaultClampFraction(architecture)] : clampFractions
        return clamps.flatMap { p in
            aggregations.map { SolverParameters(clampFraction: p, aggregation: $0, interval: interval, maxLength: maxLength, trainingLength: trainingLength) }
        }
    }

    public func run(progress: @escaping (CalibrationEvent) -> Void = { _ in }) throws -> CalibrationResult {
        let o = options
        let inputs = try CalibrationInputs(o)
        let store = try CalibrationStore(path: o.databasePath)
        var result = try openRun(inputs, in: store, progress: progress)
        if o.measurePrefill {
            // One plain forward of sample 0 (nothing recorded): the prefill speed of this model in this run.
            let tokens = try store.sequences(run: result.runID)[0].map(Int.init)
            var none = DiscardingRecorder()
            let start = Date()
            try inputs.model.forward(tokens: tokens, recorder: &none)
            result.prefillTokensPerSecond = Double(tokens.count) / Date().timeIntervalSince(start)
        }
        try recordMissingSamples(inputs, run: result.runID, in: store, result: &result, progress: progress)
        guard try Self.finishIfComplete(run: result.runID, in: store) else { return result }  // other shards still to come
        result.complete = true
        let grid = Self.grid(clampFractions: o.clampFractions, aggregations: o.aggregations, interval: o.interval, maxLength: o.maxLength,
                             trainingLength: inputs.sampleLength, architecture: inputs.model.config.architecture)
        result.tableIDs = try TableService(store: store).tables(run: result.runID, for: grid, progress: progress)
        return result
    }

    /// Step 2: the run with these inputs' key (resumed), or a new one holding freshly sampled
    /// sequences. A database holding another calibration is refused.
    func openRun(_ inputs: CalibrationInputs, in store: CalibrationStore, progress: @escaping (CalibrationEvent) -> Void) throws -> CalibrationResult {
        let o = options
        if let existing = try store.run(calibrationKey: inputs.key), let id = existing.id {
            progress(.resumed(run: id, recorded: try store.recordedSamples(run: id).count, total: o.sampleCount))
            return CalibrationResult(runID: id)
        }
        // Checked here too (before sampling, which is the slow part); beginRun repeats it atomically.
        if let other = try store.runs().first {
            throw CalibrationError.otherCalibration(database: o.databasePath, run: other.id ?? 0, existing: other.description, this: inputs.description,
                                                    differences: inputs.differences(from: other))
        }
        let config = inputs.model.config
        let start = Date()
        let sample = try CorpusSampler(files: inputs.files, tokenizer: inputs.tokenizer, options: inputs.sampler).run { progress(.sampling($0)) }
        progress(.sampled(sequences: sample.sequences.count, seconds: Date().timeIntervalSince(start)))
        guard sample.sequences.count == o.sampleCount, sample.sequences.allSatisfy({ $0.count == inputs.sampleLength }) else {
            throw CalibrationError.corpusTooShort(sequences: sample.sequences.count, expected: o.sampleCount, length: inputs.sampleLength)
        }
        for (k, s) in sample.sequences.enumerated() {
            for (t, id) in s.enumerated() where Int(id) >= config.paddedVocabSize {
                throw CalibrationError.tokenOutsideVocabulary(sample: k, token: t, id: Int(id), vocabulary: config.paddedVocabSize, tokenizer: inputs.tokenizerPath)
            }
        }
        var new = NewRun(fingerprint: inputs.fingerprint, architecture: config.architecture.rawValue, sampleCount: o.sampleCount,
                         sampleLength: inputs.sampleLength, layerCount: config.layerCount)
        new.configJSON = String(decoding: inputs.model.checkpoint.configData, as: UTF8.self)
        new.calibrationKey = inputs.key
        new.description = inputs.description
        new.provenance.corpusProvenanceJSON = String(decoding: try JSONEncoder.sortedKeys.encode(sample.provenance), as: UTF8.self)
        new.provenance.tokenizerHash = inputs.tokenizer.sha256
        new.provenance.seed = Int64(bitPattern: o.seed)
        // The table grid is stored with the run: `tune`, `merge`, `solve` and `sweep` default to it.
        new.provenance.recordingMetadataJSON = JSONText.canonical(object: [
            "architecture": config.architecture.rawValue, "fingerprint": inputs.fingerprint, "delta_path": RecordingFile.deltaPath(config),
            "dt_limit": "[\(config.dtLimitLower), \(config.dtLimitUpper)]", "tool_version": ToolInfo.version,
            "model_directory": o.modelDirectory, "tokenizer": inputs.tokenizerPath,
            "table_interval": o.interval, "table_max_length": o.maxLength,
            "calibration_inputs": inputs.namedInputs,
        ])
        do {
            let begun = try store.beginRun(new, sequences: sample.sequences, soleCalibration: true)
            // Another process of the same calibration may have created the run meanwhile: join it.
            if !begun.created { progress(.resumed(run: begun.run, recorded: try store.recordedSamples(run: begun.run).count, total: o.sampleCount)) }
            return CalibrationResult(runID: begun.run)
        } catch StoreError.otherCalibration(_, let run, let existing) {
            let differences = (try? store.run(run)).map { inputs.differences(from: $0) } ?? []
            throw CalibrationError.otherCalibration(database: o.databasePath, run: run, existing: existing, this: inputs.description, differences: differences)
        }
    }

    /// On two cores the encoding thread of `PipelinedEncodingRecorder` competes with the runner for
    /// the cores it uses; encoding each layer on both cores in turn is faster there (mamba-130m at
    /// 2048 on the 2-core Zen 4: recording 68–73 % of the prefill pipelined, see docs/performance.md
    /// for inline). Wider machines keep the pipeline, which was measured faster where cores are idle.
    static var encodesInline: Bool { ProcessInfo.processInfo.activeProcessorCount <= 2 }

    /// Step 3: records this shard's samples that are not committed yet, one transaction each.
    func recordMissingSamples(_ inputs: CalibrationInputs, run: Int64, in store: CalibrationStore, result: inout CalibrationResult,
                              progress: @escaping (CalibrationEvent) -> Void) throws {
        let o = options, config = inputs.model.config, L = inputs.sampleLength
        let sequences = try store.sequences(run: run)
        let recorded = try store.recordedSamples(run: run)
        let representation = DeltaRepresentation.automatic(architecture: config.architecture.rawValue, channels: config.channelCount)
        let mine = (0..<o.sampleCount).filter { $0 % o.shardCount == o.shardIndex }
        result.samplesResumed = mine.filter { recorded.contains($0) }.count
        var done = result.samplesResumed
        for k in mine where !recorded.contains(k) {
            let start = Date()
            let layers: [EncodedLayer]
            if Self.encodesInline {
                // Each layer sorted and encoded on every core right after the runner hands it over.
                var recorder = EncodingRecorder(sample: k, representation: representation, layerCount: config.layerCount, progress: progress)
                try inputs.model.forward(tokens: sequences[k].map(Int.init), recorder: &recorder)
                layers = recorder.layers
            } else {
                // Layer i is sorted and encoded on another thread while the runner computes layer i + 1.
                var recorder = PipelinedEncodingRecorder(sample: k, representation: representation, layerCount: config.layerCount, progress: progress)
                try inputs.model.forward(tokens: sequences[k].map(Int.init), recorder: &recorder)
                layers = try recorder.finish()
            }
            try store.commitSample(run: run, sample: k, layers: layers)
            let seconds = Date().timeIntervalSince(start)
            result.samplesRecorded += 1
            result.recordingSeconds += seconds
            result.tokensRecorded += L
            done += 1
            progress(.sampleCommitted(sample: k, done: done, total: mine.count, tokensPerSecond: Double(L) / seconds))
        }
    }

    /// Step 4 (shared with `merge`): marks the run complete once every sample is stored; false
    /// while samples of other shards are missing.
    static func finishIfComplete(run: Int64, in store: CalibrationStore) throws -> Bool {
        let info = try store.run(run)
        if info.status == .complete { return true }
        guard try store.recordedSamples(run: run).count == info.sampleCount else { return false }
        try store.finishRun(run)
        return true
    }
}
