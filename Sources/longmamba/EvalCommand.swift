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
        let runner = try MambaModel(directory: model)
        let ids: [Int]
        let source: String
        if let tokens {
            ids = try TokenFile.read(tokens); source = tokens
        } else if let text {
            let path = tokenizer ?? URL(fileURLWithPath: model).appendingPathComponent("tokenizer.json").path
            guard FileManager.default.fileExists(atPath: path) else {
                throw ValidationError("\(model) has no tokenizer.json; pass --tokenizer or --tokens")
            }
            let tok = try BPETokenizer(contentsOf: path)
            guard let data = FileManager.default.contents(atPath: text) else { throw ValidationError("cannot read \(text)") }
            ids = try tok.encode(utf8: [UInt8](data), source: text); source = text
        } else {
            throw ValidationError("give --text FILE or --tokens FILE")
        }
        var evaluation = PerplexityEvaluation(model: runner)
        let tableSource = try tableOptions.open()
        let (theta, filterFrom, force) = (tableOptions.theta, tableOptions.filterFrom, tableOptions.force)
        evaluation.table = tableSource?.table
        let tableName = tableSource?.name
        let fingerprint = runner.checkpoint.fingerprint()
        try evaluation.table?.checkModel(fingerprint: fingerprint, name: model, force: force)
        evaluation.theta = theta
        evaluation.filterFromLength = filterFrom
        evaluation.allowBeyondTable = allowBeyondTable
        evaluation.windows = windows
        evaluation.chunk = chunk
        let points = try evaluation.run(tokens: ids, lengths: try Self.parseLengths(lengths)) {
            FileHandle.standardError.write(Data(($0 + "\n").utf8))
        }
        let results = PerplexityResults(model: model, modelFingerprint: fingerprint, text: source, theta: evaluation.table == nil ? nil : Double(theta),
                                        table: tableName, filterFromLength: evaluation.table.map { filterFrom ?? LongMambaPrefill.defaultFilterStart(trainingLength: $0.trainingLength) }, points: points)
        func cell(_ s: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - s.count)) + s }
        print([cell("length", 8), cell("windows", 8), cell("vanilla ppl", 12), cell("LongMamba", 12), cell("table row", 10), cell("kept", 8)].joined(separator: " "))
        for p in points {
            print([cell(String(p.length), 8), cell(String(p.windows), 8), cell(String(format: "%.3f", p.vanillaPerplexity), 12),
                   cell(p.longMambaPerplexity.map { String(format: "%.3f", $0) } ?? "-", 12),
                   cell(p.tabulatedLength.map(String.init) ?? "-", 10), cell(p.keptShare.map { String(format: "%.3f", $0) } ?? "-", 8)].joined(separator: " "))
        }
        if let json { try results.json().write(to: URL(fileURLWithPath: json)) }
        if let csv { try Data(results.csv.utf8).write(to: URL(fileURLWithPath: csv)) }
        if let svg {
            var chart = SVGChart(title: "perplexity against length", xLabel: "sequence length (tokens)", yLabel: "perplexity")
            chart.xScale = .log10; chart.yScale = .log10
            let c = results.curve
            chart.series = [SVGChart.Series(name: "vanilla", points: zip(c.lengths, c.vanilla).map { (x: Double($0), y: $1) }, color: "#1f77b4", drawPoints: true)]
            if evaluation.table != nil {
                chart.series.append(SVGChart.Series(name: "LongMamba θ=\(theta)", points: zip(c.lengths, c.longMamba).compactMap { l, v in v.map { (x: Double(l), y: $0) } }, color: "#d62728", drawPoints: true))
            }
            try Data(chart.svg().utf8).write(to: URL(fileURLWithPath: svg))
        }
    }
}
