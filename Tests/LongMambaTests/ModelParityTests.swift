import Foundation
import Testing
@testable import LongMamba

/// Paths of the model fixtures made by scripts/make_golden.py.
enum ModelFixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let models = root.appendingPathComponent("Fixtures/models")
    static let golden = root.appendingPathComponent("Fixtures/golden")

    struct Entry: Decodable { let architecture: String; let layout: String; let golden: String }

    static func manifest() throws -> [String: Entry] {
        let data = try Data(contentsOf: models.appendingPathComponent("manifest.json"))
        return try JSONDecoder().decode([String: Entry].self, from: data)
    }

    static func model(_ name: String) -> String { models.appendingPathComponent(name).path }
    static func goldenFile(_ name: String) throws -> SafetensorsFile {
        try SafetensorsFile(path: golden.appendingPathComponent(name + ".safetensors").path)
    }
}

/// max |a − b| / max |b|: error relative to the reference tensor's scale.
func relativeError(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    var maxDiff: Float = 0, maxRef: Float = 0
    for i in a.indices {
        maxDiff = max(maxDiff, abs(a[i] - b[i]))
        maxRef = max(maxRef, abs(b[i]))
    }
    return maxRef == 0 ? maxDiff : maxDiff / maxRef
}

@Suite struct ModelParityTests {
    /// Every model fixture scripts/make_golden.py writes. Listed here, not read from the manifest, so
    /// a missing or broken manifest fails each case instead of running none.
    static let fixtureNames = [
        "falcon_mamba-tiny-hf",
        "mamba-tiny-hf", "mamba-tiny-hf-bf16", "mamba-tiny-hf-f16", "mamba-tiny-hf-sharded", "mamba-tiny-ss",
        "mamba2-tiny-hf", "mamba2-tiny-hf-bf16", "mamba2-tiny-hf-f16", "mamba2-tiny-hf-sharded", "mamba2-tiny-ss",
    ]

    @Test func manifestDescribesExactlyTheListedFixtures() throws {
        let manifest = try ModelFixtures.manifest()
        #expect(manifest.keys.sorted() == Self.fixtureNames.sorted())
        for name in Self.fixtureNames {
            #expect(FileManager.default.fileExists(atPath: ModelFixtures.model(name) + "/config.json"), "\(name) has no config.json")
        }
    }

    @Test(arguments: fixtureNames)
    func deltaAndLogitsMatchTransformers(fixture: String) throws {
        let entry = try #require(try ModelFixtures.manifest()[fixture])
        let golden = try ModelFixtures.goldenFile(entry.golden)
        let tokens = try golden.integers("tokens")
        let model = try MambaModel(directory: ModelFixtures.model(fixture))
        #expect(model.config.architecture.rawValue == entry.architecture)
        #expect(model.config.layout.rawValue == (entry.layout == "hf" ? "transformers" : "state-spaces"))
        var recorder = CollectingRecorder()
        let logits = try model.forward(tokens: tokens, recorder: &recorder, computeLogits: true)
        #expect(recorder.layers.count == model.config.layerCount)
        for layer in recorder.layers {
            let expected = try golden.floats("layer.\(layer.layer).delta")
            let error = relativeError(layer.delta, expected)
            #expect(error <= 1e-4, "\(fixture) layer \(layer.layer) Δ relative error \(error)")
            #expect(relativeError(layer.A, try golden.floats("layer.\(layer.layer).A")) <= 1e-6)
        }
        let expectedLogits = try golden.floats("logits")
        let V = expectedLogits.count / tokens.count
        // The golden holds the padded vocabulary; compare all of it.
        #expect(logits.count == tokens.count * V)
        let error = relativeError(logits, expectedLogits)
        #expect(error <= 1e-4, "\(fixture) logits relative error \(error)")
    }

    @Test(arguments: ["mamba-tiny-hf", "mamba2-tiny-hf"])
    func vectorisedScanMatchesPlainScan(fixture: String) throws {
        let golden = try ModelFixtures.goldenFile(fixture.hasPrefix("mamba2") ? "mamba2-f32" : "mamba-f32")
        let tokens = try golden.integers("tokens")
        let fast = try MambaModel(directory: ModelFixtures.model(fixture))
        let plain = try MambaModel(directory: ModelFixtures.model(fixture))
        plain.useReferenceScan = true
        let a = try fast.logits(tokens: tokens), b = try plain.logits(tokens: tokens)
        #expect(relativeError(a, b) <= 2e-6)
    }

    @Test func shardedAndSingleFileCheckpointsHaveTheSameFingerprint() throws {
        let single = try ModelCheckpoint(directory: ModelFixtures.model("mamba-tiny-hf"))
        let sharded = try ModelCheckpoint(directory: ModelFixtures.model("mamba-tiny-hf-sharded"))
        let bf16 = try ModelCheckpoint(directory: ModelFixtures.model("mamba-tiny-hf-bf16"))
        #expect(single.fingerprint() == sharded.fingerprint())
        #expect(single.fingerprint() != bf16.fingerprint())
        #expect(single.fingerprint().count == 64)
    }

    @Test func refusesTokenIdsOutsideTheVocabulary() throws {
        let model = try MambaModel(directory: ModelFixtures.model("mamba2-tiny-hf"))
        do {
            _ = try model.logits(tokens: [1, 2, 504])
            Issue.record("expected an error")
        } catch let error as ModelRunError {
            #expect(error == .tokenOutOfVocabulary(token: 504, position: 2, vocabularySize: model.config.paddedVocabSize))
            #expect(error.description == "token id 504 at position 2 is outside the model's vocabulary (ids 0 to \(model.config.paddedVocabSize - 1))")
        }
        let empty = #expect(throws: ModelRunError.self) { _ = try model.logits(tokens: []) }
        #expect(empty == .emptyTokens)
        #expect(empty?.description == "empty token sequence")
    }
}

@Suite struct ChunkedSequenceTests {
    @Test(arguments: ["mamba-tiny-hf", "mamba2-tiny-hf", "falcon_mamba-tiny-hf"])
    func chunksWithCarriedStateGiveTheSameDeltaAndLogits(fixture: String) throws {
        let tokens = try TokenFile.read(ModelFixtures.root.appendingPathComponent("Fixtures/tokens/parity.tokens").path)
        for reference in [false, true] {
            let model = try MambaModel(directory: ModelFixtures.model(fixture))
            model.useReferenceScan = reference
            var whole = CollectingRecorder()
            let wholeLogits = try model.forward(tokens: tokens, recorder: &whole, computeLogits: true)
            var state = SequenceState(layerCount: model.config.layerCount)
            var chunkLogits: [Float] = []
            var chunkDeltas = [[Float]](repeating: [], count: model.config.layerCount)
            // Uneven chunks, including ones shorter than the conv kernel.
            for range in [0..<2, 2..<33, 33..<34, 34..<80] {
                var part = CollectingRecorder()
                chunkLogits += try model.forward(tokens: Array(tokens[range]), continuing: &state, recorder: &part, computeLogits: true)
                for l in part.layers { chunkDeltas[l.layer] += l.delta }
            }
            #expect(state.position == tokens.count)
            #expect(relativeError(chunkLogits, wholeLogits) <= 1e-5, "\(fixture) reference=\(reference)")
            for l in whole.layers { #expect(relativeError(chunkDeltas[l.layer], l.delta) <= 1e-5) }
        }
    }
}
