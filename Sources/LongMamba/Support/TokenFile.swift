// Token files: whitespace-separated decimal token ids (what `longmamba sample` writes and
// `longmamba record --tokens` reads).
import Foundation

public struct TokenFileError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let reason: String
    public var description: String { "\(path): \(reason)" }
}

public enum TokenFile {
    /// Reads ids; fails on anything that is not a non-negative integer, naming the byte offset.
    public static func read(_ path: String) throws -> [Int] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TokenFileError(path: path, reason: "cannot read file")
        }
        var ids: [Int] = []
        var current = 0, inNumber = false, start = 0
        for (offset, byte) in data.enumerated() {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                if !inNumber { inNumber = true; current = 0; start = offset }
                let (m, o1) = current.multipliedReportingOverflow(by: 10)
                let (s, o2) = m.addingReportingOverflow(Int(byte - UInt8(ascii: "0")))
                guard !o1 && !o2 else { throw TokenFileError(path: path, reason: "number at byte \(start) is too large") }
                current = s
            case UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\t"), UInt8(ascii: "\r"):
                if inNumber { ids.append(current); inNumber = false }
            default:
                let shown = byte >= 0x20 && byte < 0x7f ? "'\(Character(UnicodeScalar(byte)))'" : String(format: "0x%02x", byte)
                throw TokenFileError(path: path, reason: "unexpected \(shown) at byte \(offset) (token \(ids.count)): expected whitespace-separated non-negative integers")
            }
        }
        if inNumber { ids.append(current) }
        guard !ids.isEmpty else { throw TokenFileError(path: path, reason: "no token ids in file") }
        return ids
    }

    public static func write(_ ids: [Int], to path: String) throws {
        let text = ids.map(String.init).joined(separator: " ") + "\n"
        try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}
