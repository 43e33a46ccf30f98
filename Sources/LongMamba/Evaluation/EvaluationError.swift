/// Why an evaluation (or a LongMamba prefill) was refused.
public enum EvaluationError: Error, CustomStringConvertible, Sendable, Equatable {
    case nonPositiveTheta(Double)
    case tableForAnotherModel(table: String, model: String, modelFingerprint: String)
    case beyondTable(length: Int, largest: Int)
    case lengthTooShort(Int)
    case badBucketSize(Int)
    case textTooShort(tokens: Int, length: Int)
    case noTokenizer(modelDirectory: String)
    case unreadableText(path: String)
    case noText
    case unreadableResults(path: String)
    case notEvaluationResults(path: String, detail: String)
    /// A whole-prompt method (alpha, bound, norm, channelwise_topk) was given a prompt in pieces.
    case wholePromptInPieces(method: String)
    /// A prompt longer than a scale table's largest calibrated length.
    case beyondScaleTable(length: Int, largest: Int)
    /// `--method` (a mode of LongMamba's thresholds) given with a per-layer scale table.
    case methodOfScaleTable(method: String, table: String)
    /// An export whose `method` metadata this tool does not know.
    case unknownExportMethod(path: String, method: String)

    public var description: String {
        switch self {
        case let .nonPositiveTheta(t): return "θ must be > 0, got \(t)"
        case let .wholePromptInPieces(method):
            return "method \(method) sorts or sums Δ over the whole prompt, so the prompt must be processed in one piece, not in chunks or continued from a cached prefix (dt_thre is per token and can be)"
        case let .tableForAnotherModel(table, model, fingerprint) where table.hasPrefix("unfingerprinted"):
            return "the table's Δ were imported from recordings without a model fingerprint (\(table)), so it cannot be checked against \(model) (\(fingerprint.prefix(12))); pass --force to use it anyway"
        case let .tableForAnotherModel(table, model, fingerprint):
            return "the table was calibrated on model \(table.prefix(12)), not on \(model) (\(fingerprint.prefix(12))); pass --force to use it anyway"
        case let .beyondTable(length, largest):
            return "length \(length) is beyond the table's largest length \(largest); solve with a larger --max-length, or pass --allow-beyond-table to use the largest"
        case let .beyondScaleTable(length, largest):
            return "length \(length) is beyond the scale table's largest calibrated length \(largest); calibrate it with `longmamba calibrate-scales --lengths …,\(length)`, or pass --allow-beyond-table to use the scales of \(largest)"
        case let .methodOfScaleTable(method, table):
            return "--method \(method) filters with LongMamba Δ thresholds; this table holds \(table) scales (one per layer) and has no modes: leave --method out"
        case let .unknownExportMethod(path, method):
            return "\(path): a table export of the method '\(method)', which this tool does not know (written by a newer tool?)"
        case let .lengthTooShort(S): return "length \(S) is too short to measure perplexity"
        case let .badBucketSize(n): return "--by-position \(n): a bucket needs at least 1 position"
        case let .textTooShort(n, S): return "the text has \(n) tokens, fewer than the requested length \(S)"
        case let .noTokenizer(dir): return "\(dir) has no tokenizer.json; pass --tokenizer or --tokens"
        case let .unreadableText(path): return "cannot read \(path)"
        case .noText: return "give --text FILE or --tokens FILE"
        case let .unreadableResults(path): return "\(path): cannot read evaluation results"
        case let .notEvaluationResults(path, detail): return "\(path): not the JSON written by `longmamba eval --json` (\(detail))"
        }
    }
}
