import ArgumentParser
import Foundation
import LongMamba

/// `longmamba tune`: θ × p (× aggregation) chosen by evaluation, every point stored.
struct TuneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tune",
        abstract: "Evaluate every (table, θ) of a grid on a stored run (solving missing tables from its recordings) and rank them against vanilla.",
        discussion: """
            Every evaluated point is stored in the database (table evaluations): a rerun with an \
            overlapping grid reuses finished points, and a killed tune resumes. Perplexity ranks by \
            the geometric mean over --lengths (lower is better); passkey by the mean accuracy.
            """)

    @Option(help: "SQLite database.") var db: String
    @Option(name: .customLong("run"), help: "Calibration run id.") var runID: Int64
    @Option(help: "Model directory.") var model: String
    @Option(help: "θ values > 0 (repeat or comma-separate).") var theta: [String] = ["0.01,0.05,0.1,0.3"]
    @Option(help: "Clamp fractions p (repeat or comma-separate).") var clamp: [String] = ["0.05,0.1,0.2"]
    @Option(help: "Aggregations: max, mean (repeat or comma-separate).") var aggregate: [String] = ["max"]
    @Option(help: "Tabulate every this many tokens (for solved tables; default: the run's calibrated grid).") var interval: TokenCount?
    @Option(name: .customLong("max-length"), help: "Longest tabulated length (for solved tables; default: the run's calibrated grid).") var maxLength: TokenCount?
    @Option(help: "perplexity or passkey.") var task: EvalCommand.Task = .perplexity
    @Option(help: "Perplexity: text file.") var text: String?
    @Option(help: "Perplexity: instead of --text, whitespace-separated token ids.") var tokens: String?
    @Option(help: "Perplexity: windows per length.") var windows: Int = 1
    @Option(help: "Passkey: needle depths in [0, 1] (repeat or comma-separate; as eval).") var depths: [String] = ["0,0.25,0.5,0.75,1"]
    @Option(help: "Passkey: trials per length and depth (as eval).") var trials: Int = 10
    @Option(help: "Passkey: seed of the keys.") var seed: UInt64 = 0
    @Option(help: "Passkey: haystack text file instead of the filler.") var haystack: String?
    @Option(help: "Lengths (repeat or comma-separate; k = ×1000, e.g. 2k,4k).") var lengths: [String] = []
    @Option(help: "Filter only sequences of at least this many tokens (default 1.5 × L).") var filterFrom: TokenCount?
    @Option(help: "tokenizer.json (default: the model directory's).") var tokenizer: String?
    @Option(help: "Methods compared side by side (repeat or comma-separate): dt_thre, alpha, bound, norm, channelwise_topk (modes of the θ × p tables), delta_scale, a_power (every such table of the run, from calibrate-scales).") var method: [String] = ["dt_thre"]
    @Flag(help: "Coarse to fine: every point at the shortest length with a ninth (then a third) of the trials or windows, the best third on to the next length, and so on.") var halving = false
    @Option(help: "Evaluate only points k with k mod n = i (i/n, e.g. 0/4) into this database; `longmamba merge` joins the shards' evaluations.") var shard: String = "0/1"
    @Flag(help: "Print only the winner: table id and θ.") var best = false
    @Flag(help: "Use a run calibrated on another model (fingerprint mismatch).") var force = false
    @Option(help: "Threads for matrix products and the scan.") var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Flag(help: "No progress on stderr.") var quiet = false

    func run() throws {
        BLASThreads.set(threads)
        let tuneTask: TuneTask
        switch task {
        case .perplexity:
            let input: EvaluationText? = tokens.map { .tokens(path: $0) } ?? text.map { .text(path: $0, tokenizer: tokenizer) }
            guard let input else { throw ValidationError("--task perplexity needs --text FILE or --tokens FILE") }
            tuneTask = .perplexity(text: input, windows: windows)
        case .passkey:
            tuneTask = .passkey(depths: try listValues(depths, name: "depths") { Double($0) }, trials: trials, seed: seed, haystack: haystack)
        }
        var options = TuneOptions(databasePath: db, runID: runID, modelDirectory: model,
                                  thetas: try thetaValues(theta),
                                  clampFractions: try listValues(clamp, name: "clamp") { Double($0) },
                                  aggregations: try listValues(aggregate, name: "aggregate") { Aggregation(rawValue: $0) },
                                  lengths: try lengthValues(lengths, name: "lengths"), task: tuneTask)
        options.interval = interval?.value
        options.maxLength = maxLength?.value
        options.filterFrom = filterFrom?.value
        options.tokenizer = tokenizer
        options.force = force
        options.halving = halving
        let names = try listValues(method, name: "method") { LongMambaMethod(rawValue: $0) != nil || ScaleMethod(rawValue: $0) != nil ? $0 : nil }
        options.methods = names.compactMap { LongMambaMethod(rawValue: $0) }
        options.scaleMethods = names.compactMap { ScaleMethod(rawValue: $0) }
        let parts = shard.split(separator: "/").compactMap { Int($0) }
        guard parts.count == 2 else { throw ValidationError("--shard must look like i/n, e.g. 0/4") }
        (options.shardIndex, options.shardCount) = (parts[0], parts[1])
        let progress = ProgressLines(enabled: !quiet)
        let result = try TuneJob(options: options).run { progress.line($0) }
        progress.finish()
        if options.shardCount > 1 {
            print("shard \(shard): \(result.pointsEvaluated) points evaluated, \(result.pointsReused) already in \(db) (\(result.promptsRun) \(options.task.unit) run)")
            print("join the shards with `longmamba merge --db MAIN SHARD…`; a tune with the same options on MAIN then ranks every point without evaluating")
            return
        }
        let showMethod = options.methods != [.dtThre] || !options.scaleMethods.isEmpty
        if best {
            guard let winner = result.best, let table = winner.table else { return }
            // With several methods the winner's method follows: "table θ method" (θ "-" for a scale table).
            print("\(table) \(winner.theta.map { "\($0)" } ?? "-")" + (showMethod ? " \(winner.methodName ?? "dt_thre")" : ""))
            return
        }
        func fmt(_ v: Double) -> String { result.higherIsBetter ? String(format: "%.0f%%", 100 * v) : String(format: "%.3f", v) }
        func value(_ v: Double) -> String { v.isNaN ? "-" : fmt(v) }
        let effort = halving ? result.effortByLength.map { " (\($0))" } : result.lengths.map { _ in "" }
        let header = ["rank", "table", "p", "agg"] + (showMethod ? ["method"] : []) + ["θ"] + zip(result.lengths, effort).map { "\(result.metric)@\($0.0)\($0.1)" }
            + [result.higherIsBetter ? "mean" : "geo-mean", "measured by"] + (halving ? ["dropped"] : [])
        var rows: [[String]] = []
        for (i, r) in result.ranked.enumerated() {
            let table: String = r.table.map { String($0) } ?? "vanilla"
            let p: String = r.clampFraction.map { "\($0)" } ?? "-"
            let agg: String = r.aggregation?.rawValue ?? "-"
            let th: String = r.theta.map { "\($0)" } ?? "-"
            var row: [String] = [String(i + 1), table, p, agg] + (showMethod ? [r.methodName ?? "-"] : []) + [th]
            row += r.values.map(value)
            row.append(fmt(r.score))
            row.append(r.measuredBy.joined(separator: " + "))
            if halving { row.append(r.droppedAfter.map { "after \($0)" } ?? "") }
            rows.append(row)
        }
        printTable(header: header, rows: rows)
        if halving {
            let per = task == .passkey ? "trials per depth" : "windows"
            print("halving: \(zip(result.lengths, result.effortByLength).map { "\($0.1) \(per) at \($0.0)" }.joined(separator: ", ")); the best third of each length went on to the next")
        }
        FileHandle.standardError.write(Data("\(result.pointsEvaluated) points evaluated (\(result.promptsRun) \(options.task.unit)), \(result.pointsReused) reused from \(db); \(result.tablesSolved) tables solved\n".utf8))
        if let w = result.best, let table = w.table, let scale = w.scaleMethod {
            let vanilla = result.ranked.first { $0.table == nil }?.score ?? .nan
            print("best: table \(table) (\(scale.rawValue), per-layer scales): \(fmt(w.score)) against vanilla \(fmt(vanilla))")
        } else if let w = result.best, let table = w.table, let th = w.theta {
            let vanilla = result.ranked.first { $0.table == nil }?.score ?? .nan
            let how = showMethod ? ", method \(w.method?.rawValue ?? "dt_thre")" : ""
            print("best: table \(table) (p = \(w.clampFraction ?? 0), aggregate \(w.aggregation?.rawValue ?? "?")\(how)) with θ = \(th): \(fmt(w.score)) against vanilla \(fmt(vanilla))")
        }
    }
}
