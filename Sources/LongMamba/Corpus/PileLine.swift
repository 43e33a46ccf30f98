// Cheap checks on a raw JSON line, done for every document, and the full decode, done only
// for documents the sampler may keep. The key `"pile_set_name"` cannot occur inside a JSON
// string (a quote there is escaped as \"), so finding its bytes finds the key itself.

import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

enum PileLine {
    static let subsetKey = Array("\"pile_set_name\"".utf8)
    static let textKey = Array("\"text\"".utf8)

    /// Offset of `needle` in `hay` at or after `start`, or nil (memchr for the first byte; glibc
    /// hides memmem behind _GNU_SOURCE).
    static func find(_ needle: [UInt8], in hay: UnsafeBufferPointer<UInt8>, from start: Int = 0) -> Int? {
        guard let first = needle.first, let base = hay.baseAddress else { return nil }
        var i = start
        let lastStart = hay.count - needle.count
        while i <= lastStart {
            guard let hit = memchr(base + i, Int32(first), lastStart - i + 1) else { return nil }
            let at = base.distance(to: hit.assumingMemoryBound(to: UInt8.self))
            var k = 1
            while k < needle.count, hay[at + k] == needle[k] { k += 1 }
            if k == needle.count { return at }
            i = at + 1
        }
        return nil
    }

    static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0D || b == 0x0A }

    /// The line without surrounding whitespace (also drops the '\r' of CRLF files).
    static func trimmed(_ line: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8> {
        let r = trimmedRange(line)
        return UnsafeBufferPointer(rebasing: line[r])
    }

    static func trimmedRange(_ line: UnsafeBufferPointer<UInt8>) -> Range<Int> {
        var lo = 0, hi = line.count
        while lo < hi, isSpace(line[lo]) { lo += 1 }
        while hi > lo, isSpace(line[hi - 1]) { hi -= 1 }
        return lo..<hi
    }

    enum Subset: Equatable {
        case absent
        case name(Range<Int>)   // raw bytes of the value, no escapes
        case escaped            // the value has escapes: decode the line to know it
    }

    /// Where the `pile_set_name` value is; the meta object is normally at the end of the line,
    /// so the last 1 KiB is searched before the whole line.
    static func subset(_ line: UnsafeBufferPointer<UInt8>) -> Subset {
        let tailStart = max(0, line.count - 1024)
        guard let keyAt = find(subsetKey, in: line, from: tailStart) ?? (tailStart > 0 ? find(subsetKey, in: line) : nil) else {
            return .absent
        }
        var i = keyAt + subsetKey.count
        while i < line.count, isSpace(line[i]) { i += 1 }
        guard i < line.count, line[i] == UInt8(ascii: ":") else { return .escaped }
        i += 1
        while i < line.count, isSpace(line[i]) { i += 1 }
        guard i < line.count, line[i] == UInt8(ascii: "\"") else { return .escaped }
        let start = i + 1
        var j = start
        while j < line.count {
            let b = line[j]
            if b == UInt8(ascii: "\"") { return .name(start..<j) }
            if b == UInt8(ascii: "\\") { return .escaped }
            j += 1
        }
        return .escaped
    }

    static func hasTextKey(_ line: UnsafeBufferPointer<UInt8>) -> Bool {
        let head = UnsafeBufferPointer(rebasing: line[0..<min(line.count, 64)])
        return find(textKey, in: head) != nil || find(textKey, in: line) != nil
    }

    enum DecodeFailure: Error {
        case invalidUTF8(offset: Int)
        case malformed(String)
        case missingText
    }

    /// Full JSON decode of one line: the document text and its `meta.pile_set_name`.
    static func decode(_ line: UnsafeBufferPointer<UInt8>) throws(DecodeFailure) -> (text: String, subset: String?) {
        if let bad = UTF8Check.firstInvalidOffset(line) { throw .invalidUTF8(offset: bad) }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(buffer: line), options: [])
        } catch {
            let detail = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? error.localizedDescription
            throw .malformed("invalid JSON (\(detail)); lone surrogate escapes such as \\ud800 count as invalid")
        }
        guard let dict = object as? [String: Any] else { throw .malformed("not a JSON object") }
        guard let text = dict["text"] as? String else { throw .missingText }
        let subset = (dict["meta"] as? [String: Any])?["pile_set_name"] as? String
        return (text, subset)
    }
}
