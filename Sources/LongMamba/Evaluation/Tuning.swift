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
    /// What one unit of effort is: "windows" (perplexity) or "trials" (passkey, per depth).
    public var unit: String { if case .perplexity = self { return "windows" } else { return "prompts" } }
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
    /// Coarse to fine (`TuneHalving`): every (table, θ) at the shortest length with a ninth or
    /// a third of the trials (windows), the best third on to the next length, and so on.
    public var halving = false
    /// How global channels are filtered, compared side by side (default: dt_thre alone).
    public var methods: [LongMambaMethod] = [.dtThre]
    /// Per-layer scale methods compared beside them: every stored table of the run with that method.
    public var scaleMethods: [ScaleMethod] = []
    /// `--shard i/n`: evaluate only points k with k mod n = i (`TuneJob.points`) and rank nothing;
    /// `merge` joins the shards' evaluations and a tune over the joined store ranks them all.
    public var shardIndex = 0
    public var shardCount = 1

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
    /// How global channels were filtered (nil: vanilla or a scale table).
    public var method: LongMambaMethod?
    /// A per-layer scale table's method (then `method` and θ are nil).
    public var scaleMethod: ScaleMethod?
    /// The method as the CLI names it (nil: vanilla).
    public var methodName: String? { scaleMethod?.rawValue ?? method?.rawValue }
    /// metric at each of the options' lengths, in order (NaN: not evaluated, the row was dropped
    /// by `--halving` before that length)
    public var values: [Double]
    /// Perplexity: geometric mean over lengths; passkey: mean accuracy (over the lengths evaluated).
    public var score: Double
    /// `--halving`: the length after which the row was dropped (nil: evaluated at every length).
    public var droppedAfter: Int?
    /// Where its points were measured: "swift cpu", "torch cuda:0 (…) bfloat16", … (distinct, in order).
    public var measuredBy: [String] = []

    /// The ranking score of a row's values (the `tune` table and the report's grid); NaN values
    /// (lengths a halving never reached) are left out.
    public static func score(_ values: [Double], higherIsBetter: Bool) -> Double {
        let v = values.filter { !$0.isNaN }
        return higherIsBetter ? v.reduce(0, +) / Double(v.count)
                              : Foundation.exp(v.map { Foundation.log($0) }.reduce(0, +) / Double(v.count))
    }
}

public struct TuneResult: Sendable {
    public var metric: String
    public var higherIsBetter: Bool
    public var lengths: [Int]
    /// Best first; vanilla is among them. With `--halving` the rows evaluated at every length
    /// come first, then those dropped later before those dropped earlier. Empty for a shard.
    public var ranked: [TuneRow]
    public var pointsEvaluated = 0
    public var pointsReused = 0
    public var tablesSolved = 0
    /// Prompts (passkey) or windows (perplexity) run for the points evaluated now, per method.
    public var promptsRun = 0
    /// `--halving`: trials (passkey) or windows (perplexity) per point at each length.
    public var effortByLength: [Int] = []
    public var best: TuneRow? { ranked.first { $0.table != nil } }
}

public enum TuneError: Error, CustomStringConvertible, Sendable, Equatable {
    case emptyGrid(what: String)
    case nonPositiveTheta(Double)
    case runWithoutRecordings(path: String, run: Int64)
    case badShard(index: Int, count: Int)
    case shardedHalving
    /// A shard evaluates tables already in the store, so that every shard's table ids agree.
    case shardNeedsTables(path: String, run: Int64, missing: [String], command: String)
    /// A length beyond the tables' grid: refused before anything is evaluated.
    case beyondTables(length: Int, largest: Int, command: String, interval: Int, maxLength: Int)
    /// `--method delta_scale|a_power` with no such table for the run.
    case noScaleTables(path: String, run: Int64, method: String)

    public var description: String {
        switch self {
        case let .emptyGrid(what): return "tune: give at least one value of \(what)"
        case let .nonPositiveTheta(t): return "tune: θ must be > 0, got \(t)"
        case let .runWithoutRecordings(path, run):
            return "\(path): run \(run) has no stored recordings to solve tables from (was it made by `calibrate`, or is it still recording?)"
        case let .badShard(i, n): return "tune: --shard \(i)/\(n) is not a shard: give i/n with 0 ≤ i < n"
        case .shardedHalving:
            return "tune: --halving chooses each length's points from the previous length's results, so it cannot be sharded; shard the full grid, or run the halving on one machine"
        case let .beyondTables(length, largest, command, interval, maxLength):
            return "tune: length \(length) is beyond the tables' largest length \(largest); solve tables up to it first:\n  \(command)\nthen tune with --interval \(interval) --max-length \(maxLength)"
        case let .noScaleTables(path, run, method):
            return "\(path): run \(run) has no \(method) table; calibrate one first:\n  longmamba calibrate-scales --db \(path) --run \(run) --model DIR --corpus FILES --method \(method) --lengths …"
        case let .shardNeedsTables(path, run, missing, command):
            return "\(path): run \(run) has no table for \(missing.joined(separator: ", ")); a shard only evaluates tables already in the store (every shard must agree on table ids): solve them first with\n  \(command)"
        }
    }
}

/// `--halving`: how many trials (or windows) each length gets, and how many points go on.
public enum TuneHalving {
    /// Trials or windows at round r of k (r = 0 the shortest length): ⌈full / 3^(k−1−r)⌉, at least 1.
    public static func effort(full: Int, round r: Int, rounds k: Int) -> Int {
        var divisor = 1
        for _ in 0..<(k - 1 - r) { divisor *= 3 }
        return max(1, (full + divisor - 1) / divisor)
    }

    /// Points kept for the next length: the best ⌈n/3⌉.
    public static func kept(_ n: Int) -> Int { (n + 2) / 3 }

    /// Indices of the points that go on: the best `kept(n)` by value, ties in grid order.
    public static func survivors(_ values: [Double], higherIsBetter: Bool) -> [Int] {
        let order = values.indices.sorted { a, b in
            values[a] == values[b] ? a < b : (higherIsBetter ? values[a] > values[b] : values[a] < values[b])
        }
        return Array(order.prefix(kept(values.count))).sorted()
    }
}

public struct TuneJob {
    public let options: TuneOptions
    public init(options: TuneOptions) { self.options = options }

    /// The points of a full (not halving) grid in the order shards split them: vanilla at
    /// every length, then each method, each table of the grid (clamp fractions outer, aggregations
    /// inner), each θ, each length. Point k belongs to shard k mod n.
    /// Then each scale table (of `scaleTables`, in order) at each length, without θ.
    public static func points(tables: [Int64], thetas: [Double], lengths: [Int], methods: [LongMambaMethod] = [.dtThre],
                              scaleTables: [(table: Int64, method: ScaleMethod)] = [])
        -> [(table: Int64?, theta: Double?, method: String?, length: Int)] {
        var points: [(table: Int64?, theta: Double?, method: String?, length: Int)] = lengths.map { (nil, nil, nil, $0) }
        for m in methods { for t in tables { for th in thetas { for S in lengths { points.append((t, th, m.rawValue, S)) } } } }
        for t in scaleTables { for S in lengths { points.append((t.table, nil, t.method.rawValue, S)) } }
        return points
    }

    /// The `longmamba sweep` that solves these (p, aggregation) tables of the run on this grid.
    func sweepCommand(_ parameters: [SolverParameters], interval: Int, maxLength: Int) -> String {
        let clamps = Array(Set(parameters.map(\.clampFraction))).sorted().map { "\($0)" }.joined(separator: ",")
        let aggs = Array(Set(parameters.map(\.aggregation.rawValue))).sorted().joined(separator: ",")
        return "longmamba sweep --db \(options.databasePath) --run \(options.runID) --clamp \(clamps) --aggregate \(aggs) --interval \(interval) --max-length \(maxLength)"
    }

    public func run(progress: (String) -> Void = { _ in }) throws -> TuneResult {
        let o = options
        guard !o.thetas.isEmpty else { throw TuneError.emptyGrid(what: "--theta") }
        guard !o.clampFractions.isEmpty else { throw TuneError.emptyGrid(what: "--clamp") }
        guard !o.aggregations.isEmpty else { throw TuneError.emptyGrid(what: "--aggregate") }
        guard !o.lengths.isEmpty else { throw TuneError.emptyGrid(what: "--lengths") }
        guard !o.methods.isEmpty || !o.scaleMethods.isEmpty else { throw TuneError.emptyGrid(what: "--method") }
        for t in o.thetas where !(t > 0) { throw TuneError.nonPositiveTheta(t) }
        guard o.shardCount >= 1, o.shardIndex >= 0, o.shardIndex < o.shardCount else { throw TuneError.badShard(index: o.shardIndex, count: o.shardCount) }
        let sharded = o.shardCount > 1
        if sharded && o.halving { throw TuneError.shardedHalving }
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
        // Only scale methods asked for: no θ × p table is needed (none is solved or checked).
        let grid = o.methods.isEmpty ? [] : try o.clampFractions.flatMap { p in try o.aggregations.map {
            try service.parameters(run: o.runID, clampFraction: p, aggregation: $0, interval: o.interval, maxLength: o.maxLength)
        } }
        if sharded {
            let existing = try store.tables().filter { $0.runID == o.runID && $0.method == CalibrationStore.longMambaMethod }.map(\.parameters)
            let missing = grid.filter { !existing.contains($0) }
            if !missing.isEmpty {
                let names = missing.map { "p = \($0.clampFraction), aggregate \($0.aggregation.rawValue)" }
                let g = try service.grid(run: o.runID, interval: o.interval, maxLength: o.maxLength)
                throw TuneError.shardNeedsTables(path: o.databasePath, run: o.runID, missing: names,
                                                 command: sweepCommand(missing, interval: g.interval, maxLength: g.maxLength))
            }
        }
        let tables = try service.tables(run: o.runID, for: grid) { event in
            if case .solving(let p, let a) = event { progress("solving p = \(p), aggregate \(a.rawValue) from the stored recordings") }
            if case .solved = event { result.tablesSolved += 1 }
        }

        // Every table of the run has the run's L, so one filter start holds for the whole grid;
        // below it LongMamba is vanilla and the vanilla point is reused instead of rerun.
        let filterStart = o.filterFrom ?? LongMambaPrefill.defaultFilterStart(trainingLength: run.sampleLength)
        // Every filtered length within every table of the grid, or nothing is evaluated.
        let largest = grid.map { $0.lengths.last ?? 0 }.min() ?? 0
        if !grid.isEmpty, let beyond = o.lengths.first(where: { $0 >= filterStart && $0 > largest }), let interval = grid.first?.interval {
            let need = (o.lengths.max()! + interval - 1) / interval * interval
            throw TuneError.beyondTables(length: beyond, largest: largest, command: sweepCommand(grid, interval: interval, maxLength: need),
                                         interval: interval, maxLength: need)
        }
        // The scale tables compared: every table of the run with each scale method, each within its lengths.
        var scaleTables: [(table: Int64, method: ScaleMethod)] = []
        for m in o.scaleMethods {
            let found = try store.scaleTables(run: o.runID, method: m)
            guard !found.isEmpty else { throw TuneError.noScaleTables(path: o.databasePath, run: o.runID, method: m.rawValue) }
            for t in found {
                if let beyond = o.lengths.first(where: { $0 >= filterStart && $0 > t.lengths.last! }) {
                    throw EvaluationError.beyondScaleTable(length: beyond, largest: t.lengths.last!)
                }
                scaleTables.append((t.id, m))
            }
        }
        var sources: [Int64: any PrefillTableSource] = [:]

        /// Evaluates (or finds) one point with `evaluator`; `vanilla`: that evaluator's vanilla value at `length`, if known.
        func point(_ evaluators: Evaluators, table: Int64?, theta: Double?, method: String?, length: Int, vanilla: Double?) throws -> (value: Double, measuredBy: String) {
            let evaluator = evaluators[method ?? LongMambaMethod.dtThre.rawValue]
            let key = EvaluationRecord.pointKey(evaluationKey: evaluator.evaluationKey, tableID: table, theta: theta, length: length, metric: o.task.metric)
            if let stored = try store.evaluation(pointKey: key) { result.pointsReused += 1; return (stored.value, stored.measuredBy) }
            let value: Double, detail: String
            if table != nil, length < filterStart, let vanilla {
                (value, detail) = (vanilla, evaluator.tagged("{\"filtered\":false}"))
            } else {
                progress("evaluating \(table.map { id in "table \(id)" + (theta.map { " θ = \($0)" } ?? "") } ?? "vanilla")\(method.map { $0 == LongMambaMethod.dtThre.rawValue ? "" : " (\($0))" } ?? "") at \(length) tokens\(evaluator.effortNote)")
                let source: (any PrefillTableSource)? = try table.map { id in
                    if let s = sources[id] { return s }
                    if case .scales = try store.tableKind(id) { return try StoredScaleSource(store: store, table: id) }
                    return try StoredTableSource(store: store, table: id)
                }
                if let table, let source { sources[table] = source }
                let measured = try evaluator.evaluate(table: source, theta: theta, length: length)
                (value, detail) = (measured.value, measured.detail)
                result.promptsRun += measured.prompts
            }
            let record = EvaluationRecord(evaluationKey: evaluator.evaluationKey, tableID: table, theta: theta, task: o.task.name, length: length,
                                          metric: o.task.metric, value: value, detailJSON: detail, textHash: evaluator.textHash)
            try store.saveEvaluation(record)
            result.pointsEvaluated += 1
            return (value, record.measuredBy)
        }
        func score(_ values: [Double]) -> Double { TuneRow.score(values, higherIsBetter: o.task.higherIsBetter) }

        // The candidates, in grid order.
        var rows: [TuneRow] = [TuneRow(values: [], score: .nan)]
        for method in o.methods {
            for (parameters, table) in zip(grid, tables) {
                for theta in o.thetas {
                    rows.append(TuneRow(table: table, clampFraction: parameters.clampFraction, aggregation: parameters.aggregation, theta: theta,
                                        method: method, values: [], score: .nan))
                }
            }
        }
        for t in scaleTables { rows.append(TuneRow(table: t.table, scaleMethod: t.method, values: [], score: .nan)) }
        func note(_ row: Int, _ measured: String) { if !rows[row].measuredBy.contains(measured) { rows[row].measuredBy.append(measured) } }

        if sharded {
            let evaluator = try Evaluators(options: o, task: o.task, model: model, fingerprint: fingerprint)
            var vanillaAt: [Int: Double] = [:]
            for (k, p) in Self.points(tables: tables, thetas: o.thetas, lengths: o.lengths, methods: o.methods, scaleTables: scaleTables).enumerated() where k % o.shardCount == o.shardIndex {
                let v = try point(evaluator, table: p.table, theta: p.theta, method: p.method, length: p.length, vanilla: vanillaAt[p.length])
                if p.table == nil { vanillaAt[p.length] = v.value }
            }
            return result
        }

        if !o.halving {
            let evaluator = try Evaluators(options: o, task: o.task, model: model, fingerprint: fingerprint)
            for S in o.lengths {
                let vanilla = try point(evaluator, table: nil, theta: nil, method: nil, length: S, vanilla: nil)
                rows[0].values.append(vanilla.value); note(0, vanilla.measuredBy)
                for i in 1..<rows.count {
                    let v = try point(evaluator, table: rows[i].table, theta: rows[i].theta, method: rows[i].methodName, length: S, vanilla: vanilla.value)
                    rows[i].values.append(v.value); note(i, v.measuredBy)
                }
            }
        } else {
            // Coarse to fine: length by length (shortest first), each with more trials, keeping the best third.
            let order = o.lengths.indices.sorted { o.lengths[$0] < o.lengths[$1] }
            for i in rows.indices { rows[i].values = [Double](repeating: .nan, count: o.lengths.count) }
            var alive = Array(1..<rows.count)
            for (r, li) in order.enumerated() {
                let S = o.lengths[li]
                let task = o.task.with(effort: { TuneHalving.effort(full: $0, round: r, rounds: order.count) })
                result.effortByLength.append(task.effort)
                let evaluator = try Evaluators(options: o, task: task, model: model, fingerprint: fingerprint)
                let vanilla = try point(evaluator, table: nil, theta: nil, method: nil, length: S, vanilla: nil)
                rows[0].values[li] = vanilla.value; note(0, vanilla.measuredBy)
                for i in alive {
                    let v = try point(evaluator, table: rows[i].table, theta: rows[i].theta, method: rows[i].methodName, length: S, vanilla: vanilla.value)
                    rows[i].values[li] = v.value; note(i, v.measuredBy)
                }
                guard r + 1 < order.count else { break }
                let keep = Set(TuneHalving.survivors(alive.map { rows[$0].values[li] }, higherIsBetter: o.task.higherIsBetter).map { alive[$0] })
                for i in alive where !keep.contains(i) { rows[i].droppedAfter = S }
                alive = alive.filter(keep.contains)
            }
            // effortByLength in the options' length order
            result.effortByLength = o.lengths.indices.map { li in result.effortByLength[order.firstIndex(of: li)!] }
        }
        for i in rows.indices { rows[i].score = score(rows[i].values) }
        // Best first; ties keep the grid order (vanilla first among equals). Rows dropped by a
        // halving come after those that reached the last length, the later dropped first.
        let depth: (TuneRow) -> Int = { r in r.droppedAfter.map { S in o.lengths.sorted().firstIndex(of: S)! } ?? Int.max }
        result.ranked = rows.enumerated().sorted { a, b in
            let da = depth(a.element), db = depth(b.element)
            if da != db { return da > db }
            return a.element.score == b.element.score ? a.offset < b.offset
                : (o.task.higherIsBetter ? a.element.score > b.element.score : a.element.score < b.element.score)
        }.map(\.element)
        return result
    }
}

extension TuneTask {
    /// Trials (passkey) or windows (perplexity) per point.
    var effort: Int {
        switch self { case let .perplexity(_, windows): return windows; case let .passkey(_, trials, _, _): return trials }
    }

    /// The same task with `change(effort)` trials or windows.
    func with(effort change: (Int) -> Int) -> TuneTask {
        switch self {
        case let .perplexity(text, windows): return .perplexity(text: text, windows: change(windows))
        case let .passkey(depths, trials, seed, haystack): return .passkey(depths: depths, trials: change(trials), seed: seed, haystack: haystack)
        }
    }
}

extension EvaluationRecord {
    /// "swift cpu", "torch cuda:0 (…)", with the numeric type where it is not float32.
    public var measuredBy: String { "\(backend) \(device)" + (dtype == Self.float32 ? "" : " \(dtype)") }
}

/// One evaluator per method (the method is part of the evaluation key, except dt_thre's, whose
/// keys are those of tools before methods); vanilla points use dt_thre's.
private struct Evaluators {
    let byMethod: [String: Evaluator]
    init(options o: TuneOptions, task: TuneTask, model: MambaModel, fingerprint: String) throws {
        let base = try Evaluator(options: o, task: task, model: model, fingerprint: fingerprint)
        var all: [String: Evaluator] = [LongMambaMethod.dtThre.rawValue: base]
        for m in o.methods where m != .dtThre { all[m.rawValue] = base.with(method: m, fingerprint: fingerprint) }
        for m in o.scaleMethods { all[m.rawValue] = base.with(methodName: m.rawValue, fingerprint: fingerprint) }
        byMethod = all
    }
    subscript(method: String) -> Evaluator { byMethod[method]! }
}

/// Evaluates one point (a table and θ, or vanilla, at one length) of the tune's task.
private struct Evaluator {
    let options: TuneOptions
    let task: TuneTask
    var method: LongMambaMethod
    /// The method in the key and detail: `method`'s name, or a scale table's (delta_scale, a_power).
    var methodName = LongMambaMethod.dtThre.rawValue
    let model: MambaModel
    /// The perplexity text's token ids (empty for passkey).
    let tokens: [Int]
    let prompts: PasskeyPrompts?
    let textHash: String
    var settings: String
    var evaluationKey: String

    /// dt_thre's evaluation (`with(method:fingerprint:)` gives another method's).
    init(options o: TuneOptions, task: TuneTask, model: MambaModel, fingerprint: String) throws {
        options = o; self.task = task; self.model = model; method = .dtThre
        switch task {
        case let .perplexity(text, windows):
            let ids = try EvaluationJob.tokens(text, modelDirectory: o.modelDirectory).ids
            // Every length, before any point is evaluated and stored.
            if let S = o.lengths.first(where: { $0 > ids.count }) { throw EvaluationError.textTooShort(tokens: ids.count, length: S) }
            tokens = ids
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
        // What is evaluated, as a key: the task, the model, the text (or prompt options).
        evaluationKey = EvaluationRecord.evaluationKey(task: task.name, fingerprint: fingerprint, textHash: textHash, settings: settings, filterFrom: o.filterFrom)
    }

    /// The same evaluation with another method (its own key).
    func with(method m: LongMambaMethod, fingerprint: String) -> Evaluator {
        var e = with(methodName: m.rawValue, fingerprint: fingerprint)
        e.method = m
        return e
    }

    /// The same evaluation keyed and tagged with another method's name (scale tables: the prefill
    /// takes the method from the table).
    func with(methodName name: String, fingerprint: String) -> Evaluator {
        var e = self
        e.methodName = name
        e.settings = settings + " method \(name)"
        e.evaluationKey = EvaluationRecord.evaluationKey(task: task.name, fingerprint: fingerprint, textHash: textHash, settings: e.settings, filterFrom: options.filterFrom)
        return e
    }

    /// Progress suffix: the trials or windows of a halving round.
    var effortNote: String {
        guard options.halving else { return "" }
        if case .passkey = task { return " (\(task.effort) trials)" }
        return " (\(task.effort) windows)"
    }

    /// A point's detail, naming the method where it is not dt_thre (dt_thre's details are those
    /// of older tools).
    func tagged(_ detail: String) -> String {
        methodName == LongMambaMethod.dtThre.rawValue ? detail : String(detail.dropLast()) + ",\"method\":\"\(methodName)\"}"
    }

    func evaluate(table: (any PrefillTableSource)?, theta: Double?, length: Int) throws -> (value: Double, detail: String, prompts: Int) {
        let o = options
        switch task {
        case let .perplexity(_, windows):
            var e = PerplexityEvaluation(model: model, table: table)
            e.configure(theta: theta ?? GlobalChannels.defaultTheta, filterFrom: o.filterFrom, allowBeyondTable: false, chunk: o.chunk, method: method)
            e.windows = windows
            e.includeVanilla = table == nil
            let p = try e.run(tokens: tokens, lengths: [length])[0]
            let value = table == nil ? p.vanillaPerplexity : (p.longMambaPerplexity ?? p.vanillaPerplexity)
            return (value, tagged("{\"windows\":\(p.windows),\"kept_share\":\(p.keptShare ?? 1),\"tabulated_length\":\(p.tabulatedLength.map(String.init) ?? "null")}"), p.windows)
        case let .passkey(depths, trials, seed, _):
            var e = PasskeyEvaluation(model: model, prompts: prompts!, table: table)
            e.configure(theta: theta ?? GlobalChannels.defaultTheta, filterFrom: o.filterFrom, allowBeyondTable: false, chunk: o.chunk, method: method)
            e.trials = trials
            e.seed = seed
            e.includeVanilla = table == nil
            let points = try e.run(lengths: [length], depths: depths).points
            let accuracies = points.map { table == nil ? $0.vanillaAccuracy : ($0.longMambaAccuracy ?? $0.vanillaAccuracy) }
            let mean = accuracies.reduce(0, +) / Double(accuracies.count)
            return (mean, tagged("{\"depths\":\(depths),\"accuracy_by_depth\":\(accuracies),\"trials\":\(trials)}"), depths.count * trials)
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
        // dt_thre's evaluations only: θ of another method is not the θ a dt_thre backend should use.
        let mine = rows.filter { $0.tableID == table && $0.theta != nil && !$0.detailJSON.contains("\"method\":") }
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
