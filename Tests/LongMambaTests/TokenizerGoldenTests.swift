import Foundation
import Testing
@testable import LongMamba

/// Locations of committed fixtures and of the optional shared data folder.
enum TestPaths {
    /// Repository root, found from this file's path (Tests/LongMambaTests/<file>).
    static let repoRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func fixture(_ relative: String) -> String {
        repoRoot.appendingPathComponent("Fixtures").appendingPathComponent(relative).path
    }

    /// `$LONGMAMBA_SHARED_DATA`, else the first `shared/data` found next to the repository or one
    /// of its parents (worktrees live beside `main` and `shared`).
    static let sharedData: String? = {
        let fm = FileManager.default
        if let env = ProcessInfo.processInfo.environment["LONGMAMBA_SHARED_DATA"], !env.isEmpty {
            return fm.fileExists(atPath: env) ? env : nil
        }
        var dir = repoRoot
        for _ in 0..<4 {
            let candidate = dir.deletingLastPathComponent().appendingPathComponent("shared/data")
            if fm.fileExists(atPath: candidate.path) { return candidate.path }
            dir = dir.deletingLastPathComponent()
        }
        return nil
    }()

    static let neoxTokenizer: String? = sharedData.map { "\($0)/gpt-neox-20b-tokenizer.json" }
        .flatMap { FileManager.default.fileExists(atPath: $0) ? $0 : nil }

    static func temporaryDirectory(_ tag: String) throws -> String {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("lm-\(tag)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}

/// One golden file written by scripts/make_tokenizer_golden.py.
struct TokenizerGolden: Decodable {
    struct Case: Decodable {
        let name: String
        let text: String
        let ids: [Int]
        let decoded: String
        let decoded_with_special: String
    }
    struct ByteCase: Decodable {
        let name: String
        let hex: String
        let ids: [Int]
        let first_invalid_offset: Int?
        var bytes: [UInt8] {
            var out: [UInt8] = []
            var it = hex.makeIterator()
            while let a = it.next(), let b = it.next() { out.append(UInt8(String([a, b]), radix: 16)!) }
            return out
        }
    }
    let tokenizer_sha256: String
    let vocab_size: Int
    let eos_id: Int?
    struct PartialDecode: Decodable { let ids: [Int]; let decoded: String }
    let cases: [Case]
    let byte_cases: [ByteCase]
    let partial_decodes: [PartialDecode]

    static func load(_ path: String) throws -> TokenizerGolden {
        try JSONDecoder().decode(TokenizerGolden.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    }
}

func checkGolden(tokenizerPath: String, goldenPath: String, addPrefixSpace: Bool = false) throws {
    let golden = try TokenizerGolden.load(goldenPath)
    var tokenizer = try BPETokenizer(contentsOf: tokenizerPath)
    #expect(tokenizer.sha256 == golden.tokenizer_sha256)
    if addPrefixSpace {
        let data = try Data(contentsOf: URL(fileURLWithPath: tokenizerPath))
        var root = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        var pre = try #require(root["pre_tokenizer"] as? [String: Any])
        pre["add_prefix_space"] = true
        root["pre_tokenizer"] = pre
        tokenizer = try BPETokenizer(data: try JSONSerialization.data(withJSONObject: root), source: "prefix-space variant")
    }
    #expect(tokenizer.vocabularySize == golden.vocab_size)
    #expect(tokenizer.eosTokenId == golden.eos_id)
    #expect(golden.cases.count > 30)
    var encoder = tokenizer.makeEncoder()
    for c in golden.cases {
        let ids = tokenizer.encode(c.text)
        #expect(ids == c.ids, "case \(c.name)")
        // The cached encoder must give the same ids on a second pass.
        #expect(encoder.encode(c.text) == c.ids, "case \(c.name), cached encoder")
        // Compare bytes: String == would accept any canonically equivalent text.
        #expect(Array(try tokenizer.decode(ids).utf8) == Array(c.decoded.utf8), "decode of case \(c.name)")
        #expect(Array(try tokenizer.decode(ids, skipSpecialTokens: false).utf8) == Array(c.decoded_with_special.utf8),
                "decode of case \(c.name)")
    }
    for p in golden.partial_decodes {
        #expect(Array(try tokenizer.decode(p.ids).utf8) == Array(p.decoded.utf8), "partial decode \(p.ids)")
    }
    #expect(golden.partial_decodes.contains { $0.decoded.contains("\u{FFFD}") })
    for c in golden.byte_cases {
        #expect(try tokenizer.encode(utf8: c.bytes, lossy: true) == c.ids, "byte case \(c.name)")
        if let offset = c.first_invalid_offset {
            #expect(throws: TokenizerError.invalidUTF8(source: "input", byteOffset: offset)) {
                try tokenizer.encode(utf8: c.bytes)
            }
        }
    }
}

@Suite struct TokenizerGoldenTests {
    @Test func fixtureTokenizerMatchesHuggingFaceOnAllGoldenCases() throws {
        try checkGolden(tokenizerPath: TestPaths.fixture("tokenizer/fixture-tokenizer.json"),
                        goldenPath: TestPaths.fixture("tokenizer/golden-fixture.json"))
    }

    @Test func addPrefixSpaceVariantMatchesHuggingFace() throws {
        try checkGolden(tokenizerPath: TestPaths.fixture("tokenizer/fixture-tokenizer.json"),
                        goldenPath: TestPaths.fixture("tokenizer/golden-fixture-prefix-space.json"), addPrefixSpace: true)
    }

    @Test(.enabled(if: TestPaths.neoxTokenizer != nil,
                   "shared/data/gpt-neox-20b-tokenizer.json not found (set LONGMAMBA_SHARED_DATA); skipping GPT-NeoX parity"))
    func gptNeoXTokenizerMatchesHuggingFaceOnAllGoldenCases() throws {
        try checkGolden(tokenizerPath: TestPaths.neoxTokenizer!,
                        goldenPath: TestPaths.fixture("tokenizer/golden-gpt-neox-20b.json"))
    }

    @Test(.enabled(if: TestPaths.neoxTokenizer != nil, "shared/data absent; skipping GPT-NeoX facts"))
    func gptNeoXKnownFactsHold() throws {
        let t = try BPETokenizer(contentsOf: TestPaths.neoxTokenizer!)
        #expect(t.vocabularySize == 50277)
        #expect(t.eosTokenId == 0)
        #expect(t.encode("Hello world") == [12092, 1533])
        #expect(t.encode("naïve café 日本語") == [2072, 30180, 36241, 209, 49868, 19119, 241])
        #expect(t.sha256 == "56ac4821e129d2c520fdaba60abd920fa852ada51b45c0dd52bbb6bd8c985ade")
    }
}
