import ArgumentParser
import Foundation
import LongMamba

/// `longmamba tokenize`: text → ids, or ids → text with `--decode`.
struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Encode text to token ids (whitespace-separated) with a Hugging Face tokenizer.json, or decode ids back.")

    @Option(help: "Path to tokenizer.json (byte-level BPE, e.g. GPT-NeoX-20B).")
    var tokenizer: String

    @Option(help: "Input file (default: standard input).")
    var input: String?

    @Flag(help: "Decode whitespace-separated ids to text instead of encoding.")
    var decode = false

    @Flag(help: "Replace invalid UTF-8 with U+FFFD (as Python's errors='replace') instead of failing.")
    var lossy = false

    @Flag(help: "When decoding, keep special tokens such as <|endoftext|> (Hugging Face drops them by default).")
    var keepSpecialTokens = false

    func run() throws {
        let tok = try BPETokenizer(contentsOf: tokenizer)
        let data: Data
        if let input {
            do { data = try Data(contentsOf: URL(fileURLWithPath: input)) } catch {
                throw ValidationError("\(input): cannot read (\(error.localizedDescription))")
            }
        } else {
            data = FileHandle.standardInput.readDataToEndOfFile()
        }
        let source = input ?? "<stdin>"
        if decode {
            let text = String(decoding: data, as: UTF8.self)
            var ids: [Int] = []
            for (n, field) in text.split(whereSeparator: { $0.isWhitespace }).enumerated() {
                guard let id = Int(field) else {
                    throw ValidationError("\(source): item \(n + 1) '\(field)' is not an integer token id")
                }
                ids.append(id)
            }
            FileHandle.standardOutput.write(Data(try tok.decode(ids, skipSpecialTokens: !keepSpecialTokens).utf8))
        } else {
            let ids = try tok.encode(utf8: [UInt8](data), lossy: lossy, source: source)
            FileHandle.standardOutput.write(Data((ids.map(String.init).joined(separator: " ") + "\n").utf8))
        }
    }
}
