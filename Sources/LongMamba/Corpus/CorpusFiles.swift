// Which files a list of corpus paths means, in a fixed order.

import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One input file and how its documents are delimited.
public struct CorpusFile: Sendable, Equatable, Codable {
    public enum Format: String, Sendable, Codable {
        /// JSON Lines, one document per line (`{"text": ..., "meta": {...}}`).
        case jsonl
        /// zstd-compressed JSON Lines (one or more concatenated frames).
        case jsonlZstd = "jsonl.zst"
        /// Plain text: the whole file is one document.
        case text = "txt"
    }
    public let path: String
    public let format: Format
    public let sizeBytes: Int64

    public static func format(of path: String) -> Format? {
        if path.hasSuffix(".jsonl.zst") || path.hasSuffix(".json.zst") { return .jsonlZstd }
        if path.hasSuffix(".jsonl") { return .jsonl }
        if path.hasSuffix(".txt") { return .text }
        return nil
    }

    /// Expands files, directories (their `.jsonl`/`.jsonl.zst` files, not recursive: a Pile
    /// folder also holds SHA256SUMS.txt) and glob patterns; the result is deduplicated and
    /// sorted by path bytes so the order never depends on argument order or the file system.
    public static func expand(_ paths: [String]) throws -> [CorpusFile] {
        guard !paths.isEmpty else { throw CorpusError.noInputs }
        var found = Set<String>()
        let fm = FileManager.default
        for path in paths {
            var isDirectory: ObjCBool = false
            if fm.fileExists(atPath: path, isDirectory: &isDirectory) {
                if isDirectory.boolValue {
                    let names = (try? fm.contentsOfDirectory(atPath: path)) ?? []
                    for name in names {
                        let f = format(of: name)
                        if f == .jsonl || f == .jsonlZstd { found.insert((path as NSString).appendingPathComponent(name)) }
                    }
                } else {
                    guard format(of: path) != nil else { throw CorpusError.unsupportedFile(path: path) }
                    found.insert(path)
                }
                continue
            }
            let matches = globMatches(path)
            if matches.isEmpty { throw CorpusError.pathNotFound(path) }
            for m in matches {
                guard format(of: m) != nil else { throw CorpusError.unsupportedFile(path: m) }
                found.insert(m)
            }
        }
        return try found.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }.map { path in
            guard let attributes = try? fm.attributesOfItem(atPath: path),
                  let size = (attributes[.size] as? NSNumber)?.int64Value else {
                throw CorpusError.io(path: path, reason: "cannot stat")
            }
            guard let format = format(of: path) else { throw CorpusError.unsupportedFile(path: path) }
            return CorpusFile(path: path, format: format, sizeBytes: size)
        }
    }

    private static func globMatches(_ pattern: String) -> [String] {
        guard pattern.contains(where: { "*?[".contains($0) }) else { return [] }
        var g = glob_t()
        defer { globfree(&g) }
        guard glob(pattern, 0, nil, &g) == 0 else { return [] }
        var out: [String] = []
        for i in 0..<Int(g.gl_pathc) {
            if let p = g.gl_pathv[i] { out.append(String(cString: p)) }
        }
        return out.filter { path in
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && !isDirectory.boolValue
        }
    }
}
