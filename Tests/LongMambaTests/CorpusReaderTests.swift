import Foundation
import Testing
@testable import LongMamba
import CZstd

/// Fixture-corpus golden written by scripts/make_fixture_corpus.py.
struct CorpusGolden: Decodable {
    struct Tokens: Decodable { let count: Int; let checksum: String }
    struct Document: Decodable {
        let line: Int
        let byte_offset: Int64
        let subset: String
        let text_utf8_bytes: Int
        let fixture: Tokens
        let gptNeoX: Tokens?
        enum CodingKeys: String, CodingKey {
            case line, byte_offset, subset, text_utf8_bytes, fixture
            case gptNeoX = "gpt-neox-20b"
        }
    }
    struct PRNG: Decodable { let seed: UInt64; let splitmix64: [String]; let xoshiro256starstar: [String] }
    let prng: PRNG
    let sha256: String
    let frames: Int
    let lines: Int
    let uncompressed_bytes: Int64
    let documents: [Document]

    static let path = TestPaths.fixture("corpus/fixture.jsonl.zst")
    static func load() throws -> CorpusGolden {
        try JSONDecoder().decode(CorpusGolden.self, from: Data(contentsOf: URL(fileURLWithPath: TestPaths.fixture("corpus/fixture-golden.json"))))
    }
}

/// The checksum the golden script uses: h = h * 1000003 + id + 1 (mod 2^64).
func tokenChecksum(_ ids: [Int32]) -> String {
    var h: UInt64 = 0
    for id in ids { h = h &* 1_000_003 &+ UInt64(id) &+ 1 }
    return String(h)
}

/// Lines of a file as the splitter reports them.
func splitLines(_ path: String, zstd: Bool, chunkBytes: Int, maxLineBytes: Int = 1 << 20) throws -> [(String, Int, Int64)] {
    var out: [(String, Int, Int64)] = []
    let reader = try CorpusByteReader(path: path, isZstd: zstd)
    try LineSplitter(maxLineBytes: maxLineBytes, chunkBytes: chunkBytes).forEachLine(
        reader, chunkRead: {}, tooLong: { line, _ in out.append(("<too long>", line, -1)) }
    ) { line, number, offset in out.append((String(decoding: line, as: UTF8.self), number, offset)) }
    return out
}

func writeFile(_ dir: String, _ name: String, _ bytes: [UInt8]) throws -> String {
    let path = (dir as NSString).appendingPathComponent(name)
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return path
}

@Suite struct CorpusReaderTests {
    /// Lines, numbers and offsets, and the file hash, as a reader hands them out.
    func readAll(_ path: String, decodeAhead: Bool) throws -> (lines: [(String, Int, Int64)], hash: String?) {
        var out: [(String, Int, Int64)] = []
        let reader = try CorpusByteReader(path: path, isZstd: true, hashing: true, decodeAhead: decodeAhead)
        try LineSplitter(maxLineBytes: 1 << 20, chunkBytes: 1 << 16).forEachLine(
            reader, chunkRead: {}, tooLong: { line, _ in out.append(("<too long>", line, -1)) }
        ) { line, number, offset in out.append((String(decoding: line, as: UTF8.self), number, offset)) }
        return (out, reader.finishHash())
    }

    @Test func framesDecodedAheadOnTwoThreadsGiveTheSameLinesAsOneDecoder() throws {
        // Seven frames, two of them larger than the 1 MB buffers (6 MB decoded), one empty of lines
        // ending mid-line: the frame workers run ahead of the reader and must hand out file order.
        let dir = NSTemporaryDirectory() + "frames-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var file: [UInt8] = []
        var n = 0
        for (f, lines) in [40, 60_000, 3, 1, 60_000, 500, 7].enumerated() {
            var text = ""
            for _ in 0..<lines { n += 1; text += "{\"text\": \"frame \(f) document \(n) \(String(repeating: "x", count: n % 97))\"}\n" }
            if f == 3 { text = "{\"text\": \"a line split across fr" }   // continues in the next frame
            if f == 4 { text = "ames\"}\n" + text }
            let src = Array(text.utf8)
            var dst = [UInt8](repeating: 0, count: ZSTD_compressBound(src.count))
            let written = ZSTD_compress(&dst, dst.count, src, src.count, 3)
            #expect(ZSTD_isError(written) == 0)
            file += dst[0..<written]
        }
        let path = try writeFile(dir, "shard.jsonl.zst", file)
        let ahead = try readAll(path, decodeAhead: true), direct = try readAll(path, decodeAhead: false)
        #expect(ahead.lines.count == direct.lines.count && ahead.lines.count > 120_000)
        #expect(zip(ahead.lines, direct.lines).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 && $0.2 == $1.2 })
        #expect(ahead.hash != nil && ahead.hash == direct.hash)
        #expect(ahead.lines.contains { $0.0 == "{\"text\": \"a line split across frames\"}" })
    }

    @Test func readsEveryDocumentAcrossBothZstdFramesWithGoldenOffsetsAndTokens() throws {
        let golden = try CorpusGolden.load()
        #expect(golden.frames == 2)
        let tokenizer = try BPETokenizer(contentsOf: TestPaths.fixture("tokenizer/fixture-tokenizer.json"))
        var encoder = tokenizer.makeEncoder()
        let lines = try splitLines(CorpusGolden.path, zstd: true, chunkBytes: 4 << 20)
        #expect(lines.count == golden.lines)
        var n = 0
        let file = try CorpusFile.expand([CorpusGolden.path])[0]
        try CorpusDocuments.forEach(file) { text, line in
            let doc = golden.documents[n]
            #expect(line == doc.line)
            #expect(lines[n].2 == doc.byte_offset)
            #expect(text.utf8.count == doc.text_utf8_bytes)
            let ids = encoder.encodeInt32(text)
            #expect(ids.count == doc.fixture.count, "line \(line)")
            #expect(tokenChecksum(ids) == doc.fixture.checksum, "line \(line)")
            n += 1
            return true
        }
        #expect(n == golden.lines)
    }

    @Test(.enabled(if: TestPaths.neoxTokenizer != nil, "shared/data absent; skipping GPT-NeoX checksums over the fixture corpus"))
    func gptNeoXTokensOfEveryFixtureDocumentMatchHuggingFace() throws {
        let golden = try CorpusGolden.load()
        let tokenizer = try BPETokenizer(contentsOf: TestPaths.neoxTokenizer!)
        var encoder = tokenizer.makeEncoder()
        var n = 0
        try CorpusDocuments.forEach(try CorpusFile.expand([CorpusGolden.path])[0]) { text, line in
            let expected = try #require(golden.documents[n].gptNeoX)
            let ids = encoder.encodeInt32(text)
            #expect(ids.count == expected.count, "line \(line)")
            #expect(tokenChecksum(ids) == expected.checksum, "line \(line)")
            n += 1
            return true
        }
        #expect(n == golden.lines)
    }

    @Test func splitsLinesTheSameWhateverTheChunkSize() throws {
        let dir = try TestPaths.temporaryDirectory("lines")
        let text = "first\n\nthird line is longer than a chunk\r\nfourth\nno newline at end"
        let path = try writeFile(dir, "a.jsonl", Array(text.utf8))
        // Split bytes, not Characters: "\r\n" is one Character in Swift.
        let expected = Array(text.utf8).split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
            .map { String(decoding: $0, as: UTF8.self) }
        for chunk in [1, 3, 7, 64] {
            let lines = try splitLines(path, zstd: false, chunkBytes: chunk)
            #expect(lines.map(\.0) == expected, "chunk \(chunk)")
            #expect(lines.map(\.1) == Array(1...expected.count))
            #expect(lines[2].2 == 7)
        }
    }

    @Test func reportsALineLongerThanTheLimitWithItsNumberAndOffsetAndContinues() throws {
        let dir = try TestPaths.temporaryDirectory("long")
        let long = String(repeating: "x", count: 100)
        let path = try writeFile(dir, "a.jsonl", Array("ok\n\(long)\nafter\n".utf8))
        for chunk in [4, 16, 1024] {
            let lines = try splitLines(path, zstd: false, chunkBytes: chunk, maxLineBytes: 50)
            #expect(lines.map(\.0) == ["ok", "<too long>", "after"], "chunk \(chunk)")
            #expect(lines[2].1 == 3)
            #expect(lines[2].2 == 104)
        }
    }

    /// Corrupt data after `validBytes` good bytes must fail with an offset in the bad part.
    func expectCorrupt(_ bytes: [UInt8], badFrom: Int, badTo: Int) throws {
        let dir = try TestPaths.temporaryDirectory("corrupt")
        let path = try writeFile(dir, "bad.jsonl.zst", bytes)
        do {
            _ = try splitLines(path, zstd: true, chunkBytes: 1 << 16)
            Issue.record("expected a corrupt-data error")
        } catch let error as CorpusError {
            guard case let .corruptZstd(p, offset, reason) = error else { Issue.record("wrong error \(error)"); return }
            #expect(p == path)
            #expect(offset >= Int64(badFrom) && offset <= Int64(badTo), "offset \(offset), \(reason)")
            #expect("\(error)".contains("compressed byte offset"))
        }
    }

    @Test func corruptZstdNamesTheFileAndCompressedOffset() throws {
        let good = [UInt8](try Data(contentsOf: URL(fileURLWithPath: CorpusGolden.path)))
        // Garbage after the valid frames: the error points past them.
        try expectCorrupt(good + Array("this is not a zstd frame at all".utf8), badFrom: good.count, badTo: good.count + 31)
        // A damaged frame header at the start.
        var header = good
        header[0] ^= 0xFF
        try expectCorrupt(header, badFrom: 0, badTo: 8)
    }

    @Test func truncatedZstdIsAnErrorNotAShortRead() throws {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: CorpusGolden.path)))
        let dir = try TestPaths.temporaryDirectory("trunc")
        let path = try writeFile(dir, "cut.jsonl.zst", Array(bytes.prefix(bytes.count - 100)))
        #expect(throws: CorpusError.truncatedZstd(path: path, compressedOffset: Int64(bytes.count - 100))) {
            _ = try splitLines(path, zstd: true, chunkBytes: 1 << 16)
        }
    }

    @Test func expandsDirectoriesAndGlobsInSortedOrder() throws {
        let dir = try TestPaths.temporaryDirectory("expand")
        for name in ["b.jsonl", "a.jsonl.zst", "c.txt", "SHA256SUMS.txt", "notes.md"] {
            _ = try writeFile(dir, name, Array("{\"text\":\"x\"}\n".utf8))
        }
        let fromDir = try CorpusFile.expand([dir]).map { ($0.path as NSString).lastPathComponent }
        #expect(fromDir == ["a.jsonl.zst", "b.jsonl"])
        let fromGlob = try CorpusFile.expand(["\(dir)/*.txt", "\(dir)/b.jsonl"]).map { ($0.path as NSString).lastPathComponent }
        #expect(fromGlob == ["SHA256SUMS.txt", "b.jsonl", "c.txt"])
        #expect(throws: CorpusError.pathNotFound("\(dir)/missing.jsonl")) { try CorpusFile.expand(["\(dir)/missing.jsonl"]) }
        #expect(throws: CorpusError.unsupportedFile(path: "\(dir)/notes.md")) { try CorpusFile.expand(["\(dir)/notes.md"]) }
        #expect(throws: CorpusError.noInputs) { try CorpusFile.expand([]) }
    }

    @Test func seededGeneratorsMatchTheirReferenceImplementations() throws {
        let golden = try CorpusGolden.load().prng
        var sm = SplitMix64(seed: golden.seed)
        #expect((0..<6).map { _ in String(sm.next()) } == golden.splitmix64)
        var x = Xoshiro256StarStar(seed: golden.seed)
        #expect((0..<6).map { _ in String(x.next()) } == golden.xoshiro256starstar)
    }
}
