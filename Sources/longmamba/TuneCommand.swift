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
        let progress = ProgressLines(enabled: !quiet)
        let result = try TuneJob(options: options).run { progress.line($0) }
        if best {
            guard let winner = result.best, let table = winner.table, let th = winner.theta else { return }
            print("\(table) \(th)")
            return
        }
        func fmt(_ v: Double) -> String { result.higherIsBetter ? String(format: "%.0f%%", 100 * v) : String(format: "%.3f", v) }
        let header = ["rank", "table", "p", "agg", "θ"] + result.lengths.map { "\(result.metric)@\($0)" } + [result.higherIsBetter ? "mean" : "geo-mean"]
        var rows: [[String]] = []
        for (i, r) in result.ranked.enumerated() {
            let table: String = r.table.map { String($0) } ?? "vanilla"
            let p: String = r.clampFraction.map { "\($0)" } ?? "-"
            let agg: String = r.aggregation?.rawValue ?? "-"
            let th: String = r.theta.map { "\($0)" } ?? "-"
            var row: [String] = [String(i + 1), table, p, agg, th]
            row += r.values.map(fmt)
            row.append(fmt(r.score))
            rows.append(row)
        }
        printTable(header: header, rows: rows)
        FileHandle.standardError.write(Data("\(result.pointsEvaluated) points evaluated, \(result.pointsReused) reused from \(db); \(result.tablesSolved) tables solved\n".utf8))
        if let w = result.best, let table = w.table, let th = w.theta {
            let vanilla = result.ranked.first { $0.table == nil }?.score ?? .nan
            print("best: table \(table) (p = \(w.clampFraction ?? 0), aggregate \(w.aggregation?.rawValue ?? "?")) with θ = \(th): \(fmt(w.score)) against vanilla \(fmt(vanilla))")
        }
    }
}
