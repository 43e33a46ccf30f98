// Token files: whitespace-separated decimal token ids (what `longmamba sample` writes and
// `longmamba record --tokens` reads).
import Foundation

/// Why a token file was refused; every case names the file.
public enum TokenFileError: Error, CustomStringConvertible, Sendable, Equatable {
    case unreadable(path: String)
    /// A number at byte `offset` does not fit in an Int.
    case numberTooLarge(path: String, offset: Int)
    /// A byte that is neither a digit nor whitespace (`shown`: the byte as quoted, e.g. `'x'` or `0x00`).
    case unexpectedByte(path: String, shown: String, offset: Int, token: Int)
    case empty(path: String)

    public var path: String {
        switch self {
        case let .unreadable(path), let .numberTooLarge(path, _), let .unexpectedByte(path, _, _, _), let .empty(path): return path
        }
    }

    public var description: String {
        switch self {
        case let .unreadable(path):
            return "\(path): cannot read file"
        case let .numberTooLarge(path, offset):
            return "\(path): number at byte \(offset) is too large"
        case let .unexpectedByte(path, shown, offset, token):
            return "\(path): unexpected \(shown) at byte \(offset) (token \(token)): expected whitespace-separated non-negative integers"
        case let .empty(path):
            return "\(path): no token ids in file"
        }
    }
}

public enum TokenFile {
    /// Reads ids; fails on anything that is not a non-negative integer, naming the byte offset.
    public static func read(_ path: String) throws -> [Int] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TokenFileError.unreadable(path: path)
        }
        var ids: [Int] = []
        var current = 0, inNumber = false, start = 0
        for (offset, byte) in data.enumerated() {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                if !inNumber { inNumber = true; current = 0; start = offset }
                let (m, o1) = current.multipliedReportingOverflow(by: 10)
                let (s, o2) = m.addingReportingOverflow(Int(byte - UInt8(ascii: "0")))
                guard !o1 && !o2 else { throw TokenFileError.numberTooLarge(path: path, offset: start) }
                current = s
            case UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\t"), UInt8(ascii: "\r"):
                if inNumber { ids.append(current); inNumber = false }
            default:
                let shown = byte >= 0x20 && byte < 0x7f ? "'\(Character(UnicodeScalar(byte)))'" : String(format: "0x%02x", byte)
                throw TokenFileError.unexpectedByte(path: path, shown: shown, offset: offset, token: ids.count)
            }
        }
        if inNumber { ids.append(current) }
        guard !ids.isEmpty else { throw TokenFileError.empty(path: path) }
        return ids
    }

    public static func write(_ ids: [Int], to path: String) throws {
        let text = ids.map(String.init).joined(separator: " ") + "\n"
        try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}
