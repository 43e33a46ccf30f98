/// Errors from reading or sampling a corpus; each names the file and position where it can.
public enum CorpusError: Error, CustomStringConvertible, Sendable, Equatable {
    case noInputs
    case pathNotFound(String)
    case unsupportedFile(path: String)
    case io(path: String, reason: String)
    case corruptZstd(path: String, compressedOffset: Int64, reason: String)
    case truncatedZstd(path: String, compressedOffset: Int64)
    case lineTooLong(path: String, line: Int, byteOffset: Int64, limit: Int)
    case malformedLine(path: String, line: Int, byteOffset: Int64, reason: String)
    case missingText(path: String, line: Int, byteOffset: Int64)
    case invalidUTF8(path: String, line: Int, byteOffset: Int64)
    case emptyCorpus(files: Int)
    case notEnoughDocuments(eligible: Int, needed: Int, criteria: String)
    case notEnoughTokens(available: Int, needed: Int, criteria: String)
    case invalidOption(String)

    public var description: String {
        switch self {
        case .noInputs:
            return "no corpus files given"
        case let .pathNotFound(p):
            return "\(p): no such file, directory or matching glob"
        case let .unsupportedFile(p):
            return "\(p): unsupported corpus file (expected .jsonl, .jsonl.zst or .txt)"
        case let .io(p, reason):
            return "\(p): \(reason)"
        case let .corruptZstd(p, off, reason):
            return "\(p): corrupt zstd data at compressed byte offset \(off): \(reason)"
        case let .truncatedZstd(p, off):
            return "\(p): truncated zstd data: the file ends inside a frame at compressed byte offset \(off)"
        case let .lineTooLong(p, line, off, limit):
            return "\(p): line \(line) (byte offset \(off)) is longer than \(limit) bytes (hint: raise --max-line-bytes, or --skip-bad-lines to skip it)"
        case let .malformedLine(p, line, off, reason):
            return "\(p): line \(line) (byte offset \(off)) is malformed: \(reason) (hint: --skip-bad-lines skips and counts such lines)"
        case let .missingText(p, line, off):
            return "\(p): line \(line) (byte offset \(off)) has no string field \"text\" (hint: --skip-bad-lines skips and counts such lines)"
        case let .invalidUTF8(p, line, off):
            return "\(p): line \(line) has invalid UTF-8 at byte offset \(off) (hint: --skip-bad-lines skips and counts such lines)"
        case let .emptyCorpus(files):
            return "the corpus (\(files) file\(files == 1 ? "" : "s")) contains no documents"
        case let .notEnoughDocuments(eligible, needed, criteria):
            return "only \(eligible) eligible document\(eligible == 1 ? "" : "s") (\(criteria)), \(needed) needed; relax the filters or add corpus files"
        case let .notEnoughTokens(available, needed, criteria):
            return "eligible documents (\(criteria)) hold only \(available) tokens with EOS separators, \(needed) needed"
        case let .invalidOption(message):
            return message
        }
    }
}
