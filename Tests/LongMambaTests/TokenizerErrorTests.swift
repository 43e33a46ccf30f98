import Foundation
import Testing
@testable import LongMamba

@Suite struct TokenizerErrorTests {
    /// The fixture tokenizer's JSON with one part replaced.
    func modifiedFixture(_ change: (inout [String: Any]) -> Void) throws -> Data {
        let data = try Data(contentsOf: URL(fileURLWithPath: TestPaths.fixture("tokenizer/fixture-tokenizer.json")))
        var root = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        change(&root)
        return try JSONSerialization.data(withJSONObject: root)
    }

    func expectUnsupported(naming component: String, _ change: (inout [String: Any]) -> Void) throws {
        let data = try modifiedFixture(change)
        do {
            _ = try BPETokenizer(data: data, source: "modified.json")
            Issue.record("expected an unsupported-component error naming \(component)")
        } catch let error as TokenizerError {
            guard case .unsupported = error else { Issue.record("wrong error \(error)"); return }
            #expect("\(error)".contains(component), "\(error)")
            #expect("\(error)".contains("modified.json"))
        }
    }

    @Test func refusesComponentsItDoesNotImplementByName() throws {
        try expectUnsupported(naming: "normalizer 'NFKC'") { $0["normalizer"] = ["type": "NFKC"] }
        try expectUnsupported(naming: "pre_tokenizer 'Metaspace'") { $0["pre_tokenizer"] = ["type": "Metaspace"] }
        try expectUnsupported(naming: "decoder 'WordPiece'") { $0["decoder"] = ["type": "WordPiece"] }
        try expectUnsupported(naming: "post_processor 'TemplateProcessing'") { $0["post_processor"] = ["type": "TemplateProcessing"] }
        try expectUnsupported(naming: "model 'WordPiece'") {
            var m = $0["model"] as! [String: Any]; m["type"] = "WordPiece"; $0["model"] = m
        }
        try expectUnsupported(naming: "BPE dropout") {
            var m = $0["model"] as! [String: Any]; m["dropout"] = 0.1; $0["model"] = m
        }
        try expectUnsupported(naming: "added token option lstrip") {
            var added = $0["added_tokens"] as! [[String: Any]]; added[0]["lstrip"] = true; $0["added_tokens"] = added
        }
        try expectUnsupported(naming: "truncation") { $0["truncation"] = ["max_length": 8] }
    }

    @Test func reportsMalformedFilesAndMissingMergeTokens() throws {
        let notJSON = #expect(throws: TokenizerError.self) { try BPETokenizer(data: Data("{not json".utf8), source: "x.json") }
        guard case let .malformed(path, reason)? = notJSON else { Issue.record("wrong case: \(String(describing: notJSON))"); return }
        #expect(path == "x.json")
        #expect(reason.hasPrefix("not valid JSON ("), "\(reason)")
        let badMerge = try modifiedFixture {
            var m = $0["model"] as! [String: Any]
            m["merges"] = [["Ġzzzq", "qqq"]]
            $0["model"] = m
        }
        do {
            _ = try BPETokenizer(data: badMerge, source: "bad.json")
            Issue.record("expected a malformed error")
        } catch let error as TokenizerError {
            #expect("\(error)".contains("merge 0"), "\(error)")
        }
        let missing = #expect(throws: TokenizerError.self) { try BPETokenizer(contentsOf: "/nonexistent/tokenizer.json") }
        guard case let .unreadable(missingPath, missingReason)? = missing else { Issue.record("wrong case: \(String(describing: missing))"); return }
        #expect(missingPath == "/nonexistent/tokenizer.json")
        #expect(!missingReason.isEmpty)
    }

    @Test func decodeRejectsIdsOutsideTheVocabulary() throws {
        let t = try BPETokenizer(contentsOf: TestPaths.fixture("tokenizer/fixture-tokenizer.json"))
        #expect(throws: TokenizerError.unknownTokenId(id: 2048, vocabularySize: 2048)) { try t.decode([5, 2048]) }
        #expect(throws: TokenizerError.unknownTokenId(id: -1, vocabularySize: 2048)) { try t.decode([-1]) }
    }

    @Test func utf8CheckFindsTheFirstBadByteAfterLongASCII() {
        let bytes = Array(repeating: UInt8(ascii: "a"), count: 37) + [0xC3, 0x28] + Array("ok".utf8)
        #expect(bytes.withUnsafeBufferPointer(UTF8Check.firstInvalidOffset) == 37)
        let good = Array("päivää 😀 日本".utf8)
        #expect(good.withUnsafeBufferPointer(UTF8Check.firstInvalidOffset) == nil)
    }
}

@Suite struct TokenizerNormalizationTests {
    struct NFCGolden: Decodable { let cases: [[String]] }

    @Test func nfcMatchesHuggingFaceOnEveryChangedCodePointAndDecomposedCharacter() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: TestPaths.fixture("tokenizer/nfc-golden.json")))
        let golden = try JSONDecoder().decode(NFCGolden.self, from: data)
        #expect(golden.cases.count > 3000)
        var mismatches: [[Unicode.Scalar]] = []
        for c in golden.cases where NFC.normalize(c[0]).unicodeScalars.elementsEqual(c[1].unicodeScalars) == false {
            mismatches.append(Array(c[0].unicodeScalars))
        }
        // Only the documented difference (HF's pre-Unicode-13 tables) may remain.
        #expect(mismatches == NFC.knownDifferences, "NFC differs from HF on: \(mismatches.prefix(20))")
        // Foundation on Linux gets these wrong; compare scalars, not String == (canonical equivalence).
        #expect(Array(NFC.normalize("\u{0CCA}\u{0CD5}x\u{0CCA}").unicodeScalars) == ["\u{0CCB}", "x", "\u{0CCA}"])
        #expect(Array(NFC.normalize("\u{10052}\u{0311}").unicodeScalars) == ["\u{10052}", "\u{0311}"])
        #expect(Array(NFC.normalize("\u{1105}\u{1176}\u{AC00}\u{11A8}").unicodeScalars) == ["\u{1105}", "\u{1176}", "\u{AC01}"])
    }
}
