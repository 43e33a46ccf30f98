import Foundation
import Testing
@testable import LongMamba

func fixtureTokenizer() throws -> BPETokenizer {
    try BPETokenizer(contentsOf: TestPaths.fixture("tokenizer/fixture-tokenizer.json"))
}

func sample(_ paths: [String], _ options: SamplerOptions) throws -> CorpusSample {
    try CorpusSampler(files: try CorpusFile.expand(paths), tokenizer: try fixtureTokenizer(), options: options).run()
}

/// All documents of a file, by line number.
func documentsByLine(_ path: String) throws -> [Int: String] {
    var docs: [Int: String] = [:]
    try CorpusDocuments.forEach(try CorpusFile.expand([path])[0]) { text, line in docs[line] = text; return true }
    return docs
}

func jsonLine(_ text: String, subset: String? = nil) -> String {
    var object: [String: Any] = ["text": text]
    if let subset { object["meta"] = ["pile_set_name": subset] }
    let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    return String(decoding: data, as: UTF8.self)
}

@Suite struct CorpusSamplerTests {
    @Test func sameSeedGivesByteIdenticalFilesAndAnotherSeedDoesNot() throws {
        let options = SamplerOptions(count: 3, length: 128, seed: 7)
        let dirA = try TestPaths.temporaryDirectory("sa"), dirB = try TestPaths.temporaryDirectory("sb")
        try sample([CorpusGolden.path], options).write(to: dirA)
        try sample([CorpusGolden.path], options).write(to: dirB)
        for name in ["sample-0.tokens", "sample-1.tokens", "sample-2.tokens", "provenance.json"] {
            let a = try Data(contentsOf: URL(fileURLWithPath: "\(dirA)/\(name)"))
            let b = try Data(contentsOf: URL(fileURLWithPath: "\(dirB)/\(name)"))
            #expect(!a.isEmpty && a == b, "\(name)")
        }
        let tokens = try String(contentsOfFile: "\(dirA)/sample-0.tokens", encoding: .utf8)
        #expect(tokens.split(separator: " ").count == 128)
        var other = options
        other.seed = 8
        #expect(try sample([CorpusGolden.path], other).sequences != sample([CorpusGolden.path], options).sequences)
    }

    @Test func documentModeSequencesAreSeededWindowsOfTheRecordedDocuments() throws {
        let golden = try CorpusGolden.load()
        let docs = try documentsByLine(CorpusGolden.path)
        let tokenizer = try fixtureTokenizer()
        let L = 300
        let result = try sample([CorpusGolden.path], SamplerOptions(count: 5, length: L, seed: 42))
        #expect(result.sequences.count == 5)
        let lines = result.provenance.sequences.map { $0.documents[0].line }
        #expect(Set(lines).count == 5, "documents are sampled without replacement")
        for (k, seq) in result.provenance.sequences.enumerated() {
            #expect(seq.documents.count == 1)
            let span = seq.documents[0]
            let doc = golden.documents[span.line - 1]
            let ids = tokenizer.encode(docs[span.line]!).map(Int32.init)
            #expect(span.documentTokens == doc.fixture.count && span.documentTokens >= L)
            #expect(span.byteOffset == doc.byte_offset)
            #expect(span.subset == doc.subset)
            #expect(span.tokenEnd - span.tokenStart == L)
            #expect(Array(ids[span.tokenStart..<span.tokenEnd]) == result.sequences[k])
        }
    }

    @Test func subsetFiltersKeepOnlyTheRequestedSubsets() throws {
        let include = try sample([CorpusGolden.path], SamplerOptions(count: 12, length: 24, seed: 3, subsets: ["Github", "DM Mathematics"]))
        let included = Set(include.provenance.sequences.map { $0.documents[0].subset })
        #expect(!included.isEmpty && included.isSubset(of: ["Github", "DM Mathematics"]))
        let exclude = try sample([CorpusGolden.path], SamplerOptions(count: 40, length: 16, seed: 3, excludedSubsets: ["FreeLaw"]))
        #expect(!exclude.provenance.sequences.contains { $0.documents[0].subset == "FreeLaw" })
        #expect(exclude.provenance.sequences.count == 40)
    }

    @Test func packedModeJoinsDocumentsWithEOSInTheRecordedOrder() throws {
        let docs = try documentsByLine(CorpusGolden.path)
        let tokenizer = try fixtureTokenizer()
        let eos = Int32(try #require(tokenizer.eosTokenId))
        let result = try sample([CorpusGolden.path], SamplerOptions(count: 3, length: 700, seed: 11, packing: .packed))
        #expect(result.sequences.count == 3)
        var sawEOS = false
        for (k, seq) in result.provenance.sequences.enumerated() {
            var rebuilt: [Int32] = []
            for span in seq.documents {
                #expect(span.sequenceStart == rebuilt.count)
                let ids = tokenizer.encode(docs[span.line]!).map(Int32.init)
                rebuilt += ids[span.tokenStart..<span.tokenEnd]
                if span.followedByEOS { rebuilt.append(eos); sawEOS = true }
            }
            #expect(rebuilt == result.sequences[k])
            #expect(result.sequences[k].count == 700)
        }
        #expect(sawEOS)
        // Consecutive sequences continue the same stream: a document cut at the end of one
        // sequence goes on at the start of the next.
        let end0 = try #require(result.provenance.sequences[0].documents.last)
        let start1 = try #require(result.provenance.sequences[1].documents.first)
        if !end0.followedByEOS {
            #expect(start1.line == end0.line && start1.tokenStart == end0.tokenEnd)
        }
    }

    /// Brute force over the golden: every candidate line (enough bytes) draws a key in corpus
    /// order; the sample is the eligible documents with the smallest keys, in key order.
    func expectedLines(minimumTokens: Int, seed: UInt64, take: ([CorpusGolden.Document]) -> [CorpusGolden.Document]) throws -> [Int] {
        let golden = try CorpusGolden.load()
        var rng = Xoshiro256StarStar(seed: seed)
        var keyed: [(UInt64, CorpusGolden.Document)] = []
        for (i, doc) in golden.documents.enumerated() {
            let end = i + 1 < golden.documents.count ? golden.documents[i + 1].byte_offset : golden.uncompressed_bytes
            let lineBytes = Int(end - doc.byte_offset) - 1
            guard lineBytes >= minimumTokens else { continue }
            let key = rng.next()
            if doc.fixture.count >= minimumTokens { keyed.append((key, doc)) }
        }
        return take(keyed.sorted { $0.0 < $1.0 }.map(\.1)).map(\.line)
    }

    @Test func documentModeTakesTheEligibleDocumentsWithTheSmallestKeys() throws {
        for seed: UInt64 in [1, 2, 99] {
            let L = 200, K = 6
            let result = try sample([CorpusGolden.path], SamplerOptions(count: K, length: L, seed: seed))
            let expected = try expectedLines(minimumTokens: L, seed: seed) { Array($0.prefix(K)) }
            #expect(result.provenance.sequences.map { $0.documents[0].line } == expected, "seed \(seed)")
        }
    }

    @Test func packedModeTakesTheShortestKeyOrderPrefixThatFillsTheSample() throws {
        let L = 400, K = 3
        let result = try sample([CorpusGolden.path], SamplerOptions(count: K, length: L, seed: 4, packing: .packed))
        let expected = try expectedLines(minimumTokens: 1, seed: 4) { docs in
            var total = 0
            return Array(docs.prefix { doc in
                defer { total += doc.fixture.count + 1 }
                return total < K * L
            })
        }
        var used: [Int] = []
        for seq in result.provenance.sequences {
            for span in seq.documents where used.last != span.line { used.append(span.line) }
        }
        #expect(used == expected)
    }

    @Test func choosesEligibleDocumentsUniformly() throws {
        // Ten documents; the five long ones are eligible for L = 20. Over 500 seeds each should
        // be chosen about 100 times, the short ones never.
        let dir = try TestPaths.temporaryDirectory("uniform")
        var lines: [String] = []
        for i in 0..<10 {
            let words = i % 2 == 0 ? 40 : 3
            lines.append(jsonLine((0..<words).map { "w\($0 * 7 + i)" }.joined(separator: " ")))
        }
        let path = try writeFile(dir, "u.jsonl", Array((lines.joined(separator: "\n") + "\n").utf8))
        let tokenizer = try fixtureTokenizer()
        let files = try CorpusFile.expand([path])
        var counts = [Int: Int]()
        for seed in 0..<500 {
            let result = try CorpusSampler(files: files, tokenizer: tokenizer, options: SamplerOptions(count: 1, length: 20, seed: UInt64(seed))).run()
            counts[result.provenance.sequences[0].documents[0].line, default: 0] += 1
        }
        #expect(Set(counts.keys) == [1, 3, 5, 7, 9])
        for (line, n) in counts { #expect((60...140).contains(n), "line \(line) chosen \(n) times of 500") }
    }

    @Test func fewerEligibleDocumentsThanKIsAnErrorNotAShortSample() throws {
        let golden = try CorpusGolden.load()
        let L = 3000
        let eligible = golden.documents.filter { $0.fixture.count >= L }.count
        #expect(throws: CorpusError.notEnoughDocuments(eligible: eligible, needed: eligible + 1, criteria: "at least \(L) tokens")) {
            try sample([CorpusGolden.path], SamplerOptions(count: eligible + 1, length: L, seed: 1))
        }
        // Exactly as many as exist works and uses all of them.
        let all = try sample([CorpusGolden.path], SamplerOptions(count: eligible, length: L, seed: 1))
        #expect(all.sequences.count == eligible)
    }

    @Test func packedModeWithTooFewTokensIsAnError() throws {
        let golden = try CorpusGolden.load()
        let available = golden.documents.reduce(0) { $0 + $1.fixture.count + 1 }
        let L = available / 2 + 1
        #expect(throws: CorpusError.notEnoughTokens(available: available, needed: 2 * L, criteria: "at least 1 tokens")) {
            try sample([CorpusGolden.path], SamplerOptions(count: 2, length: L, seed: 1, packing: .packed))
        }
    }

    @Test func emptyCorpusIsAnError() throws {
        let dir = try TestPaths.temporaryDirectory("empty")
        let empty = try writeFile(dir, "empty.jsonl", [])
        #expect(throws: CorpusError.emptyCorpus(files: 1)) { try sample([empty], SamplerOptions(count: 1, length: 4, seed: 1)) }
        let blank = try writeFile(dir, "blank.jsonl", Array("\n  \n\r\n".utf8))
        #expect(throws: CorpusError.emptyCorpus(files: 1)) { try sample([blank], SamplerOptions(count: 1, length: 4, seed: 1)) }
    }

    @Test func badLinesFailWithFileAndLineOrAreCountedWhenSkipping() throws {
        let dir = try TestPaths.temporaryDirectory("bad")
        let good = jsonLine("a good document with enough words in it for the test")
        func corpus(_ bad: [UInt8]) throws -> String {
            try writeFile(dir, "c\(UUID().uuidString).jsonl", Array("\(good)\n".utf8) + bad + Array("\n\(good)\n".utf8))
        }
        let offset = Int64(good.utf8.count + 1)
        let cases: [(String, [UInt8], (String) -> CorpusError)] = [
            ("malformed JSON", Array("{\"text\": \"unterminated".utf8), { .malformedLine(path: $0, line: 2, byteOffset: offset, reason: "does not start with '{' and end with '}'") }),
            ("no text field", Array("{\"meta\": {\"pile_set_name\": \"Github\"}}".utf8), { .missingText(path: $0, line: 2, byteOffset: offset) }),
            ("invalid UTF-8", Array("{\"text\": \"bad ".utf8) + [0xFF, 0xFE] + Array(" bytes here ok\"}".utf8), { .invalidUTF8(path: $0, line: 2, byteOffset: offset + 14) }),
        ]
        for (reason, bad, expected) in cases {
            let path = try corpus(bad)
            // K = 3 keeps every candidate, so every line is fully decoded.
            #expect(throws: expected(path), "\(reason)") { try sample([path], SamplerOptions(count: 3, length: 4, seed: 1)) }
            var options = SamplerOptions(count: 2, length: 4, seed: 1)
            options.skipBadLines = true
            let result = try sample([path], options)
            #expect(result.provenance.statistics.skipped == [reason: 1], "\(reason)")
            #expect(result.provenance.statistics.skippedExamples.first?.contains("line 2") == true)
            #expect(result.sequences.count == 2)
        }
        // Bad JSON that only the full decode notices.
        let subtle = try corpus(Array("{\"text\": \"a\" \"b\"}".utf8))
        do {
            _ = try sample([subtle], SamplerOptions(count: 3, length: 1, seed: 1))
            Issue.record("expected a malformed-line error")
        } catch let error as CorpusError {
            guard case let .malformedLine(p, line, _, _) = error else { Issue.record("wrong error \(error)"); return }
            #expect(p == subtle && line == 2)
        }
    }

    @Test func anEnormousLineIsAnErrorOrASkipWithinTheMemoryBound() throws {
        let dir = try TestPaths.temporaryDirectory("huge")
        let good = jsonLine("short document text here")
        let huge = jsonLine(String(repeating: "z", count: 5000))
        let path = try writeFile(dir, "h.jsonl", Array("\(good)\n\(huge)\n\(good)\n".utf8))
        var options = SamplerOptions(count: 2, length: 2, seed: 5, maxLineBytes: 1000)
        #expect(throws: CorpusError.lineTooLong(path: path, line: 2, byteOffset: Int64(good.utf8.count + 1), limit: 1000)) {
            try sample([path], options)
        }
        options.skipBadLines = true
        let result = try sample([path], options)
        #expect(result.provenance.statistics.skipped == ["line too long": 1])
        #expect(Set(result.provenance.sequences.map { $0.documents[0].line }) == [1, 3])
    }

    @Test func aTextFileIsOneDocument() throws {
        let dir = try TestPaths.temporaryDirectory("txt")
        let a = try writeFile(dir, "a.txt", Array("First file.\n\nIt has two paragraphs but is one document.\n".utf8))
        let b = try writeFile(dir, "b.txt", Array("Second file, also one document, long enough.".utf8))
        let result = try sample([b, a], SamplerOptions(count: 2, length: 6, seed: 9))
        let spans = result.provenance.sequences.map { $0.documents[0] }
        #expect(Set(spans.map(\.file)) == [a, b])
        #expect(spans.allSatisfy { $0.line == 1 && $0.byteOffset == 0 && $0.subset == nil })
        #expect(result.provenance.files.map(\.path) == [a, b], "files are read in sorted order")
        let tokenizer = try fixtureTokenizer()
        for (k, span) in spans.enumerated() {
            let text = try String(contentsOfFile: span.file, encoding: .utf8)
            let ids = tokenizer.encode(text).map(Int32.init)
            #expect(Array(ids[span.tokenStart..<span.tokenEnd]) == result.sequences[k])
        }
    }

    @Test func refusesImpossibleOptions() throws {
        let files = try CorpusFile.expand([CorpusGolden.path])
        let t = try fixtureTokenizer()
        #expect(throws: CorpusError.invalidOption("--count must be at least 1")) { try CorpusSampler(files: files, tokenizer: t, options: SamplerOptions(count: 0, length: 8, seed: 1)) }
        #expect(throws: CorpusError.invalidOption("--length must be at least 1")) { try CorpusSampler(files: files, tokenizer: t, options: SamplerOptions(count: 1, length: 0, seed: 1)) }
    }

    @Test func provenanceRoundTripsThroughJSON() throws {
        let result = try sample([CorpusGolden.path], SamplerOptions(count: 2, length: 64, seed: 2, packing: .packed, subsets: ["FreeLaw"]))
        let data = try JSONEncoder().encode(result.provenance)
        #expect(try JSONDecoder().decode(SampleProvenance.self, from: data) == result.provenance)
        #expect(result.provenance.tokenizer.sha256 == (try fixtureTokenizer()).sha256)
        #expect(result.provenance.files.map(\.sha256) == [try CorpusGolden.load().sha256])
        var noHash = result.provenance.options
        noHash.hashFiles = false
        #expect(try sample([CorpusGolden.path], noHash).provenance.files.map(\.sha256) == [nil])
    }
}

