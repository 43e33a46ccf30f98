import Foundation
import Testing
@testable import LongMamba
import LongMambaKernels

/// The Zamba2 fixtures scripts/make_zamba2_golden.py writes (Fixtures/models/zamba2-*, Fixtures/golden/zamba2-*).
enum Zamba2Fixtures {
    static let configs = ["one-block", "two-blocks-gqa", "two-blocks-adapters"]
    /// The schedule each configuration was built with (hybrid layer indices), as transformers reports it.
    static let hybridLayers = ["one-block": [1, 4], "two-blocks-gqa": [0, 2, 3, 5], "two-blocks-adapters": [1, 2, 4]]
}

/// Copies a fixture model into a temporary directory so a test can change it.
private func scratchCopy(of fixture: String) throws -> URL {
    let dst = FileManager.default.temporaryDirectory.appendingPathComponent("lm-zamba2-\(UUID().uuidString)")
    try FileManager.default.copyItem(at: URL(fileURLWithPath: ModelFixtures.model(fixture)), to: dst)
    return dst
}

/// Rewrites the copy's config.json through `edit`.
private func editConfig(_ dir: URL, _ edit: (inout [String: Any]) -> Void) throws {
    let path = dir.appendingPathComponent("config.json")
    var json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: path)) as? [String: Any])
    edit(&json)
    try JSONSerialization.data(withJSONObject: json).write(to: path)
}

/// Drops tensors from the copy's model.safetensors.
private func dropTensors(_ dir: URL, _ drop: (String) -> Bool) throws {
    let path = dir.appendingPathComponent("model.safetensors")
    let file = try SafetensorsFile(path: path.path)
    var writer = SafetensorsWriter(metadata: file.metadata)
    for t in file.tensors where !drop(t.name) { writer.add(t.name, dtype: t.dtype, shape: t.shape, data: Data(file.bytes(of: t))) }
    try writer.serialized().write(to: path)
}

@Suite struct Zamba2ParityTests {
    @Test(arguments: Zamba2Fixtures.configs)
    func deltaOfEveryMambaLayerAndLogitsMatchTransformers(config: String) throws {
        let golden = try ModelFixtures.goldenFile("zamba2-\(config)-f32")
        let tokens = try golden.integers("tokens")
        let model = try MambaModel(directory: ModelFixtures.model("zamba2-\(config)"))
        #expect(model.config.architecture == .zamba2)
        #expect(model.config.sharedBlocks?.hybridLayers == Zamba2Fixtures.hybridLayers[config])
        for reference in [false, true] {
            model.useReferenceScan = reference
            var recorder = CollectingRecorder()
            let logits = try model.forward(tokens: tokens, recorder: &recorder, computeLogits: true)
            // One Δ per layer, hybrid layers included, under the model's layer index.
            #expect(recorder.layers.map(\.layer) == Array(0..<model.config.layerCount))
            for layer in recorder.layers {
                let error = relativeError(layer.delta, try golden.floats("layer.\(layer.layer).delta"))
                #expect(error <= 1e-4, "\(config) layer \(layer.layer) Δ relative error \(error)")
                #expect(layer.channels == model.config.headCount)
                #expect(relativeError(layer.A, try golden.floats("layer.\(layer.layer).A")) <= 1e-6)
            }
            let error = relativeError(logits, try golden.floats("logits"))
            #expect(error <= 1e-4, "\(config) logits relative error \(error) (reference kernels: \(reference))")
            print("zamba2 parity \(config) reference=\(reference): logits \(error), Δ max \(recorder.layers.map { relativeError($0.delta, (try? golden.floats("layer.\($0.layer).delta")) ?? []) }.max() ?? -1)")
        }
    }

    @Test(arguments: [("bf16", DType.bf16), ("f16", DType.f16)])
    func halfPrecisionCheckpointMatchesFp32OnTheSameRoundedWeights(precision: String, dtype: DType) throws {
        let golden = try ModelFixtures.goldenFile("zamba2-one-block-\(precision)")
        let tokens = try golden.integers("tokens")
        let model = try MambaModel(directory: ModelFixtures.model("zamba2-one-block-\(precision)"))
        #expect(try model.checkpoint.info("backbone.embedding.weight").dtype == dtype)
        var recorder = CollectingRecorder()
        let logits = try model.forward(tokens: tokens, recorder: &recorder, computeLogits: true)
        for layer in recorder.layers {
            let error = relativeError(layer.delta, try golden.floats("layer.\(layer.layer).delta"))
            #expect(error <= 1e-4, "\(precision) layer \(layer.layer) Δ relative error \(error)")
        }
        let error = relativeError(logits, try golden.floats("logits"))
        #expect(error <= 1e-4, "\(precision) logits relative error \(error)")
        // The rounding is real: the f32 model's logits differ from the rounded model's.
        #expect(relativeError(try ModelFixtures.goldenFile("zamba2-one-block-f32").floats("logits"), try golden.floats("logits")) > 1e-4)
        print("zamba2 \(precision): logits \(error), Δ max \(recorder.layers.map { relativeError($0.delta, (try? golden.floats("layer.\($0.layer).delta")) ?? []) }.max() ?? -1)")
    }

    @Test(arguments: Zamba2Fixtures.configs)
    func chunksWithCarriedStateAndKeyValueCacheGiveTheSameDeltaAndLogits(config: String) throws {
        let tokens = try ModelFixtures.goldenFile("zamba2-\(config)-f32").integers("tokens")
        let model = try MambaModel(directory: ModelFixtures.model("zamba2-\(config)"))
        var whole = CollectingRecorder()
        let wholeLogits = try model.forward(tokens: tokens, recorder: &whole, computeLogits: true)
        var state = SequenceState(layerCount: model.config.layerCount)
        var chunkLogits: [Float] = []
        var chunkDeltas = [[Float]](repeating: [], count: model.config.layerCount)
        // Uneven chunks, single tokens (decode steps) and one shorter than the conv kernel.
        for range in [0..<2, 2..<3, 3..<17, 17..<18, 18..<40] {
            var part = CollectingRecorder()
            chunkLogits += try model.forward(tokens: Array(tokens[range]), continuing: &state, recorder: &part, computeLogits: true)
            for l in part.layers { chunkDeltas[l.layer] += l.delta }
        }
        #expect(state.position == tokens.count)
        let kv = try #require(model.config.sharedBlocks).keyValueHeads * (try #require(model.config.sharedBlocks)).attentionHeadDim
        for layer in try #require(model.config.sharedBlocks).hybridLayers {
            #expect(state.layers[layer].keys.count == tokens.count * kv, "layer \(layer) caches every token's key")
        }
        // f32 summation order only (sgemm over other row counts, attention over other key blocks);
        // a wrong position, cache or state gives errors of order 1e-1.
        #expect(relativeError(chunkLogits, wholeLogits) <= 5e-5, "\(config)")
        for l in whole.layers { #expect(relativeError(chunkDeltas[l.layer], l.delta) <= 5e-5, "\(config) layer \(l.layer)") }
    }

    @Test(arguments: Zamba2Fixtures.configs)
    func longMambaFilterInTheMambaLayersMatchesTransformersPatchedDelta(config: String) throws {
        let golden = try ModelFixtures.goldenFile("zamba2-\(config)-longmamba")
        let tokens = try golden.integers("tokens")
        let model = try MambaModel(directory: ModelFixtures.model("zamba2-\(config)"))
        let layers = model.config.layerCount
        let filter = try LongMambaFilter(
            deltaThresholds: try (0..<layers).map { try golden.floats("layer.\($0).threshold") },
            cumulativeDecays: try (0..<layers).map { try golden.floats("layer.\($0).cumulative_decay") },
            theta: Double(try golden.floats("theta")[0]))
        try filter.validate(for: model.config)
        let run = LongMambaFilterRun(filter: filter)
        var none = DiscardingRecorder()
        let logits = try model.forward(tokens: tokens, recorder: &none, computeLogits: true, deltaFilter: run.deltaFilter)
        let error = relativeError(logits, try golden.floats("logits"))
        #expect(error <= 1e-4, "\(config) filtered logits relative error \(error)")
        #expect(relativeError(try golden.floats("vanilla_logits"), try golden.floats("logits")) > 1e-3, "the filter must matter")
        for l in 0..<layers { #expect(Float(run.kept[l]) == (try golden.floats("layer.\(l).kept")[0]), "\(config) layer \(l)") }
        print("zamba2 filter parity \(config): logits \(error)")
    }

    @Test func blockedAttentionMatchesThePlainFormulaAcrossBlocksAndACache() {
        // 300 queries after 400 cached keys: several query and key blocks, GQA 4 → 2.
        let shape = AttentionShape(heads: 4, keyValueHeads: 2, headDim: 8)
        let past = 400, L = 300, T = past + L
        var rng = SplitMix64(seed: 7)
        let q = (0..<(L * 32)).map { _ in Float(rng.nextUnit() * 4 - 2) }
        let k = (0..<(T * 16)).map { _ in Float(rng.nextUnit() * 4 - 2) }
        let v = (0..<(T * 16)).map { _ in Float(rng.nextUnit() * 2 - 1) }
        var plain = [Float](repeating: 0, count: L * 32), blocked = plain
        var scratch = [Float](repeating: 0, count: CausalAttention.scratchCount(shape))
        CausalAttention.reference(q: q, k: k, v: v, length: L, past: past, shape: shape, scale: 0.5, into: &plain)
        CausalAttention.blocked(q: q, k: k, v: v, length: L, past: past, shape: shape, scale: 0.5, into: &blocked, scratch: &scratch)
        #expect(relativeError(blocked, plain) <= 1e-5)
        #expect(Set(plain).count > 100, "a real spread of outputs")
    }
}

@Suite struct Zamba2BadInputTests {
    @Test func scheduleThatDisagreesWithTheTensorsNamesTheLayerAndTensor() throws {
        let dir = try scratchCopy(of: "zamba2-one-block")
        defer { try? FileManager.default.removeItem(at: dir) }
        try editConfig(dir) { $0["layers_block_type"] = ["mamba", "mamba", "hybrid", "mamba", "hybrid"]; $0.removeValue(forKey: "hybrid_layer_ids") }
        let error = #expect(throws: CheckpointError.self) { try ModelCheckpoint(directory: dir.path) }
        guard case let .layerScheduleMismatch(path, tensor, layer, tensorsSayHybrid)? = error else {
            Issue.record("expected layerScheduleMismatch, got \(String(describing: error))"); return
        }
        #expect(path.hasSuffix("model.safetensors"))
        #expect(layer == 1 || layer == 2)
        #expect(tensor.hasPrefix("model.layers.\(layer)."))
        #expect(tensorsSayHybrid == (layer == 1))
        #expect(error?.description.contains("layer \(layer) has the tensors of a") == true)
    }

    @Test func scheduleLongerThanTheLayerCountIsRefused() throws {
        let text = #"{"model_type":"zamba2","hidden_size":16,"num_hidden_layers":2,"vocab_size":8,"n_mamba_heads":4,"layers_block_type":["mamba","hybrid","mamba"]}"#
        let error = #expect(throws: ConfigError.self) { try ModelConfig.parse(Data(text.utf8), path: "z/config.json") }
        #expect(error == .invalidLayerSchedule(path: "z/config.json", reason: "layers_block_type has 3 entries but num_hidden_layers is 2"))
        #expect(error?.description == "z/config.json: layer schedule: layers_block_type has 3 entries but num_hidden_layers is 2")
    }

    @Test func declaredAdaptersThatAreMissingAreNamed() throws {
        let dir = try scratchCopy(of: "zamba2-one-block")
        defer { try? FileManager.default.removeItem(at: dir) }
        try dropTensors(dir) { $0.contains("linear_q_adapter_list.1.") }
        let error = #expect(throws: CheckpointError.self) { try ModelCheckpoint(directory: dir.path) }
        #expect(error?.tensor == "model.layers.1.shared_transformer.self_attn.linear_q_adapter_list.1.0.weight")
        #expect(error?.description.contains("the config declares adapters") == true, "\(String(describing: error))")
        // Adapters present but not declared are unexpected tensors, named too.
        let other = try scratchCopy(of: "zamba2-one-block")
        defer { try? FileManager.default.removeItem(at: other) }
        try editConfig(other) { $0["use_shared_attention_adapter"] = false }
        let unexpected = #expect(throws: CheckpointError.self) { try ModelCheckpoint(directory: other.path) }
        #expect(unexpected?.tensor?.contains("_adapter_list.") == true, "\(String(describing: unexpected))")
    }

    @Test func oversizedWidthsAreRefusedNotTrapped() throws {
        let text = #"{"model_type":"zamba2","hidden_size":16777216,"mamba_expand":4,"num_hidden_layers":1,"vocab_size":8,"layers_block_type":["mamba"]}"#
        let error = #expect(throws: ConfigError.self) { try ModelConfig.parse(Data(text.utf8), path: "c.json") }
        #expect(error == .valueOutOfRange(path: "c.json", key: "mamba_expand × hidden_size", value: "67108864", limit: ModelConfig.maxDimension))
        let index = #"{"model_type":"zamba2","hidden_size":16,"num_hidden_layers":2,"vocab_size":8,"n_mamba_heads":4,"hybrid_layer_ids":[1e300]}"#
        let schedule = #expect(throws: ConfigError.self) { try ModelConfig.parse(Data(index.utf8), path: "c.json") }
        #expect(schedule?.description.hasPrefix("c.json: layer schedule: hybrid_layer_ids entry") == true, "\(String(describing: schedule))")
    }

    @Test func headCountsThatDoNotDivideAreRefused() throws {
        let base = #"{"model_type":"zamba2","hidden_size":16,"num_hidden_layers":2,"vocab_size":8,"layers_block_type":["mamba","hybrid"],"#
        let mamba = #expect(throws: ConfigError.self) { try ModelConfig.parse(Data((base + #""n_mamba_heads":5}"#).utf8), path: "c.json") }
        #expect(mamba?.description == "c.json: n_mamba_heads: 5 Mamba heads into d_inner 32 = mamba_expand × hidden_size does not divide evenly")
        let attention = #expect(throws: ConfigError.self) { try ModelConfig.parse(Data((base + #""n_mamba_heads":4,"num_attention_heads":3}"#).utf8), path: "c.json") }
        #expect(attention?.description == "c.json: num_attention_heads: 3 attention heads into the attention width 32 = 2 × hidden_size does not divide evenly")
        let kv = #expect(throws: ConfigError.self) { try ModelConfig.parse(Data((base + #""n_mamba_heads":4,"num_attention_heads":4,"num_key_value_heads":3}"#).utf8), path: "c.json") }
        #expect(kv == .notDivisible(path: "c.json", key: "num_key_value_heads", what: "3 key/value heads into 4 attention heads"))
    }
}

/// calibrate → table → export → eval on a Zamba2 model (Fixtures/models/zamba2-tiny-calib: the
/// fixture tokenizer's vocabulary, max_position_embeddings 256, hybrid layers 1 and 3).
@Suite struct Zamba2PipelineTests {
    static let model = ModelFixtures.model("zamba2-tiny-calib")
    static let corpus = ModelFixtures.root.appendingPathComponent("Fixtures/corpus/fixture.jsonl.zst").path

    static func calibrate(_ model: String = Self.model) throws -> (db: String, result: CalibrationResult) {
        let db = FileManager.default.temporaryDirectory.appendingPathComponent("lm-z2-\(UUID().uuidString).sqlite").path
        var o = CalibrationOptions(modelDirectory: model, corpusPaths: [corpus], databasePath: db)
        o.sampleCount = 2; o.interval = 256; o.maxLength = 2048
        return (db, try CalibrationJob(options: o).run())
    }

    @Test func theRealZamba2ConfigDefaultsToTheFourThousandTokenTrainingLengthAndFivePercent() throws {
        // Zyphra/Zamba2-1.2B's shape (its published config.json), as transformers writes its config.
        let text = #"{"model_type":"zamba2","hidden_size":2048,"num_hidden_layers":38,"vocab_size":32000,"mamba_d_state":128,"n_mamba_heads":64,"num_attention_heads":32,"num_mem_blocks":1,"adapter_rank":128,"use_shared_attention_adapter":true,"use_mem_rope":true,"max_position_embeddings":4096,"hybrid_layer_ids":[5,11,17,23,29,35]}"#
        let c = try ModelConfig.parse(Data(text.utf8), path: "config.json")
        #expect(c.trainingLength == 4096)
        #expect(CalibrationJob.defaultClampFraction(c.architecture) == 0.05)
        #expect(c.layerCount == 38 && c.channelCount == 64 && c.headDim == 64)
        #expect(c.sharedBlocks?.hybridLayers == [5, 11, 17, 23, 29, 35])
        #expect(c.sharedBlocks?.attentionHeadDim == 128 && c.sharedBlocks?.mlpWidth == 8192)
        #expect(c.dtLimitLower == 0.001)
    }

    @Test func calibrateRecordsEveryMambaLayerWithTheConfigsLengthAndExportsSaySo() throws {
        let (db, result) = try Self.calibrate()
        #expect(result.complete && result.samplesRecorded == 2)
        let store = try CalibrationStore(path: db, readOnly: true)
        let table = try store.table(result.tableIDs[0])
        #expect(table.parameters.trainingLength == 256)        // max_position_embeddings
        #expect(table.parameters.clampFraction == 0.05)        // Zamba2 default, as Mamba-2
        #expect(table.architecture == "zamba2")
        let lookup = try TableLookup(store: store).lookup(table: result.tableIDs[0], length: 1024)
        #expect(lookup.layers.count == 4)                       // layers 0…3, the hybrid layers 1 and 3 included
        #expect(lookup.layers.allSatisfy { $0.deltaThreshold.count == 4 })
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lm-z2-\(UUID().uuidString).safetensors").path
        try TableExport.export(store: store, table: result.tableIDs[0], format: .safetensors, to: path)
        let exported = try SafetensorsFile(path: path)
        #expect(exported.metadata["hybrid_layers"] == "[1, 3]")
        #expect(exported.metadata["mamba_layers"] == "0-3")
        #expect(exported.metadata["layer_index"]?.hasPrefix("model layer index") == true)
        #expect(exported.info("layer.3.threshold") != nil && exported.info("layer.4.threshold") == nil)
    }

    @Test func evalPerplexityAndPasskeyRunOnZamba2WithTheFilterAboveTheStart() throws {
        let (db, result) = try Self.calibrate()
        let tokens = FileManager.default.temporaryDirectory.appendingPathComponent("lm-z2-\(UUID().uuidString).txt").path
        try (0..<1200).map { String(($0 * 37 + 11) % 1500) }.joined(separator: " ").write(toFile: tokens, atomically: true, encoding: .utf8)
        var options = EvaluationOptions(modelDirectory: Self.model, text: .tokens(path: tokens), lengths: [300, 600])
        options.table = .stored(database: db, table: result.tableIDs[0])
        options.theta = 0.01
        options.chunk = 256                                     // long windows in chunks: the KV cache carries over
        let perplexity = try EvaluationJob(options: options).run()
        #expect(perplexity.filterFromLength == 384)
        let short = try #require(perplexity.points.first { $0.length == 300 }), long = try #require(perplexity.points.first { $0.length == 600 })
        #expect(short.longMambaPerplexity == short.vanillaPerplexity && short.tabulatedLength == nil)
        #expect(long.tabulatedLength == 512 && (long.keptShare ?? 1) < 1)
        #expect(long.vanillaPerplexity.isFinite && long.vanillaPerplexity > 1)
        #expect(long.longMambaPerplexity != long.vanillaPerplexity)
        options.text = nil
        options.depths = [0, 1]
        options.trials = 1
        let passkey = try EvaluationJob(options: options).runPasskey()
        #expect(passkey.points.map(\.length) == [300, 300, 600, 600])
        for p in passkey.points where p.length == 600 { #expect(p.tabulatedLength == 512 && (p.keptShare ?? 1) < 1) }
    }

    @Test func aMamba2TableIsRefusedOnTheZamba2ModelAndForcedItNamesTheLayerCounts() throws {
        let (db, result) = try Self.calibrate(ModelFixtures.model("mamba2-tiny-calib"))
        var options = EvaluationOptions(modelDirectory: Self.model, text: nil, lengths: [600])
        options.table = .stored(database: db, table: result.tableIDs[0])
        options.depths = [0]; options.trials = 1
        let refused = #expect(throws: EvaluationError.self) { try EvaluationJob(options: options).runPasskey() }
        #expect(refused?.description.contains("not on \(Self.model)") == true, "\(String(describing: refused))")
        options.force = true
        let forced = #expect(throws: LongMambaFilterError.self) { try EvaluationJob(options: options).runPasskey() }
        #expect(forced == .modelLayerMismatch(tableLayers: 2, modelLayers: 4))
    }
}

@Suite struct Zamba2ShapeTests {
    @Test func theZamba2BenchShapeHasTheRealDimensionsAndItsTensorNamesRoundTrip() throws {
        let data = try JSONSerialization.data(withJSONObject: ModelShape.zamba2_1_2b.configJSON)
        let c = try ModelConfig.parse(data, path: "zamba2-1.2b")
        let shared = try #require(c.sharedBlocks)
        #expect(c.layerCount == 38 && c.dModel == 2048 && c.headCount == 64 && c.headDim == 64 && c.dState == 128)
        #expect(shared.hybridLayers == [5, 11, 17, 23, 29, 35] && shared.blockCount == 1 && shared.adapterRank == 128 && shared.attentionAdapters)
        let shapes = ModelCheckpoint.expectedShapes(c)
        let parameters = shapes.values.reduce(0) { $0 + $1.reduce(1, *) }
        #expect(parameters > 1_150_000_000 && parameters < 1_300_000_000, "\(parameters) parameters")
        // What the synthetic writer names a tensor, sanitize maps back to the same canonical name.
        for name in shapes.keys {
            let stored = zamba2Name(name, shared)
            #expect(try ModelCheckpoint.zamba2CanonicalName(stored, config: c, path: "model.safetensors") == name, "\(name) → \(stored)")
        }
        #expect(zamba2Name("backbone.layers.5.mixer.A_log", shared) == "model.layers.5.mamba_decoder.mamba.A_log")
        #expect(zamba2Name("backbone.layers.4.norm.weight", shared) == "model.layers.4.input_layernorm.weight")
        // The benchmark counts the shared block's products on the hybrid layers only.
        let perToken = PrefillBenchmark.matmulFlopsPerToken(c)
        let mamba = 38.0 * 2 * Double((2 * 4096 + 256 + 64) * 2048 + 2048 * 4096)
        let sharedMACs = 3 * 4096 * 4096 + 2048 * 4096 + 16384 * 2048 + 2048 * 8192 + 2048 * 2048   // q k v, o, gate_up, down, linear
            + 128 * 2048 + 16384 * 128 + 3 * (128 * 4096 + 4096 * 128)                                 // the adapters
        #expect(perToken == mamba + 6 * 2 * Double(sharedMACs))
    }
}

@Suite struct Zamba2RecordingTests {
    @Test func recordingsOfZamba2SayHowLayersAreIndexed() throws {
        let model = try MambaModel(directory: ModelFixtures.model("zamba2-two-blocks-gqa"))
        let tokens = try ModelFixtures.goldenFile("zamba2-two-blocks-gqa-f32").integers("tokens")
        var recorder = CollectingRecorder()
        _ = try model.forward(tokens: tokens, recorder: &recorder)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lm-z2rec-\(UUID().uuidString).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try RecordingFile.write(layers: recorder.layers, logits: nil, tokens: tokens, checkpoint: model.checkpoint, to: path)
        let file = try SafetensorsFile(path: path)
        #expect(file.metadata["architecture"] == "zamba2")
        #expect(file.metadata["hybrid_layers"] == "[0, 2, 3, 5]")
        #expect(file.metadata["layers"] == "6" && file.metadata["channels"] == "4")
        #expect(file.metadata["dt_limit"] == "[0.001, inf]")
        // Layer 0 is hybrid and still has its Mamba layer's Δ, as transformers computes it.
        let golden = try ModelFixtures.goldenFile("zamba2-two-blocks-gqa-f32")
        #expect(relativeError(try file.floats("layer.0.delta"), try golden.floats("layer.0.delta")) <= 1e-4)
    }
}

@Suite struct Zamba2CommandTests {
    @Test func longmambaRecordOnAZamba2CheckpointWritesTransformersDeltaAndLogits() throws {
        let golden = try ModelFixtures.goldenFile("zamba2-two-blocks-adapters-f32")
        let dir = Tool.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tokens = try golden.integers("tokens")
        try (tokens.map(String.init).joined(separator: " ") + "\n").write(toFile: dir + "/t.tokens", atomically: true, encoding: .utf8)
        let (status, log) = try Tool.run(["record", "--model", ModelFixtures.model("zamba2-two-blocks-adapters"), "--tokens", dir + "/t.tokens",
                                          "--out", dir + "/r.safetensors", "--logits"])
        #expect(status == 0, "\(log)")
        #expect(log.contains("recorded 5 layers × 40 tokens × 4 channels (zamba2)"), "\(log)")
        let file = try SafetensorsFile(path: dir + "/r.safetensors")
        for i in 0..<5 { #expect(relativeError(try file.floats("layer.\(i).delta"), try golden.floats("layer.\(i).delta")) <= 1e-4) }
        #expect(relativeError(try file.floats("logits"), try golden.floats("logits")) <= 1e-4)
        #expect(file.metadata["hybrid_layers"] == "[1, 2, 4]")
    }
}
