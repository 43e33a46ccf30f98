import ArgumentParser
import Foundation
import LongMamba

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Prefill throughput of a model next to this machine's sgemm speed, measured in the same run.")

    @Option(help: "Model directory.")
    var model: String?
    @Option(help: "Instead of --model: a random-weight checkpoint of a published shape (\(ModelShape.allCases.map(\.rawValue).joined(separator: ", "))).")
    var shape: String?
    @Option(help: "Weights dtype of the --shape checkpoint: f32, bf16 or f16 (default: as published: bf16 for the 7B shapes, else f32).")
    var dtype: String?
    @Option(help: "Keep only the first N layers of the --shape checkpoint (quick runs of big shapes).")
    var layers: Int?
    @Option(name: .customLong("checkpoint-dir"), help: "Where the --shape checkpoint is written (default: a folder in the temporary directory, reused).")
    var checkpointDirectory: String?
    @Option(name: .customLong("resident-weights"), help: "Keep every layer's f32 weights after the warm-up: auto (when they take ≤ 4 GiB), always or never (half-precision weights are then converted on every pass, as a big model's are).")
    var residentWeights: ResidentWeights = .auto
    @Option(name: [.customLong("length"), .customLong("tokens")], help: "Prefill length in tokens, k = ×1000 (--tokens: the old spelling).")
    var length: TokenCount = TokenCount(2048)
    var tokens: Int { length.value }
    @Option(help: "Timed repetitions (best is reported).")
    var repeats: Int = 3
    @Flag(inversion: .prefixedNo, help: "Also time calibrate's recording (forward + sort + encode of Δ), inline and pipelined, against the prefill.")
    var recording = true
    @Option(help: "Threads for matrix products and the scan.")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    func run() throws {
        BLASThreads.set(threads)
        let directory: String
        if let model {
            directory = model
        } else if let shape {
            guard let s = ModelShape(rawValue: shape) else { throw ValidationError("unknown shape '\(shape)' (known: \(ModelShape.allCases.map(\.rawValue).joined(separator: ", ")))") }
            let type = try dtype.map { name -> DType in
                guard let t = ["f32": DType.f32, "bf16": .bf16, "f16": .f16][name.lowercased()] else { throw ValidationError("--dtype must be f32, bf16 or f16") }
                return t
            } ?? s.publishedDType
            if let layers, layers < 1 { throw ValidationError("--layers must be at least 1") }
            let name = "longmamba-bench-\(shape)-\(type.rawValue.lowercased())" + (layers.map { "-L\($0)" } ?? "")
            directory = checkpointDirectory ?? FileManager.default.temporaryDirectory.appendingPathComponent(name).path
            if !FileManager.default.fileExists(atPath: directory + "/config.json") {
                FileHandle.standardError.write(Data("writing random-weight \(shape) checkpoint (\(type.rawValue)\(layers.map { ", \($0) layers" } ?? "")) to \(directory)\n".utf8))
                let start = Date()
                try SyntheticCheckpoint.write(s, to: directory, dtype: type, layers: layers)
                FileHandle.standardError.write(Data(String(format: "written in %.1f s\n", Date().timeIntervalSince(start)).utf8))
            }
        } else {
            throw ValidationError("give --model DIR or --shape NAME")
        }
        let runner = MambaModel(checkpoint: try ModelCheckpoint(directory: directory), keepWeightsResident: residentWeights.choice)
        let r = try PrefillBenchmark.run(model: runner, tokens: tokens, repeats: repeats)
        let c = runner.config
        print("model            \(directory) (\(c.architecture.rawValue), d_model \(c.dModel), \(c.layerCount) layers, \(c.channelCount) channels/layer, weights \(runner.checkpoint.weightDTypes.map(\.rawValue).joined(separator: "+")))")
        if let a = c.sharedBlocks {
            print("shared blocks    \(a.blockCount) (attention \(a.attentionHeads)×\(a.attentionHeadDim), MLP \(a.mlpWidth), adapters rank \(a.adapterRank)) before layers \(a.hybridLayers); q·kᵀ and P·v are not in the FLOP count")
        }
        print("vector units     \(VectorUnits.current().summary)")
        print("threads          \(threads); weights \(runner.keepWeightsResident ? "kept in f32 after the warm-up" : "converted (or mapped, f32) on every pass")")
        print(String(format: "prefill          %d tokens: best %.3f s of %@", r.tokens, r.bestSeconds, r.seconds.map { String(format: "%.3f", $0) }.joined(separator: ", ")))
        print(String(format: "throughput       %.1f tokens/s", r.tokensPerSecond))
        print(String(format: "matmul FLOPs     %.1f MFLOP/token (2 × %.1fM MACs)", r.matmulFlopsPerToken / 1e6, r.matmulFlopsPerToken / 2e6))
        print(String(format: "achieved         %.1f GFLOP/s in matrix products over the whole pass", r.achievedGFLOPS))
        print(String(format: "sgemm, same run  %.1f GFLOP/s on the model's shapes; %.1f GFLOP/s on 2048×768·768×3072", r.sgemmModelShapesGFLOPS, r.sgemmReferenceGFLOPS))
        print(String(format: "roofline         %.0f tokens/s at the sgemm rate → %.0f%% of roofline", r.rooflineTokensPerSecond, 100 * r.tokensPerSecond / r.rooflineTokensPerSecond))
        if recording {
            let rec = try RecordingBenchmark.run(model: runner, tokens: tokens, repeats: repeats)
            let tps = { (seconds: Double) in Double(tokens) / seconds }
            print(String(format: "recording        %@: pipelined %.1f tokens/s = %.0f%% of prefill; inline %.1f tokens/s = %.0f%%",
                         rec.representation, tps(rec.pipelinedSeconds), 100 * tps(rec.pipelinedSeconds) / r.tokensPerSecond,
                         tps(rec.inlineSeconds), 100 * tps(rec.inlineSeconds) / r.tokensPerSecond))
            print(String(format: "recording stages one thread, per Δ value: transpose + sort %.1f ns, encode %.1f ns (the prefill takes %.1f ns of wall time per value)",
                         rec.sortNanosecondsPerValue, rec.encodeNanosecondsPerValue, r.bestSeconds * 1e9 / Double(tokens * c.channelCount * c.layerCount)))
        }
        let estimate = MemoryEstimate.recordingBytes(config: c, tokens: tokens, residentWeights: runner.keepWeightsResident)
        print(String(format: "peak memory      %.0f MiB (max RSS, with the mapped checkpoint pages); calibrate's estimate for recording %d tokens beyond the mapped checkpoint: %.0f MiB", PeakMemory.megabytes, tokens, Double(estimate) / 1048576))
    }
}
