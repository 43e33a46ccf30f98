import Foundation
import Testing
@testable import LongMamba

@Suite struct ScaleTests {
    func temporaryDirectory(_ name: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("longmamba-scale-\(name)-\(ProcessInfo.processInfo.processIdentifier)")
        try? FileManager.default.removeItem(at: url)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// Published-style bf16 shards: index + shards that load, in bf16, with the requested layers,
    /// and whose bf16 values convert exactly to f32 (so Δ equals the f32 computation on the same
    /// rounded weights).
    @Test func syntheticBF16ShardsLoadAsPublishedCheckpointsDo() throws {
        let dir = try temporaryDirectory("shards")
        defer { try? FileManager.default.removeItem(at: dir) }
        try SyntheticCheckpoint.write(.mamba130m, to: dir.path, dtype: .bf16, layers: 1, shardBytes: 30_000_000)
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        #expect(files.contains("model.safetensors.index.json"))
        #expect(files.filter { $0.hasSuffix(".safetensors") }.count >= 2, "\(files)")
        let checkpoint = try ModelCheckpoint(directory: dir.path)
        #expect(checkpoint.config.layerCount == 1)
        #expect(checkpoint.weightDTypes == [.bf16])
        let inProj = try checkpoint.floats("backbone.layers.0.mixer.in_proj.weight")
        #expect(inProj.allSatisfy { $0.bitPattern & 0xFFFF == 0 })   // exactly representable bf16 values
        var recorder = CollectingRecorder()
        try MambaModel(checkpoint: checkpoint).forward(tokens: Array(0..<16), recorder: &recorder)
        #expect(recorder.layers.count == 1 && recorder.layers[0].delta.allSatisfy { $0.isFinite && $0 > 0 })
    }

    @Test func weightMatricesInDifferentDTypesAreRefusedNamingBothShards() throws {
        let dir = try temporaryDirectory("mixed")
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = URL(fileURLWithPath: ModelFixtures.model("mamba-tiny-hf-sharded"))
        for f in try FileManager.default.contentsOfDirectory(atPath: source.path) {
            try FileManager.default.copyItem(at: source.appendingPathComponent(f), to: dir.appendingPathComponent(f))
        }
        // Re-export shard 3 in bf16, as if it came from another export.
        let shard = dir.appendingPathComponent("model-00003-of-00005.safetensors").path
        let file = try SafetensorsFile(path: shard)
        var writer = SafetensorsWriter()
        var converted: [String] = []
        for t in file.tensors {
            let values = try file.floats(t.name)
            if t.shape.count == 2 && !t.name.contains("conv1d") {
                writer.add(t.name, dtype: .bf16, shape: t.shape, data: values.map { HalfConversion.floatToBF16($0) }.withUnsafeBytes { Data($0) })
                converted.append(t.name)
            } else {
                writer.add(t.name, shape: t.shape, floats: values)
            }
        }
        try #require(!converted.isEmpty)
        try writer.write(to: shard)
        do {
            _ = try ModelCheckpoint(directory: dir.path)
            Issue.record("a checkpoint with f32 and bf16 matrices was accepted")
        } catch let error as CheckpointError {
            guard case let .mixedDTypes(path, tensor, _, otherPath, _, _) = error else { Issue.record("\(error)"); return }
            #expect([path, otherPath].contains(shard), "\(error)")
            #expect(converted.contains(tensor) || "\(error)".contains("BF16"), "\(error)")
            #expect("\(error)".contains("F32") && "\(error)".contains("BF16"))
        }
    }

    /// The estimate that refuses a job before it starts: a 7B shape fits this 24 GiB machine only
    /// with weights converted per layer, and the estimate follows the measured peaks.
    @Test func memoryEstimateSeparatesResidentFromPerLayerWeights() throws {
        let config = try ModelConfig.parse(try JSONSerialization.data(withJSONObject: ModelShape.falconMamba7b.configJSON), path: "falcon-mamba-7b")
        let perLayer = MemoryEstimate.recordingBytes(config: config, tokens: 2048, residentWeights: false)
        let resident = MemoryEstimate.recordingBytes(config: config, tokens: 2048, residentWeights: true)
        // 7.3 B parameters in f32 alone are 27 GiB; one layer's are 0.4 GiB.
        #expect(resident > 27 << 30)
        #expect(perLayer < 4 << 30 && perLayer > 1 << 30)
        #expect(MemoryEstimate.recordingBytes(config: config, tokens: 8192, residentWeights: false) > perLayer)
    }
}
