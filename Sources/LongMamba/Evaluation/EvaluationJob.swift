// `longmamba eval` as a library job, mirroring `CalibrationJob`: read the evaluation text, open
// the table, enforce the fingerprint policy once, evaluate every length, and hand back results
// that the CLI prints and writes (JSON, CSV, the report's perplexity chart).
import Foundation

/// The table applied at inference, as a user names it.
public enum TableChoice: Sendable, Equatable {
    case stored(database: String, table: Int64)
    case exported(path: String)

    /// Opens the table (read-only) and names it for results and metadata ("db#id" or the file).
    public func open() throws -> (table: any PrefillTableSource, name: String) {
        switch self {
        case let .stored(database, table):
            let store = try CalibrationStore(path: database, readOnly: true)
            switch try store.tableKind(table) {
            case .scales: return (try StoredScaleSource(store: store, table: table), "\(database)#\(table)")
            case .thresholds: return (try StoredTableSource(store: store, table: table), "\(database)#\(table)")
            case let .unknown(method, rowKind): throw StoreError.unknownTableMethod(path: database, id: table, method: method, rowKind: rowKind)
            }
        case let .exported(path):
            let file = try SafetensorsFile(path: path)
            if file.info("layer.0.scale") != nil { return (try ExportedScaleSource(file: file), path) }
            return (try ExportedTableSource(path: path), path)
        }
    }
}

/// The text to evaluate on.
public enum EvaluationText: Sendable, Equatable {
    /// A UTF-8 text file, tokenized with `tokenizer` (nil: the model directory's tokenizer.json).
    case text(path: String, tokenizer: String?)
    /// Whitespace-separated token ids.
    case tokens(path: String)
}

public struct EvaluationOptions: Sendable {
    public var modelDirectory: String
    /// The text for perplexity (passkey prompts are built, not read).
    public var text: EvaluationText?
    public var table: TableChoice?
    public var theta = GlobalChannels.defaultTheta
    /// nil: `LongMambaPrefill.defaultFilterStart` of the table's training length.
    public var filterFrom: Int?
    /// Use a table calibrated on another model.
    public var force = false
    public var allowBeyondTable = false
    public var lengths: [Int]
    public var windows = 1
    public var chunk = 1024
    /// Perplexity also in buckets of this many positions.
    public var bucketSize: Int?
    /// Passkey: needle depths in [0, 1], trials per (length, depth), the keys' seed, a haystack
    /// text instead of the filler, and the tokenizer (nil: the model directory's).
    public var depths: [Double] = [0, 0.25, 0.5, 0.75, 1]
    public var trials = 10
    public var seed: UInt64 = 0
    public var haystack: String?
    public var tokenizer: String?
    /// Passkey: prefill the part before the needle once per (length, depth) (see `PasskeyEvaluation`).
    public var reusePrefix = true
    /// How the table's global channels are filtered (LongMambaMethods.swift).
    public var method = LongMambaMethod.dtThre

    public init(modelDirectory: String, text: EvaluationText?, lengths: [Int]) {
        self.modelDirectory = modelDirectory; self.text = text; self.lengths = lengths
    }
}

public struct EvaluationJob {
    public let options: EvaluationOptions
    public init(options: EvaluationOptions) { self.options = options }

    /// The evaluation text's token ids and the name recorded for it.
    public static func tokens(_ text: EvaluationText, modelDirectory: String) throws -> (ids: [Int], source: String) {
        switch text {
        case let .tokens(path):
            return (try TokenFile.read(path), path)
        case let .text(path, tokenizer):
            let tokenizerPath = tokenizer ?? BPETokenizer.defaultPath(modelDirectory: modelDirectory)
            guard FileManager.default.fileExists(atPath: tokenizerPath) else { throw EvaluationError.noTokenizer(modelDirectory: modelDirectory) }
            let tok = try BPETokenizer(contentsOf: tokenizerPath)
            guard let data = FileManager.default.contents(atPath: path) else { throw EvaluationError.unreadableText(path: path) }
            return (try tok.encode(utf8: [UInt8](data), source: path), path)
        }
    }

    /// Opens the chosen table and applies the fingerprint policy once (refused unless `force`).
    func openTable(for model: MambaModel) throws -> (opened: (table: any PrefillTableSource, name: String)?, fingerprint: String) {
        let opened = try options.table?.open()
        let fingerprint = model.checkpoint.fingerprint()
        try opened?.table.checkModel(fingerprint: fingerprint, name: options.modelDirectory, force: options.force)
        return (opened, fingerprint)
    }

    /// The filter start the results report: --filter-from, else the table's default; nil without a table.
    func filterStart(_ table: (any PrefillTableSource)?) -> Int? {
        table.map { options.filterFrom ?? LongMambaPrefill.defaultFilterStart(trainingLength: $0.trainingLength) }
    }

    public func run(progress: (String) -> Void = { _ in }) throws -> PerplexityResults {
        let o = options
        let model = try MambaModel(directory: o.modelDirectory)
        guard let text = o.text else { throw EvaluationError.noText }
        let (ids, source) = try Self.tokens(text, modelDirectory: o.modelDirectory)
        let (opened, fingerprint) = try openTable(for: model)
        var evaluation = PerplexityEvaluation(model: model, table: opened?.table)
        evaluation.configure(theta: o.theta, filterFrom: o.filterFrom, allowBeyondTable: o.allowBeyondTable, chunk: o.chunk, method: o.method)
        evaluation.windows = o.windows
        evaluation.bucketSize = o.bucketSize
        let points = try evaluation.run(tokens: ids, lengths: o.lengths, progress: progress)
        var results = PerplexityResults(model: o.modelDirectory, modelFingerprint: fingerprint, text: source,
                                        theta: opened == nil ? nil : o.theta, table: opened?.name, tableContentHash: opened?.table.contentHash,
                                        filterFromLength: filterStart(opened?.table), points: points)
        results.method = (opened?.table as? any ScaleTableSource)?.scaleMethod.rawValue ?? (opened == nil || o.method == .dtThre ? nil : o.method.rawValue)
        return results
    }
}

extension EvaluationJob {
    /// Passkey retrieval at every (length, depth), vanilla and with the table.
    /// - onPrompt: called with every prompt before it runs (`--dump-prompts`).
    public func runPasskey(progress: (String) -> Void = { _ in }, onPrompt: ((PasskeyPrompt) -> Void)? = nil) throws -> PasskeyResults {
        let o = options
        let model = try MambaModel(directory: o.modelDirectory)
        let prompts = try PasskeyPrompts(modelDirectory: o.modelDirectory, tokenizer: o.tokenizer, haystack: o.haystack)
        let (opened, fingerprint) = try openTable(for: model)
        var evaluation = PasskeyEvaluation(model: model, prompts: prompts, table: opened?.table)
        evaluation.configure(theta: o.theta, filterFrom: o.filterFrom, allowBeyondTable: o.allowBeyondTable, chunk: o.chunk, method: o.method)
        evaluation.trials = o.trials
        evaluation.seed = o.seed
        evaluation.reusePrefix = o.reusePrefix
        evaluation.onPrompt = onPrompt
        let (points, rate) = try evaluation.run(lengths: o.lengths, depths: o.depths, progress: progress)
        var results = PasskeyResults(model: o.modelDirectory, modelFingerprint: fingerprint, haystack: o.haystack ?? "filler",
                                     haystackRepeated: o.lengths.contains { prompts.repeatsHaystack(length: $0) }, seed: o.seed,
                                     theta: opened == nil ? nil : o.theta, table: opened?.name, tableContentHash: opened?.table.contentHash,
                                     filterFromLength: filterStart(opened?.table),
                                     promptsPerSecond: rate, points: points)
        results.method = (opened?.table as? any ScaleTableSource)?.scaleMethod.rawValue ?? (opened == nil || o.method == .dtThre ? nil : o.method.rawValue)
        return results
    }
}
