/// Errors from loading a `tokenizer.json` or from encoding/decoding with it.
public enum TokenizerError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The file could not be read.
    case unreadable(path: String, reason: String)
    /// The file is not valid JSON or a required field is missing or has the wrong type.
    case malformed(path: String, reason: String)
    /// A component this implementation does not support; refusing beats a wrong answer.
    case unsupported(path: String, component: String, hint: String)
    /// Input bytes are not valid UTF-8.
    case invalidUTF8(source: String, byteOffset: Int)
    /// A token id outside the vocabulary was given to `decode`.
    case unknownTokenId(id: Int, vocabularySize: Int)

    public var description: String {
        switch self {
        case let .unreadable(path, reason):
            return "\(path): cannot read tokenizer (\(reason))"
        case let .malformed(path, reason):
            return "\(path): malformed tokenizer.json: \(reason)"
        case let .unsupported(path, component, hint):
            return "\(path): unsupported tokenizer component \(component). \(hint)"
        case let .invalidUTF8(source, byteOffset):
            return "\(source): invalid UTF-8 at byte offset \(byteOffset) (hint: fix the input, or decode lossily (CLI: --lossy), replacing each invalid sequence with U+FFFD like Python's errors='replace')"
        case let .unknownTokenId(id, vocabularySize):
            return "token id \(id) is not in the vocabulary (ids 0 to \(vocabularySize - 1))"
        }
    }
}
