// The main job (`longmamba calibrate`): sample K sequences of the training length L from the
// corpus, run the model on each and store its Δ sample by sample, then solve one table per
// requested (clamp fraction p, aggregation). Rerunning the same command resumes: samples already
// committed are skipped, and the final table is identical to an uninterrupted run's.
import Crypto
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
    /// Testing aid: pause this long after committing each sample (makes interruption tests deterministic).
    public var pauseAfterSampleSeconds: Double = 0

    public init(modelDirectory: String, corpusPaths: [String], databasePath: String) {
        self.modelDirectory = modelDirectory; self.corpusPaths = corpusPaths; self.databasePath = databasePath
    }
}

/// Why calibration stopped.
public struct CalibrationError: Error, CustomStringConvertible, Sendable {
    public let reason: String
    public var hint: String?
    public var description: String { hint.map { "\(reason) (hint: \($0))" } ?? reason }
}

/// Progress events for a display.
public enum CalibrationEvent: Sendable {
    case sampling(SamplingProgress)
    case sampled(sequences: Int, seconds: Double)
    case resumed(run: Int64, recorded: Int, total: Int)
    case layer(sample: Int, layer: Int, layers: Int)
    case sampleCommitted(sample: Int, done: Int, total: Int, tokensPerSecond: Double)
    case solving(clampFraction: Double, aggregation: Aggregation)
    case solved(table: Int64)
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
}

public struct CalibrationJob {
    public let options: CalibrationOptions

    public init(options: CalibrationOptions) { self.options = options }

    /// The model's training length: --length, else config's training length, else an error.
    static func trainingLength(_ options: CalibrationOptions, _ config: ModelConfig) throws -> Int {
        if let l = options.length { return l }
        if let l = config.trainingLength { return l }
        throw CalibrationError(reason: "\(options.modelDirectory): the config does not say the model's training length",
                               hint: "pass --length L (2048 for state-spaces Mamba/Mamba-2, 4096 for Zamba2)")
    }

    public static func defaultClampFraction(_ architecture: Architecture) -> Double { architecture == .mamba2 ? 0.05 : 0.2 }

    public func run(progress: @escaping (CalibrationEvent) -> Void = { _ in }) throws -> CalibrationResult {
        let o = options
        guard o.sampleCount >= 1 else { throw CalibrationError(reason: "--samples must be at least 1") }
        guard o.shardCount >= 1, o.shardIndex >= 0, o.shardIndex < o.shardCount else {
            throw CalibrationError(reason: "--shard \(o.shardIndex)/\(o.shardCount): expected i/n with 0 ≤ i < n")
        }
        let model = try MambaModel(directory: o.modelDirectory)
        let config = model.config
        let L = try Self.trainingLength(o, config)
        let tokenizerPath = o.tokenizerPath ?? URL(fileURLWithPath: o.modelDirectory).appendingPathComponent("tokenizer.json").path
        guard FileManager.default.fileExists(atPath: tokenizerPath) else {
            throw CalibrationError(reason: "\(o.modelDirectory) has no tokenizer.json and no --tokenizer was given",
                                   hint: "state-spaces checkpoints ship without one; pass --tokenizer with the GPT-NeoX-20B tokenizer.json")
        }
        let tokenizer = try BPETokenizer(contentsOf: tokenizerPath)
        let files = try CorpusFile.expand(o.corpusPaths)
        let fingerprint = model.checkpoint.fingerprint()
        let sampler = SamplerOptions(count: o.sampleCount, length: L, seed: o.seed, packing: o.packing,
                                     subsets: o.subsets, excludedSubsets: o.excludedSubsets)

        // The run's identity: everything that fixes the recordings.
        let description = "model \(fingerprint.prefix(12)), tokenizer \(tokenizer.sha256.prefix(12)), corpus \(files.map { ($0.path as NSString).lastPathComponent }.joined(separator: ",")), seed \(o.seed), K \(o.sampleCount), L \(L)"
        let keyMaterial: [String: Any] = [
            "fingerprint": fingerprint, "tokenizer": tokenizer.sha256,
            "corpus": files.map { ["name": ($0.path as NSString).lastPathComponent, "size": $0.sizeBytes] as [String: Any] },
            "sampler": (try? JSONSerialization.jsonObject(with: JSONEncoder.sortedKeys.encode(sampler))) ?? [:],
        ]
        let keyData = try JSONSerialization.data(withJSONObject: keyMaterial, options: [.sortedKeys])
        let calibrationKey = SHA256.hash(data: keyData).map { String(format: "%02x", $0) }.joined()

        let store = try CalibrationStore(path: o.databasePath)
        var result: CalibrationResult
        var run: ResumableRun
        if let existing = try store.resumableRun(calibrationKey: calibrationKey) {
            run = existing
            result = CalibrationResult(runID: existing.id)
            progress(.resumed(run: existing.id, recorded: existing.recordedSamples.count, total: o.sampleCount))
        } else {
            if let other = try store.calibrationKeys().first {
                throw CalibrationError(reason: "\(o.databasePath) already holds calibration run \(other.id) with other inputs (\(other.description ?? "imported recordings")); this one is \(description)",
                                       hint: "use another --db for another model, corpus, seed, K or L")
            }
            let start = Date()
            let sample = try CorpusSampler(files: files, tokenizer: tokenizer, options: sampler).run { progress(.sampling($0)) }
            progress(.sampled(sequences: sample.sequences.count, seconds: Date().timeIntervalSince(start)))
            guard sample.sequences.count == o.sampleCount, sample.sequences.allSatisfy({ $0.count == L }) else {
                throw CalibrationError(reason: "the corpus gave \(sample.sequences.count) sequences, expected \(o.sampleCount) of \(L) tokens")
            }
            for (k, s) in sample.sequences.enumerated() {
                for (t, id) in s.enumerated() where Int(id) >= config.paddedVocabSize {
                    throw CalibrationError(reason: "sample \(k) token \(t) has id \(id) but the model's vocabulary has \(config.paddedVocabSize) rows",
                                           hint: "the tokenizer \(tokenizerPath) does not belong to this model")
                }
            }
            var provenance = RunProvenance()
            provenance.corpusProvenanceJSON = String(decoding: try JSONEncoder.sortedKeys.encode(sample.provenance), as: UTF8.self)
            provenance.tokenizerHash = tokenizer.sha256
            provenance.seed = Int64(bitPattern: o.seed)
            let metadata: [String: Any] = [
                "architecture": config.architecture.rawValue, "fingerprint": fingerprint, "delta_path": RecordingFile.deltaPath(config),
                "dt_limit": "[\(config.dtLimitLower), \(config.dtLimitUpper)]", "tool_version": ToolInfo.version,
                "model_directory": o.modelDirectory, "tokenizer": tokenizerPath,
            ]
            let id = try store.beginRun(calibrationKey: calibrationKey, description: description, fingerprint: fingerprint,
                                        architecture: config.architecture.rawValue,
                                        configJSON: String(decoding: model.checkpoint.configData, as: UTF8.self),
                                        sequences: sample.sequences, trainingLength: L, layerCount: config.layerCount,
                                        provenance: provenance, extraMetadata: metadata)
            run = try store.resumableRun(calibrationKey: calibrationKey) ?? ResumableRun(id: id, calibrationKey: calibrationKey, sequences: sample.sequences, recordedSamples: [], status: "recording")
            result = CalibrationResult(runID: id)
        }

        // Record this shard's missing samples, one committed transaction each.
        let representation = DeltaRepresentation.automatic(architecture: config.architecture.rawValue, channels: config.channelCount)
        let mine = (0..<o.sampleCount).filter { $0 % o.shardCount == o.shardIndex }
        result.samplesResumed = mine.filter { run.recordedSamples.contains($0) }.count
        var done = result.samplesResumed
        for k in mine where !run.recordedSamples.contains(k) {
            var recorder = EncodingRecorder(sample: k, representation: representation, layers: config.layerCount, progress: progress)
            let start = Date()
            try model.forward(tokens: run.sequences[k].map(Int.init), recorder: &recorder)
            try store.commitSample(run: run.id, recorder.encoded)
            let seconds = Date().timeIntervalSince(start)
            result.samplesRecorded += 1
            result.recordingSeconds += seconds
            result.tokensRecorded += L
            done += 1
            progress(.sampleCommitted(sample: k, done: done, total: mine.count, tokensPerSecond: Double(L) / seconds))
            if o.pauseAfterSampleSeconds > 0 { Thread.sleep(forTimeInterval: o.pauseAfterSampleSeconds) }
        }
        run = try store.resumableRun(calibrationKey: calibrationKey) ?? run
        guard run.recordedSamples.count == o.sampleCount else { return result }  // other shards still to come

        if run.status != "complete" { try store.finishRun(run.id) }
        result.complete = true
        let clamps = o.clampFractions.isEmpty ? [Self.defaultClampFraction(config.architecture)] : o.clampFractions
        let existing = try store.tables().filter { $0.runID == run.id && $0.method == CalibrationStore.longMambaMethod }
        for p in clamps {
            for aggregation in o.aggregations {
                // Rerunning a finished calibration reuses its tables (they are immutable and would be identical).
                let parameters = SolverParameters(clampFraction: p, aggregation: aggregation, interval: o.interval, maxLength: o.maxLength, trainingLength: L)
                if let table = existing.first(where: { $0.parameters == parameters }) {
                    result.tableIDs.append(table.id)
                    continue
                }
                progress(.solving(clampFraction: p, aggregation: aggregation))
                let id = try store.solve(run: run.id, clampFraction: p, aggregation: aggregation, interval: o.interval,
                                         maxLength: o.maxLength, trainingLength: L)
                result.tableIDs.append(id)
                progress(.solved(table: id))
            }
        }
        return result
    }
}

/// Encodes each layer's Δ into the stored representation as soon as the model hands it over.
struct EncodingRecorder: DeltaRecorder {
    var encoded: EncodedSample
    let representation: DeltaRepresentation
    let layers: Int
    let progress: (CalibrationEvent) -> Void

    init(sample: Int, representation: DeltaRepresentation, layers: Int, progress: @escaping (CalibrationEvent) -> Void) {
        encoded = EncodedSample(sampleIndex: sample)
        self.representation = representation; self.layers = layers; self.progress = progress
    }

    mutating func record(_ layerDelta: LayerDelta) throws {
        try encoded.add(layerDelta, representation: representation)
        progress(.layer(sample: encoded.sampleIndex, layer: layerDelta.layer, layers: layers))
    }
}
