// `longmamba tune`: choose θ and p by evaluation, as the paper did (Sec. 6.1). For a stored run,
// every (p, aggregation) table is taken from the store or solved from the stored recordings
// (never re-running calibration), every (table, θ) is evaluated at every length, and each point
// is stored as soon as it is measured: a second `tune` with an overlapping grid reuses finished
// points, and a killed `tune` resumes where it stopped. Vanilla is measured once per length.
import Foundation

public enum TuneTask: Sendable, Equatable {
    /// Perplexity of `windows` windows of each length of the text (lower is better).
    case perplexity(text: EvaluationText, windows: Int)
    /// Passkey accuracy, mean over the depths (higher is better).
    case passkey(depths: [Double], trials: Int, seed: UInt64, haystack: String?)

    var name: String { if case .perplexity = self { return "perplexity" } else { return "passkey" } }
    var metric: String { if case .perplexity = self { return "perplexity" } else { return "accuracy" } }
    var higherIsBetter: Bool { if case .passkey = self { return true } else { return false } }
}

public struct TuneOptions: Sendable {
    public var databasePath: String
    public var runID: Int64
    public var modelDirectory: String
    public var thetas: [Double]
    public var clampFractions: [Double]
    public var aggregations: [Aggregation]
    /// Grid of tables solved for the tune; nil: the grid the run was calibrated with.
    public var interval: Int?
    public var maxLength: Int?
    public var lengths: [Int]
    public var task: TuneTask
    public var filterFrom: Int?
    public var tokenizer: String?
    public var chunk = 1024
    public var force = false

    public init(databasePath: String, runID: Int64, modelDirectory: String, thetas: [Double], clampFractions: [Double],
                aggregations: [Aggregation], lengths: [Int], task: TuneTask) {
        self.databasePath = databasePath; self.runID = runID; self.modelDirectory = modelDirectory; self.thetas = thetas
        self.clampFractions = clampFractions; self.aggregations = aggregations; self.lengths = lengths; self.task = task
    }
}

/// One row of the ranking: a (table, θ) or vanilla, its value at each length and its score.
public struct TuneRow: Sendable, Equatable {
    /// nil: vanilla.
    public var table: Int64?
    public var clampFraction: Double?
    public var aggregation: Aggregation?
    public var theta: Double?
    /// metric at each of the options' lengths, in order
    public var values: [Double]
    /// Perplexity: geometric mean over lengths; passkey: mean accuracy.
    public var score: Double

    /// The ranking score of a row's values (the `tune` table and the report's grid).
    public static func score(_ values: [Double], higherIsBetter: Bool) -> Double {
        higherIsBetter ? values.reduce(0, +) / Double(values.count)
                       : Foundation.exp(values.map { Foundation.log($0) }.reduce(0, +) / Double(values.count))
    }
}

public struct TuneResult: Sendable {
    public var metric: String
    public var higherIsBetter: Bool
    public var lengths: [Int]
    /// Best first; vanilla is among them.
    public var ranked: [TuneRow]
    public var pointsEvaluated = 0
    public var pointsReused = 0
    public var tablesSolved = 0
    public var best: TuneRow? { ranked.first { $0.table != nil } }
}

public enum TuneError: Error, CustomStringConvertible, Sendable, Equatable {
    case emptyGrid(what: String)
    case nonPositiveTheta(Double)
    case runWithoutRecordings(path: String, run: Int64)

    public var description: String {
        switch self {
        case let .emptyGrid(what): return "tune: give at least one value of \(what)"
        case let .nonPositiveTheta(t): return "tune: θ must be > 0, got \(t)"
        case let .runWithoutRecordings(path, run):
            return "\(path): run \(run) has no stored recordings to solve tables from (was it made by `calibrate`, or is it still recording?)"
        }
    }
}

public struct TuneJob {
    public let options: TuneOptions
    public init(options: TuneOptions) { self.options = options }

    public func run(progress: (String) -> Void = { _ in }) throws -> TuneResult {
        let o = options
        guard !o.thetas.isEmpty else { throw TuneError.emptyGrid(what: "--theta") }
        guard !o.clampFractions.isEmpty else { throw TuneError.emptyGrid(what: "--clamp") }
        guard !o.aggregations.isEmpty else { throw TuneError.emptyGrid(what: "--aggregate") }
        guard !o.lengths.isEmpty else { throw TuneError.emptyGrid(what: "--lengths") }
        for t in o.thetas where !(t > 0) { throw TuneError.nonPositiveTheta(t) }
        let store = try CalibrationStore(path: o.databasePath)
        let run = try store.run(o.runID)
        guard try store.recordingBytes(run: o.runID) > 0 else { throw TuneError.runWithoutRecordings(path: o.databasePath, run: o.runID) }
        guard run.status == .complete else { throw StoreError.runNotComplete(path: o.databasePath, run: o.runID, status: run.status) }
        let model = try MambaModel(directory: o.modelDirectory)
        let fingerprint = model.checkpoint.fingerprint()
        let runFingerprint = try store.model(run.modelID).fingerprint
        if runFingerprint != fingerprint, !o.force {
            throw EvaluationError.tableForAnotherModel(table: runFingerprint, model: o.modelDirectory, modelFingerprint: fingerprint)
        }
        var result = TuneResult(metric: o.task.metric, higherIsBetter: o.task.higherIsBetter, lengths: o.lengths, ranked: [])

        // Tables: reused when the run has them, solved from the stored recordings otherwise.
        let service = TableService(store: store)
        let grid = try o.clampFractions.flatMap { p in try o.aggregations.map {
            try service.parameters(run: o.runID, clampFraction: p, aggregation: $0, interval: o.interval, maxLength: o.maxLength)
        } }
        let tables = try service.tables(run: o.runID, for: grid) { event in
            if case .solving(let p, let a) = event { progress("solving p = \(p), aggregate \(a.rawValue) from the stored recordings") }
            if case .solved = event { result.tablesSolved += 1 }
        }

        // What is evaluated, as a key: the task, the model, the text (or prompt options).
        let evaluator = try Evaluator(options: o, model: model)
        let evaluationKey = EvaluationRecord.evaluationKey(task: o.task.name, fingerprint: fingerprint, textHash: evaluator.textHash,
                                                           settings: evaluator.settings, filterFrom: o.filterFrom)

        // Every table of the run has the run's L, so one filter start holds for the whole grid;
        // below it LongMamba is vanilla and the vanilla point is reused instead of rerun.
        let filterStart = o.filterFrom ?? LongMambaPrefill.defaultFilterStart(trainingLength: run.sampleLength)
        var vanillaAt: [Int: Double] = [:]
        var sources: [Int64: StoredTableSource] = [:]
        func point(table: Int64?, theta: Double?, length: Int) throws -> Double {
            let key = EvaluationRecord.pointKey(evaluationKey: evaluationKey, tableID: table, theta: theta, length: length, metric: o.task.metric)
            if let stored = try store.evaluation(pointKey: key) { result.pointsReused += 1; return stored.value }
            let value: Double, detail: String
            if table != nil, length < filterStart, let vanilla = vanillaAt[length] {
                (value, detail) = (vanilla, "{\"filtered\":false}")
            } else {
                progress("evaluating \(table.map { "table \($0) θ = \(theta ?? 0)" } ?? "vanilla") at \(length) tokens")
                let source = try table.map { id in try sources[id] ?? StoredTableSource(store: store, table: id) }
                if let table, let source { sources[table] = source }
                (value, detail) = try evaluator.evaluate(table: source, theta: theta, length: length)
            }
            try store.saveEvaluation(EvaluationRecord(evaluationKey: evaluationKey, tableID: table, theta: theta, task: o.task.name, length: length,
                                                      metric: o.task.metric, value: value, detailJSON: detail, textHash: evaluator.textHash))
            result.pointsEvaluated += 1
            return value
        }
        func score(_ values: [Double]) -> Double { TuneRow.score(values, higherIsBetter: o.task.higherIsBetter) }

        var rows: [TuneRow] = []
        let vanilla = try o.lengths.map { try point(table: nil, theta: nil, length: $0) }
        vanillaAt = Dictionary(zip(o.lengths, vanilla)) { a, _ in a }
        rows.append(TuneRow(values: vanilla, score: score(vanilla)))
        for (parameters, table) in zip(grid, tables) {
            for theta in o.thetas {
                let values = try o.lengths.map { try point(table: table, theta: theta, length: $0) }
                rows.append(TuneRow(table: table, clampFraction: parameters.clampFraction, aggregation: parameters.aggregation, theta: theta,
                                    values: values, score: score(values)))
            }
        }
        // Best first; ties keep the grid order (vanilla first among equals).
        result.ranked = rows.enumerated().sorted { a, b in
            a.element.score == b.element.score ? a.offset < b.offset
                : (o.task.higherIsBetter ? a.element.score > b.element.score : a.element.score < b.element.score)
        }.map(\.element)
        return result
    }
}

/// Evaluates one point (a table and θ, or vanilla, at one length) of the tune's task.
private struct Evaluator {
    let options: TuneOptions
    let model: MambaModel
    /// The perplexity text's token ids (empty for passkey).
    let tokens: [Int]
    let prompts: PasskeyPrompts?
    let textHash: String
    let settings: String

    init(options o: TuneOptions, model: MambaModel) throws {
        options = o; self.model = model
        switch o.task {
        case let .perplexity(text, windows):
            tokens = try EvaluationJob.tokens(text, modelDirectory: o.modelDirectory).ids
            prompts = nil
            textHash = SHA256.hash(data: tokens.map { Int32(truncatingIfNeeded: $0) }.littleEndianData).hexString
            settings = "windows \(windows)"
        case let .passkey(depths, trials, seed, haystack):
            let p = try PasskeyPrompts(modelDirectory: o.modelDirectory, tokenizer: o.tokenizer, haystack: haystack)
            prompts = p
            tokens = []
            let haystackHash = p.customHaystack ? SHA256.hash(data: p.haystackUnit.map { Int32(truncatingIfNeeded: $0) }.littleEndianData).hexString : "filler"
            textHash = SHA256.hash(data: Data("\(p.tokenizer.sha256)|\(haystackHash)".utf8)).hexString
            settings = "depths \(depths) trials \(trials) seed \(seed)"
        }
    }

    func evaluate(table: (any ThresholdTableSource)?, theta: Double?, length: Int) throws -> (value: Double, detail: String) {
        let o = options
        switch o.task {
        case let .perplexity(_, windows):
            var e = PerplexityEvaluation(model: model, table: table)
            e.configure(theta: theta ?? GlobalChannels.defaultTheta, filterFrom: o.filterFrom, allowBeyondTable: false, chunk: o.chunk)
            e.windows = windows
            e.includeVanilla = table == nil
            let p = try e.run(tokens: tokens, lengths: [length])[0]
            let value = table == nil ? p.vanillaPerplexity : (p.longMambaPerplexity ?? p.vanillaPerplexity)
            return (value, "{\"windows\":\(p.windows),\"kept_share\":\(p.keptShare ?? 1),\"tabulated_length\":\(p.tabulatedLength.map(String.init) ?? "null")}")
        case let .passkey(depths, trials, seed, _):
            var e = PasskeyEvaluation(model: model, prompts: prompts!, table: table)
            e.configure(theta: theta ?? GlobalChannels.defaultTheta, filterFrom: o.filterFrom, allowBeyondTable: false, chunk: o.chunk)
            e.trials = trials
            e.seed = seed
            e.includeVanilla = table == nil
            let points = try e.run(lengths: [length], depths: depths).points
            let accuracies = points.map { table == nil ? $0.vanillaAccuracy : ($0.longMambaAccuracy ?? $0.vanillaAccuracy) }
            let mean = accuracies.reduce(0, +) / Double(accuracies.count)
            return (mean, "{\"depths\":\(depths),\"accuracy_by_depth\":\(accuracies),\"trials\":\(trials)}")
        }
    }
}

/// What a finished `tune` chose for one table, read back from the stored evaluations.
public struct TunedTheta: Sendable, Equatable {
    public var theta: Double
    public var task: String
    public var lengths: [Int]
    public var score: Double

    /// The θ with the best score for `table` in the newest stored evaluation (task, text and
    /// options) that measured it at every one of its lengths; nil when `tune` never evaluated it.
    public static func best(store: CalibrationStore, table: Int64) throws -> TunedTheta? {
        let rows = try store.evaluations()
        let mine = rows.filter { $0.tableID == table && $0.theta != nil }
        // The newest evaluation first (rows come back in insertion order).
        var keys: [String] = []
        for r in mine.reversed() where !keys.contains(r.evaluationKey) { keys.append(r.evaluationKey) }
        for key in keys {
            let points = mine.filter { $0.evaluationKey == key }
            let lengths = Array(Set(rows.filter { $0.evaluationKey == key }.map(\.length))).sorted()
            let higher = points[0].metric == "accuracy"
            var best: TunedTheta?
            for theta in Array(Set(points.compactMap(\.theta))).sorted() {
                let values = lengths.compactMap { S in points.first { $0.theta == theta && $0.length == S }?.value }
                guard values.count == lengths.count else { continue }
                let score = TuneRow.score(values, higherIsBetter: higher)
                if best == nil || (higher ? score > best!.score : score < best!.score) {
                    best = TunedTheta(theta: theta, task: points[0].task, lengths: lengths, score: score)
                }
            }
            if let best { return best }
        }
        return nil
    }
}
