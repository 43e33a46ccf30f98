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
    @Option(help: "Prefill length.")
    var tokens: Int = 2048
    @Option(help: "Timed repetitions (best is reported).")
    var repeats: Int = 3
    @Option(help: "Threads for matrix products and the scan.")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    func run() throws {
        BLASThreads.set(threads)
        let directory: String
        if let model {
            directory = model
        } else if let shape {
            guard let s = ModelShape(rawValue: shape) else { throw ValidationError("unknown shape '\(shape)'") }
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("longmamba-bench-\(shape)").path
            if !FileManager.default.fileExists(atPath: directory + "/model.safetensors") {
                FileHandle.standardError.write(Data("writing random-weight \(shape) checkpoint to \(directory)\n".utf8))
                try SyntheticCheckpoint.write(s, to: directory)
            }
        } else {
            throw ValidationError("give --model DIR or --shape NAME")
        }
        let runner = try MambaModel(directory: directory)
        let r = try PrefillBenchmark.run(model: runner, tokens: tokens, repeats: repeats)
        let c = runner.config
        print("model            \(directory) (\(c.architecture.rawValue), d_model \(c.dModel), \(c.layerCount) layers, \(c.channelCount) channels/layer)")
        if let a = c.sharedBlocks {
            print("shared blocks    \(a.blockCount) (attention \(a.attentionHeads)×\(a.attentionHeadDim), MLP \(a.mlpWidth), adapters rank \(a.adapterRank)) before layers \(a.hybridLayers); q·kᵀ and P·v are not in the FLOP count")
        }
        print("threads          \(threads)")
        print(String(format: "prefill          %d tokens: best %.3f s of %@", r.tokens, r.bestSeconds, r.seconds.map { String(format: "%.3f", $0) }.joined(separator: ", ")))
        print(String(format: "throughput       %.1f tokens/s", r.tokensPerSecond))
        print(String(format: "matmul FLOPs     %.1f MFLOP/token (2 × %.1fM MACs)", r.matmulFlopsPerToken / 1e6, r.matmulFlopsPerToken / 2e6))
        print(String(format: "achieved         %.1f GFLOP/s in matrix products over the whole pass", r.achievedGFLOPS))
        print(String(format: "sgemm, same run  %.1f GFLOP/s on the model's shapes; %.1f GFLOP/s on 2048×768·768×3072", r.sgemmModelShapesGFLOPS, r.sgemmReferenceGFLOPS))
        print(String(format: "roofline         %.0f tokens/s at the sgemm rate → %.0f%% of roofline", r.rooflineTokensPerSecond, 100 * r.tokensPerSecond / r.rooflineTokensPerSecond))
        print(String(format: "peak memory      %.0f MiB (max RSS)", PeakMemory.megabytes))
    }
}
