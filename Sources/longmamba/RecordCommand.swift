import ArgumentParser
import Foundation
import LongMamba

struct RecordCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "record",
        abstract: "Run a checkpoint on a token sequence and write Δ (and A, optionally logits) per layer.",
        discussion: """
            With a table (--db/--table or --table-file) the run is a LongMamba prefill of the whole \
            sequence: the table row for its length, global channels a_c > θ, Δ kept only where Δ > τ, \
            when the sequence has at least --filter-from tokens. The recorded Δ is then the filtered \
            one, and the metadata holds the filter (row, θ, kept counts per layer).
            """)

    @Option(help: "Model directory (config.json + safetensors or pytorch_model.bin).")
    var model: String
    @Option(help: "File of whitespace-separated token ids.")
    var tokens: String
    @Option(help: "Output .safetensors file.")
    var out: String
    @Flag(help: "Also compute and store logits [L, vocab].")
    var logits = false
    @OptionGroup var tableOptions: AppliedTableOptions
    @Option(help: "Threads for matrix products and the scan.")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    func validate() throws { try checkTheta(tableOptions.theta) }

    func run() throws {
        BLASThreads.set(threads)
        let ids = try TokenFile.read(tokens)
        let runner = try MambaModel(directory: model)
        let source = try tableOptions.open()
        let theta = tableOptions.theta
        var filterRun: LongMambaFilterRun?
        var scales: LayerScales?
        var metadata: [String: String] = [:]
        if let source {
            try source.table.checkModel(fingerprint: runner.checkpoint.fingerprint(), force: tableOptions.force)
            let prefill = try LongMambaPrefill(table: source.table, model: runner, length: ids.count, theta: theta,
                                               filterFrom: tableOptions.filterFrom?.value, method: tableOptions.method)
            filterRun = prefill.run
            scales = prefill.scales
            metadata = prefill.metadata(tableName: source.name)
        }
        var recorder = CollectingRecorder()
        let start = Date()
        let logitValues = try runner.forward(tokens: ids, recorder: &recorder, computeLogits: logits, deltaFilter: filterRun?.deltaFilter,
                                              layerScales: scales)
        let seconds = Date().timeIntervalSince(start)
        if let filterRun {
            metadata["longmamba_kept"] = "\(filterRun.kept)"
            metadata["longmamba_considered"] = "\(filterRun.considered)"
        }
        try RecordingFile.write(layers: recorder.layers, logits: logits ? logitValues : nil, tokens: ids, checkpoint: runner.checkpoint, to: out,
                                extraMetadata: metadata.merging(source == nil ? [:] : ["longmamba_method": tableOptions.method.rawValue]) { a, _ in a })
        FileHandle.standardError.write(Data(String(format: "recorded %d layers × %d tokens × %d channels (%@) in %.2f s (%.0f tokens/s) → %@\n",
                                                   runner.config.layerCount, ids.count, runner.config.channelCount,
                                                   runner.config.architecture.rawValue, seconds, Double(ids.count) / seconds, out).utf8))
        if let filterRun {
            FileHandle.standardError.write(Data("LongMamba (\(tableOptions.method.rawValue)): row \(metadata["longmamba_tabulated_length"] ?? "-"), θ = \(theta), kept \(filterRun.kept) of \(filterRun.considered) (token, global channel) pairs per layer\n".utf8))
        } else if source != nil {
            FileHandle.standardError.write(Data("LongMamba: \(ids.count) tokens is below the filter start \(metadata["longmamba_filter_from"] ?? "?"); no filtering\n".utf8))
        }
    }
}

/// The table a command applies and how: `--db FILE --table ID` or `--table-file FILE`, θ, the
/// filter start and `--force`; shared by `record` and `eval`.
struct AppliedTableOptions: ParsableArguments {
    @Option(help: "Calibration database holding the table to apply.")
    var db: String?
    @Option(help: "Id of the table in --db.")
    var table: Int64?
    @Option(help: "Instead of --db/--table: a table exported with `export --format safetensors`.")
    var tableFile: String?
    @Option(help: "Channel threshold θ > 0: channels with cumulative decay a_c > θ are global.")
    var theta: Double = GlobalChannels.defaultTheta
    @Option(help: "Filter only sequences of at least this many tokens (k = ×1000; default 1.5 × the table's training length).")
    var filterFrom: TokenCount?
    @Flag(help: "Use a table made for another model (fingerprint mismatch).")
    var force = false
    @Option(help: "How global channels are filtered: dt_thre (Δ > τ, per token), alpha, bound, norm, channelwise_topk (the authors' whole-prompt modes).")
    var method: LongMambaMethod = .dtThre

    /// The table named on the command line, if any.
    func choice() throws -> TableChoice? {
        if let tableFile {
            guard db == nil, table == nil else { throw ValidationError("give --table-file or --db/--table, not both") }
            return .exported(path: tableFile)
        }
        if let db, let table { return .stored(database: db, table: table) }
        if db != nil || table != nil { throw ValidationError("--db and --table go together") }
        return nil
    }

    func open() throws -> (table: any PrefillTableSource, name: String)? { try choice()?.open() }
}

extension LongMambaMethod: ExpressibleByArgument {
    public init?(argument: String) { self.init(rawValue: argument) }
    public static var allValueStrings: [String] { allCases.map(\.rawValue) }
}
