import Foundation
import Testing
@testable import LongMamba

/// Copies a fixture model into a temporary directory so a test can damage it.
private func scratchCopy(of fixture: String) throws -> URL {
    let dst = FileManager.default.temporaryDirectory.appendingPathComponent("lm-ckpt-\(UUID().uuidString)")
    try FileManager.default.copyItem(at: URL(fileURLWithPath: ModelFixtures.model(fixture)), to: dst)
    return dst
}

/// Rewrites a safetensors file through `edit` (tensor name → floats, or nil to drop).
private func rewrite(_ path: URL, rename: [String: String] = [:], drop: Set<String> = [], add: [(String, [Int], [Float])] = []) throws {
    let file = try SafetensorsFile(path: path.path)
    var writer = SafetensorsWriter(metadata: file.metadata)
    for t in file.tensors where !drop.contains(t.name) {
        writer.add(rename[t.name] ?? t.name, dtype: t.dtype, shape: t.shape, data: Data(file.bytes(of: t)))
    }
    for (name, shape, values) in add { writer.add(name, shape: shape, floats: values) }
    let data = try writer.serialized()
    try data.write(to: path)
}

@Suite struct CheckpointLoadingTests {
    @Test func readsBothLayoutsOfTheSameModelAlike() throws {
        let hf = try ModelCheckpoint(directory: ModelFixtures.model("mamba-tiny-hf"))
        let ss = try ModelCheckpoint(directory: ModelFixtures.model("mamba-tiny-ss"))
        #expect(hf.config.layout == .transformers)
        #expect(ss.config.layout == .stateSpaces)
        // state-spaces pads vocab 500 to a multiple of 8; transformers stores the padded 504.
        #expect(ss.config.vocabSize == 500 && ss.config.paddedVocabSize == 504)
        #expect(hf.config.paddedVocabSize == 504)
        #expect(hf.config.dtRank == ss.config.dtRank)
        #expect(try hf.floats("backbone.layers.1.mixer.A_log") == ss.floats("backbone.layers.1.mixer.A_log"))
        #expect(hf.fingerprint() == ss.fingerprint())
    }

    @Test func parsesTransformersNonFiniteFloatsInConfig() throws {
        let bare = #"{"model_type":"mamba2","hidden_size":64,"num_hidden_layers":1,"vocab_size":16,"head_dim":16,"num_heads":8,"n_groups":1,"state_size":16,"time_step_limit":[0.0, Infinity]}"#
        let encoded = #"{"model_type":"mamba2","hidden_size":64,"num_hidden_layers":1,"vocab_size":16,"head_dim":16,"num_heads":8,"n_groups":1,"state_size":16,"time_step_limit":[0.0,{"__float__":"Infinity"}]}"#
        for text in [bare, encoded] {
            let c = try ModelConfig.parse(Data(text.utf8), path: "config.json")
            #expect(c.dtLimitLower == 0 && c.dtLimitUpper == .infinity)
        }
        let limited = #"{"model_type":"mamba2","hidden_size":64,"num_hidden_layers":1,"vocab_size":16,"head_dim":16,"num_heads":8,"state_size":16,"time_step_limit":[0.001, 0.1]}"#
        #expect(try ModelConfig.parse(Data(limited.utf8), path: "c").dtLimitUpper == Float(0.1))
    }

    @Test func refusesUnknownArchitecturesAndBadConfigs() {
        let cases: [(String, ConfigError, String)] = [
            (#"{"model_type":"llama","hidden_size":64}"#,
             .unsupportedModelType(path: "config.json", modelType: "llama"),
             "unsupported model_type 'llama' (supported: mamba, mamba2, falcon_mamba, zamba2, or a state-spaces config)"),
            (#"{"model_type":"mamba","num_hidden_layers":2,"vocab_size":10}"#,
             .missingValue(path: "config.json", key: "hidden_size/d_model"),
             "missing or non-positive hidden_size/d_model"),
            (#"{"d_model":64,"n_layer":2,"vocab_size":10,"ssm_cfg":{"layer":"Mamba3"}}"#,
             .unsupportedLayer(path: "config.json", layer: "Mamba3"),
             "unsupported ssm_cfg.layer 'Mamba3' (supported: Mamba1, Mamba2)"),
            (#"{"model_type":"mamba2","hidden_size":64,"num_hidden_layers":1,"vocab_size":16,"head_dim":48,"num_heads":8}"#,
             .headShapeMismatch(path: "config.json", heads: 8, headDim: 48, dInner: 128),
             "num_heads 8 × head_dim 48 ≠ d_inner 128"),
        ]
        for (text, expected, reason) in cases {
            let error = #expect(throws: ConfigError.self) { try ModelConfig.parse(Data(text.utf8), path: "config.json") }
            #expect(error?.path == "config.json")
            #expect(error == expected, "\(text)")
            #expect(error?.description == "config.json: \(reason)", "\(text)")
        }
        let notJSON = #expect(throws: ConfigError.self) { try ModelConfig.parse(Data("{not json".utf8), path: "config.json") }
        #expect(notJSON?.path == "config.json")
        if case .notJSON(let path, let reason)? = notJSON {
            #expect(path == "config.json" && !reason.isEmpty)
        } else {
            Issue.record("expected .notJSON, got \(String(describing: notJSON))")
        }
        #expect(notJSON?.description.hasPrefix("config.json: not valid JSON: ") == true, "\(String(describing: notJSON))")
    }

    @Test func refusesMissingTensorsNamingThem() throws {
        let dir = try scratchCopy(of: "mamba2-tiny-hf")
        try rewrite(dir.appendingPathComponent("model.safetensors"), drop: ["backbone.layers.1.mixer.dt_bias"])
        do {
            _ = try ModelCheckpoint(directory: dir.path)
            Issue.record("expected an error")
        } catch let error as CheckpointError {
            #expect(error == .missingTensor(directory: dir.path, tensor: "backbone.layers.1.mixer.dt_bias"))
            #expect(error.description == "\(dir.path): tensor 'backbone.layers.1.mixer.dt_bias': missing from the checkpoint")
        }
    }

    @Test func refusesUnexpectedTensors() throws {
        let dir = try scratchCopy(of: "mamba-tiny-hf")
        try rewrite(dir.appendingPathComponent("model.safetensors"), add: [("backbone.layers.2.mixer.D", [128], [Float](repeating: 1, count: 128))])
        let error = #expect(throws: CheckpointError.self) { try ModelCheckpoint(directory: dir.path) }
        let weights = dir.appendingPathComponent("model.safetensors").path
        #expect(error == .unexpectedTensor(path: weights, tensor: "backbone.layers.2.mixer.D", architecture: .mamba, layers: 2, more: 0))
        #expect(error?.path == weights)
        #expect(error?.tensor == "backbone.layers.2.mixer.D")
        #expect(error?.description == "\(weights): tensor 'backbone.layers.2.mixer.D': unexpected tensor for a mamba model with 2 layers")
    }

    @Test func refusesShapesThatDisagreeWithTheConfig() throws {
        let dir = try scratchCopy(of: "mamba-tiny-hf")
        let configURL = dir.appendingPathComponent("config.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as! [String: Any]
        json["state_size"] = 8
        try JSONSerialization.data(withJSONObject: json).write(to: configURL)
        do {
            _ = try ModelCheckpoint(directory: dir.path)
            Issue.record("expected an error")
        } catch let error as CheckpointError {
            // A_log is the first tensor (in name order) whose shape depends on d_state.
            let dInner = try ModelConfig.parse(Data(contentsOf: URL(fileURLWithPath: ModelFixtures.model("mamba-tiny-hf") + "/config.json")), path: "c").dInner
            let weights = dir.appendingPathComponent("model.safetensors").path
            #expect(error == .shapeMismatch(path: weights, tensor: "backbone.layers.0.mixer.A_log", shape: [dInner, 16], expected: [dInner, 8]), "\(error)")
            #expect(error.description == "\(weights): tensor 'backbone.layers.0.mixer.A_log': shape [\(dInner), 16] but the config implies [\(dInner), 8]")
        }
    }

    @Test func refusesATruncatedWeightFile() throws {
        let dir = try scratchCopy(of: "mamba-tiny-hf")
        let weights = dir.appendingPathComponent("model.safetensors")
        let data = try Data(contentsOf: weights)
        try data.prefix(data.count / 2).write(to: weights)
        let error = #expect(throws: SafetensorsError.self) { try ModelCheckpoint(directory: dir.path) }
        #expect(error?.path == weights.path)
        // The header survives the cut; a tensor whose bytes lay in the lost half is named.
        let headerLength = data.prefix(8).withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        let dataArea = data.count / 2 - 8 - headerLength
        guard case .dataPastEnd(let path, let tensor, _, let end, let area)? = error else {
            Issue.record("expected .dataPastEnd, got \(String(describing: error))")
            return
        }
        #expect(path == weights.path && area == dataArea && end > dataArea)
        #expect(error?.description.hasPrefix("\(weights.path): tensor '\(tensor)': data_offsets [") == true, "\(String(describing: error))")
        #expect(error?.description.hasSuffix("run past the end of the file (data area is \(dataArea) bytes; truncated?)") == true, "\(String(describing: error))")
        let original = try SafetensorsFile(path: ModelFixtures.model("mamba-tiny-hf") + "/model.safetensors")
        let lost = try #require(error?.tensor.flatMap { original.info($0) }, "\(String(describing: error))")
        #expect(lost.byteRange.upperBound > data.count / 2)
    }

    @Test func refusesADirectoryWithoutWeights() throws {
        let dir = try scratchCopy(of: "mamba-tiny-hf")
        try FileManager.default.removeItem(at: dir.appendingPathComponent("model.safetensors"))
        let error = #expect(throws: CheckpointError.self) { try ModelCheckpoint(directory: dir.path) }
        #expect(error == .noWeights(directory: dir.path))
        #expect(error?.path == dir.path)
        #expect(error?.tensor == nil)
        #expect(error?.hint?.contains("model.safetensors.index.json") == true)
        #expect(error?.description == "\(dir.path): no weights found (hint: expected model.safetensors, model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json)")
    }

    @Test func recordingFileCarriesDeltaAAndProvenance() throws {
        let model = try MambaModel(directory: ModelFixtures.model("mamba2-tiny-hf"))
        var recorder = CollectingRecorder()
        let tokens = [5, 6, 7, 8, 9]
        let logits = try model.forward(tokens: tokens, recorder: &recorder, computeLogits: true)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lm-rec-\(UUID().uuidString).safetensors").path
        try RecordingFile.write(layers: recorder.layers, logits: logits, tokens: tokens, checkpoint: model.checkpoint, to: path)
        let file = try SafetensorsFile(path: path)
        #expect(file.info("layer.0.delta")?.shape == [5, 8])
        #expect(file.info("layer.1.A")?.shape == [8])
        #expect(file.info("logits")?.shape == [5, 504])
        #expect(file.metadata["architecture"] == "mamba2")
        #expect(file.metadata["fingerprint"] == model.checkpoint.fingerprint())
        #expect(try file.floats("layer.1.delta") == recorder.layers[1].delta)
    }
}

@Suite struct WeightMappingTests {
    @Test func f32MatricesAreReadInPlaceAndHalfOnesConverted() throws {
        let f32 = try ModelCheckpoint(directory: ModelFixtures.model("mamba2-tiny-hf"))
        let bf16 = try ModelCheckpoint(directory: ModelFixtures.model("mamba2-tiny-hf-bf16"))
        let name = "backbone.layers.0.mixer.in_proj.weight"
        let mapped = try f32.matrix(name), converted = try bf16.matrix(name)
        #expect(mapped.isMapped)
        #expect(!converted.isMapped)
        #expect(mapped.withUnsafeBufferPointer { Array($0) } == (try f32.floats(name)))
        #expect(converted.withUnsafeBufferPointer { Array($0) } == (try bf16.floats(name)))
    }
}
