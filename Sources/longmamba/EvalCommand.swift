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
    @Option(help: "Lengths, comma-separated; k = ×1000 (e.g. 2k,4k,8k or 256,512).")
    var lengths: String
    @Option(help: "Windows per length, evenly spaced over the text (1 = the first window).")
    var windows: Int = 1
    @Option(name: .customLong("by-position"), help: "Perplexity: also report buckets of N positions of each window.")
    var byPosition: Int?
    @Option(help: "Passkey: needle depths in [0, 1], comma-separated.")
    var depths: String = "0,0.25,0.5,0.75,1"
    @Option(help: "Passkey: trials (keys) per length and depth.")
    var trials: Int = 10
    @Option(help: "Passkey: seed of the keys.")
    var seed: UInt64 = 0
    @Option(help: "Passkey: a text file to use as the haystack instead of the filler sentences (repeated when short).")
    var haystack: String?
    @Flag(help: "Use the table's largest length for longer windows instead of refusing.")
    var allowBeyondTable = false
    @Option(help: "Write results as JSON.")
    var json: String?
    @Option(help: "Write results as CSV.")
    var csv: String?
    @Option(help: "Write the perplexity plot as SVG.")
    var svg: String?
    @Option(help: "Tokens per forward chunk.")
    var chunk: Int = 1024
    @Option(help: "Threads for matrix products and the scan.")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    static func parseLengths(_ s: String) throws -> [Int] {
        try s.split(separator: ",").map { part in
            let p = part.trimmingCharacters(in: .whitespaces).lowercased()
            let value = p.hasSuffix("k") ? Int(p.dropLast()).map { $0 * 1000 } : Int(p)
            guard let value, value > 0 else { throw ValidationError("--lengths: '\(part)' is not a positive length (e.g. 2k or 2048)") }
            return value
        }
    }

    func run() throws {
        BLASThreads.set(threads)
        let input: EvaluationText? = tokens.map { .tokens(path: $0) } ?? text.map { .text(path: $0, tokenizer: tokenizer) }
        var options = EvaluationOptions(modelDirectory: model, text: input, lengths: try Self.parseLengths(lengths))
        options.table = try tableOptions.choice()
        options.theta = tableOptions.theta
        options.filterFrom = tableOptions.filterFrom
        options.force = tableOptions.force
        options.allowBeyondTable = allowBeyondTable
        options.windows = windows
        options.chunk = chunk
        options.bucketSize = byPosition
        options.trials = trials
        options.seed = seed
        options.haystack = haystack
        options.tokenizer = tokenizer
        options.depths = try depths.split(separator: ",").map { part in
            guard let d = Double(part.trimmingCharacters(in: .whitespaces)) else { throw ValidationError("--depths: '\(part)' is not a number") }
            return d
        }
        let job = EvaluationJob(options: options)
        let log: (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }
        func cell(_ s: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - s.count)) + s }
        switch task {
        case .passkey:
            let results = try job.runPasskey(progress: log)
            if results.haystackRepeated { log("note: the haystack text is shorter than some lengths; it was repeated to fill them") }
            print([cell("length", 8), cell("depth", 6), cell("trials", 7), cell("vanilla", 8), cell("LongMamba", 10), cell("kept", 7)].joined(separator: " "))
            for p in results.points {
                print([cell(String(p.length), 8), cell(String(format: "%.2f", p.depth), 6), cell(String(p.trials), 7),
                       cell(String(format: "%.0f%%", 100 * p.vanillaAccuracy), 8), cell(p.longMambaAccuracy.map { String(format: "%.0f%%", 100 * $0) } ?? "-", 10),
                       cell(p.keptShare.map { String(format: "%.3f", $0) } ?? "-", 7)].joined(separator: " "))
            }
            print(String(format: "%.2f prompts/s", results.promptsPerSecond))
            if let json { try results.json().write(to: URL(fileURLWithPath: json)) }
            if let csv { try Data(results.csv.utf8).write(to: URL(fileURLWithPath: csv)) }
            if let svg { try Data(PasskeyHeatmap.svg(results).utf8).write(to: URL(fileURLWithPath: svg)) }
        case .perplexity:
            let results = try job.run(progress: log)
            print([cell("length", 8), cell("windows", 8), cell("vanilla ppl", 12), cell("LongMamba", 12), cell("table row", 10), cell("kept", 8)].joined(separator: " "))
            for p in results.points {
                print([cell(String(p.length), 8), cell(String(p.windows), 8), cell(String(format: "%.3f", p.vanillaPerplexity), 12),
                       cell(p.longMambaPerplexity.map { String(format: "%.3f", $0) } ?? "-", 12),
                       cell(p.tabulatedLength.map(String.init) ?? "-", 10), cell(p.keptShare.map { String(format: "%.3f", $0) } ?? "-", 8)].joined(separator: " "))
                for b in p.byPosition ?? [] {
                    print("    positions \(b.start)..<\(b.end): vanilla \(String(format: "%.3f", b.vanillaPerplexity)), LongMamba \(b.longMambaPerplexity.map { String(format: "%.3f", $0) } ?? "-")")
                }
            }
            if let json { try results.json().write(to: URL(fileURLWithPath: json)) }
            if let csv { try Data(results.csv.utf8).write(to: URL(fileURLWithPath: csv)) }
            if let svg {
                let chart = results.points.contains { $0.byPosition != nil } ? CalibrationReport.positionChart(results)
                    : CalibrationReport.perplexityChart(results.curve, theta: results.theta)
                try Data(chart.svg().utf8).write(to: URL(fileURLWithPath: svg))
            }
        }
    }
}
