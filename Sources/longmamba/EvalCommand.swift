import ArgumentParser
import Foundation
import LongMamba

/// `longmamba eval`: perplexity of vanilla and LongMamba inference at several lengths.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Perplexity against sequence length, vanilla and with a LongMamba table, on the same tokens.")

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
        let input: EvaluationText
        if let tokens { input = .tokens(path: tokens) } else if let text { input = .text(path: text, tokenizer: tokenizer) } else {
            throw ValidationError("give --text FILE or --tokens FILE")
        }
        var options = EvaluationOptions(modelDirectory: model, text: input, lengths: try Self.parseLengths(lengths))
        options.table = try tableOptions.choice()
        options.theta = tableOptions.theta
        options.filterFrom = tableOptions.filterFrom
        options.force = tableOptions.force
        options.allowBeyondTable = allowBeyondTable
        options.windows = windows
        options.chunk = chunk
        let results = try EvaluationJob(options: options).run { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }
        func cell(_ s: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - s.count)) + s }
        print([cell("length", 8), cell("windows", 8), cell("vanilla ppl", 12), cell("LongMamba", 12), cell("table row", 10), cell("kept", 8)].joined(separator: " "))
        for p in results.points {
            print([cell(String(p.length), 8), cell(String(p.windows), 8), cell(String(format: "%.3f", p.vanillaPerplexity), 12),
                   cell(p.longMambaPerplexity.map { String(format: "%.3f", $0) } ?? "-", 12),
                   cell(p.tabulatedLength.map(String.init) ?? "-", 10), cell(p.keptShare.map { String(format: "%.3f", $0) } ?? "-", 8)].joined(separator: " "))
        }
        if let json { try results.json().write(to: URL(fileURLWithPath: json)) }
        if let csv { try Data(results.csv.utf8).write(to: URL(fileURLWithPath: csv)) }
        if let svg { try Data(CalibrationReport.perplexityChart(results.curve, theta: results.theta).svg().utf8).write(to: URL(fileURLWithPath: svg)) }
    }
}
