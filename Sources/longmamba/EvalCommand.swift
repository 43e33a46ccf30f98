import ArgumentParser
import Foundation
import LongMamba

/// `longmamba eval`: perplexity of vanilla and LongMamba inference at several lengths.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Perplexity or passkey retrieval against sequence length, vanilla and with a LongMamba table.",
        discussion: """
            --task perplexity (default): perplexity of windows of each length of --text/--tokens, \
            optionally in buckets of --by-position N positions. --task passkey: a pass key hidden at \
            each --depths in a haystack of each length, greedy-decoded; accuracy over --trials keys.
            """)

    enum Task: String, ExpressibleByArgument { case perplexity, passkey }

    @Option(help: "perplexity or passkey.")
    var task: Task = .perplexity

    @Option(help: "Model directory.")
    var model: String
    @Option(help: "Text file to evaluate on (tokenized with the model's tokenizer.json or --tokenizer).")
    var text: String?
    @Option(help: "Instead of --text: whitespace-separated token ids.")
    var tokens: String?
    @Option(help: "tokenizer.json (default: the model directory's).")
    var tokenizer: String?
    @OptionGroup var tableOptions: AppliedTableOptions
    @Option(help: "Lengths (repeat or comma-separate; k = ×1000, e.g. 2k,4k,8k or 256,512).")
    var lengths: [String] = []
    @Option(help: "Windows per length, evenly spaced over the text (1 = the first window).")
    var windows: Int = 1
    @Option(name: .customLong("by-position"), help: "Perplexity: also report buckets of N positions of each window.")
    var byPosition: Int?
    @Option(help: "Passkey: needle depths in [0, 1] (repeat or comma-separate).")
    var depths: [String] = ["0,0.25,0.5,0.75,1"]
    @Option(help: "Passkey: trials (keys) per length and depth.")
    var trials: Int = 10
    @Option(help: "Passkey: seed of the keys.")
    var seed: UInt64 = 0
    @Option(help: "Passkey: a text file to use as the haystack instead of the filler sentences (repeated when short).")
    var haystack: String?
    @Flag(help: "Use the table's largest length for longer windows instead of refusing.")
    var allowBeyondTable = false
    @Option(help: "Write results as JSON (- for standard output).")
    var json: String?
    @Option(help: "Write results as CSV (- for standard output).")
    var csv: String?
    @Option(help: "Write the plot as SVG: perplexity against length (or position), or the passkey heatmap.")
    var svg: String?
    @Flag(help: "No progress on stderr.")
    var quiet = false
    @Option(help: "Tokens per forward chunk.")
    var chunk: Int = 1024
    @Option(name: .customLong("dump-prompts"), help: "Passkey: write every prompt as JSON Lines (length, depth, trial, key, needle_start, tokens; - for standard output).")
    var dumpPrompts: String?
    @Flag(inversion: .prefixedNo, help: "Passkey: prefill the text before the needle once per length and depth and continue every trial from its state.")
    var reusePrefix = true
    @Option(help: "Threads for matrix products and the scan.")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    func validate() throws {
        try checkTheta(tableOptions.theta)
        if dumpPrompts != nil, task != .passkey { throw ValidationError("--dump-prompts writes passkey prompts: use it with --task passkey") }
    }

    func run() throws {
        BLASThreads.set(threads)
        let input: EvaluationText? = tokens.map { .tokens(path: $0) } ?? text.map { .text(path: $0, tokenizer: tokenizer) }
        var options = EvaluationOptions(modelDirectory: model, text: input, lengths: try lengthValues(lengths, name: "lengths"))
        options.table = try tableOptions.choice()
        options.theta = tableOptions.theta
        options.filterFrom = tableOptions.filterFrom?.value
        options.force = tableOptions.force
        options.allowBeyondTable = allowBeyondTable
        options.windows = windows
        options.chunk = chunk
        options.bucketSize = byPosition
        options.trials = trials
        options.seed = seed
        options.haystack = haystack
        options.tokenizer = tokenizer
        options.depths = try listValues(depths, name: "depths") { Double($0) }
        options.reusePrefix = reusePrefix
        options.method = tableOptions.method
        let job = EvaluationJob(options: options)
        let progress = ProgressLines(enabled: !quiet)
        let log: (String) -> Void = { progress.line($0) }
        func cell(_ s: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - s.count)) + s }
        switch task {
        case .passkey:
            var dumped = Data()
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            let results = try job.runPasskey(progress: log, onPrompt: dumpPrompts == nil ? nil : { prompt in
                if let line = try? encoder.encode(prompt) { dumped.append(line); dumped.append(0x0A) }
            })
            progress.finish()
            if let dumpPrompts { try writeOutput(dumped, to: dumpPrompts) }
            if results.haystackRepeated { progress.note("note: the haystack text is shorter than some lengths; it was repeated to fill them") }
            print([cell("length", 8), cell("depth", 6), cell("trials", 7), cell("vanilla", 8), cell("LongMamba", 10), cell("kept", 7)].joined(separator: " "))
            for p in results.points {
                print([cell(String(p.length), 8), cell(String(format: "%.2f", p.depth), 6), cell(String(p.trials), 7),
                       cell(String(format: "%.0f%%", 100 * p.vanillaAccuracy), 8), cell(p.longMambaAccuracy.map { String(format: "%.0f%%", 100 * $0) } ?? "-", 10),
                       cell(p.keptShare.map { String(format: "%.3f", $0) } ?? "-", 7)].joined(separator: " "))
            }
            print(String(format: "%.2f prompts/s", results.promptsPerSecond))
            if let json { try writeOutput(results.json(), to: json) }
            if let csv { try writeOutput(Data(results.csv.utf8), to: csv) }
            if let svg { try writeOutput(Data(PasskeyHeatmap.svg(results).utf8), to: svg) }
        case .perplexity:
            let results = try job.run(progress: log)
            progress.finish()
            print([cell("length", 8), cell("windows", 8), cell("vanilla ppl", 12), cell("LongMamba", 12), cell("table row", 10), cell("kept", 8)].joined(separator: " "))
            for p in results.points {
                print([cell(String(p.length), 8), cell(String(p.windows), 8), cell(String(format: "%.3f", p.vanillaPerplexity), 12),
                       cell(p.longMambaPerplexity.map { String(format: "%.3f", $0) } ?? "-", 12),
                       cell(p.tabulatedLength.map(String.init) ?? "-", 10), cell(p.keptShare.map { String(format: "%.3f", $0) } ?? "-", 8)].joined(separator: " "))
                for b in p.byPosition ?? [] {
                    print("    positions \(b.start)–\(b.end - 1): vanilla \(String(format: "%.3f", b.vanillaPerplexity)), LongMamba \(b.longMambaPerplexity.map { String(format: "%.3f", $0) } ?? "-")")
                }
            }
            if let json { try writeOutput(results.json(), to: json) }
            if let csv { try writeOutput(Data(results.csv.utf8), to: csv) }
            if let svg {
                let chart = results.points.contains { $0.byPosition != nil } ? CalibrationReport.positionChart(results)
                    : CalibrationReport.perplexityChart(results.curve, theta: results.theta)
                try writeOutput(Data(chart.svg().utf8), to: svg)
            }
        }
    }
}
