// One grammar for every subcommand (README "Command-line conventions"):
//   lists        an option may be repeated and each value may be a comma-separated list:
//                `--clamp 0.05 --clamp 0.1` is `--clamp 0.05,0.1`
//   token counts an integer or thousands with k: `2k` is 2000 (lengths, intervals, --filter-from)
//   θ            a finite number > 0
//   K            --samples (sample's --count is kept as an alias); L --length; --tokens is always a
//                file of token ids (bench's old --tokens count is an alias of its --length)
//   JSON         snake_case keys (lookup, eval, recording)
//   --quiet      no progress on stderr, on every command that prints progress
import ArgumentParser
import Foundation
import LongMamba
#if canImport(Glibc)
import Glibc
#endif

/// A number of tokens: "2048" or "2k" (= 2000).
struct TokenCount: ExpressibleByArgument, Sendable, Equatable, CustomStringConvertible {
    let value: Int
    init(_ value: Int) { self.value = value }
    init?(argument: String) {
        guard let v = Self.parse(argument) else { return nil }
        value = v
    }
    static func parse(_ text: String) -> Int? {
        let p = text.trimmingCharacters(in: .whitespaces).lowercased()
        if p.hasSuffix("k") { return Int(p.dropLast()).flatMap { $0.multipliedReportingOverflow(by: 1000).overflow ? nil : $0 * 1000 } }
        return Int(p)
    }
    var description: String { "\(value)" }
    static var defaultCompletionKind: CompletionKind { .default }
}

/// The values of a list option: every occurrence, each split at commas.
func listValues<T>(_ occurrences: [String], name: String, _ parse: (String) -> T?) throws -> [T] {
    let items = occurrences.flatMap { $0.split(separator: ",", omittingEmptySubsequences: false) }
        .map { $0.trimmingCharacters(in: .whitespaces) }
    guard !items.isEmpty, !(items.count == 1 && items[0].isEmpty) else { throw ValidationError("--\(name) needs at least one value") }
    return try items.map { item in
        guard let v = parse(item) else { throw ValidationError("--\(name): '\(item)' is not a valid value") }
        return v
    }
}

/// Positive token counts of a list option ("2k,4k" or repeated).
func lengthValues(_ occurrences: [String], name: String) throws -> [Int] {
    try listValues(occurrences, name: name) { TokenCount.parse($0).flatMap { $0 > 0 ? $0 : nil } }
}

/// θ values of a list option, each a finite number > 0.
func thetaValues(_ occurrences: [String], name: String = "theta") throws -> [Double] {
    let values = try listValues(occurrences, name: name) { Double($0) }
    for t in values { try checkTheta(t, option: "--\(name)") }
    return values
}

/// θ must be a finite number > 0: at θ ≤ 0 every channel is global, which is never meant.
func checkTheta(_ theta: Double, option: String = "--theta") throws {
    guard theta.isFinite, theta > 0 else { throw ValidationError("\(option) must be a finite number > 0, got \(theta)") }
}

/// Prints `value` as JSON with snake_case keys (the CLI's one JSON convention), sorted keys.
func printJSON<T: Encodable>(_ value: T, pretty: Bool = true) throws {
    let e = JSONEncoder()
    e.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
    e.keyEncodingStrategy = .convertToSnakeCase
    print(String(decoding: try e.encode(value), as: UTF8.self))
}

/// Writes an output file, or standard output for "-"; a failure names the file and the cause.
func writeOutput(_ data: Data, to path: String) throws {
    if path == "-" { FileHandle.standardOutput.write(data); return }
    do { try data.write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
        throw OutputError.cannotWrite(path: path, reason: SystemMessage.of(error))
    }
}

enum OutputError: Error, CustomStringConvertible {
    case cannotWrite(path: String, reason: String)
    var description: String {
        switch self { case let .cannotWrite(path, reason): return "\(path): cannot write: \(reason)" }
    }
}

/// Progress lines of a long command on stderr: on a terminal one line redrawn in place; off a
/// terminal (a log, CI) plain lines at most one per `interval` seconds, so a log stays readable.
final class ProgressLines {
    let enabled: Bool
    let terminal = isatty(2) == 1
    let interval: Double
    private var last = Date.distantPast
    private var drawn = false

    init(enabled: Bool, interval: Double = 5) { self.enabled = enabled; self.interval = interval }

    func line(_ text: String) {
        guard enabled else { return }
        if terminal {
            FileHandle.standardError.write(Data(("\r" + text + String(repeating: " ", count: max(0, 100 - text.count))).utf8))
            drawn = true
        } else if Date().timeIntervalSince(last) >= interval {
            last = Date()
            FileHandle.standardError.write(Data((text + "\n").utf8))
        }
    }

    /// A line that is always shown (a note, a result), after clearing a redrawn one.
    func note(_ text: String) {
        finish()
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    /// Ends a redrawn line so what follows starts on its own.
    func finish() {
        if drawn { FileHandle.standardError.write(Data(("\r" + String(repeating: " ", count: 100) + "\r").utf8)); drawn = false }
    }
}
