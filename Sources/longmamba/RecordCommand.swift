import ArgumentParser
import Foundation
import LongMamba

struct RecordCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "record",
        abstract: "Run a checkpoint on a token sequence and write Δ (and A, optionally logits) per layer.")

    @Option(help: "Model directory (config.json + safetensors or pytorch_model.bin).")
    var model: String
    @Option(help: "File of whitespace-separated token ids.")
    var tokens: String
    @Option(help: "Output .safetensors file.")
    var out: String
    @Flag(help: "Also compute and store logits [L, vocab].")
    var logits = false
    @Option(help: "Threads for matrix products and the scan.")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    func run() throws {
        BLASThreads.set(threads)
        let ids = try TokenFile.read(tokens)
        let runner = try MambaModel(directory: model)
        var recorder = CollectingRecorder()
        let start = Date()
        let logitValues = try runner.forward(tokens: ids, recorder: &recorder, computeLogits: logits)
        let seconds = Date().timeIntervalSince(start)
        try RecordingFile.write(layers: recorder.layers, logits: logits ? logitValues : nil, tokens: ids, checkpoint: runner.checkpoint, to: out)
        FileHandle.standardError.write(Data(String(format: "recorded %d layers × %d tokens × %d channels (%@) in %.2f s (%.0f tokens/s) → %@\n",
                                                   runner.config.layerCount, ids.count, runner.config.channelCount,
                                                   runner.config.architecture.rawValue, seconds, Double(ids.count) / seconds, out).utf8))
    }
}
