import ArgumentParser
import Foundation
import LongMamba
#if canImport(Glibc)
import Glibc
#endif

/// `longmamba calibrate`: the main job, from corpus shards to stored tables.
struct CalibrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calibrate",
        abstract: "Sample the corpus, record Δ sample by sample into the database, and solve tables (resumable).",
        discussion: """
        Rerunning the same command after an interruption (Ctrl-C, kill -9, a crash) continues after \
        the last committed sample and gives the same tables. With --shard i/n a machine records only \
        samples k with k mod n = i into its own database; `longmamba merge` joins the shards.
        """)

    @Option(help: "Model directory (config.json, weights, and usually tokenizer.json).")
    var model: String
    @Option(name: .customLong("corpus"), parsing: .upToNextOption, help: "Corpus files, directories or globs (.jsonl.zst, .jsonl, .txt).")
    var corpus: [String]
    @Option(help: "SQLite database (created if missing).")
    var db: String
    @Option(help: "Number of sequences K.")
    var samples: Int = 5
    @Option(help: "Tokens per sequence L, k = ×1000 (default: the model's training length: training_length or max_position_embeddings in config.json, 2048 for state-spaces checkpoints, 4096 for Zamba2).")
    var length: TokenCount?
    @Option(help: "Sampling seed.")
    var seed: UInt64 = 0
    @OptionGroup var table: TableOptions
    @Option(help: "tokenizer.json (default: the model directory's).")
    var tokenizer: String?
    @Option(name: .customLong("subset"), help: "Only documents with this pile_set_name (repeatable).")
    var subsets: [String] = []
    @Option(help: "document: one document of ≥ L tokens per sequence; packed: documents joined with EOS (as in pre-training).")
    var packing: String = "document"
    @Option(help: "Record only this machine's share of the samples: i/n (0-based).")
    var shard: String = "0/1"
    @Option(help: "Threads for matrix products and the scan.")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(name: .customLong("resident-weights"), help: "Keep every layer's f32 weights in memory: auto (when they take ≤ 4 GiB), always or never.")
    var residentWeights: ResidentWeights = .auto
    @Flag(name: .customLong("measure-prefill"), help: "Also time one plain forward of sample 0 and print the recording speed against it.")
    var measurePrefill = false
    @Flag(help: "No progress on stderr.")
    var quiet = false

    func run() throws {
        BLASThreads.set(threads)
        var options = CalibrationOptions(modelDirectory: model, corpusPaths: corpus, databasePath: db)
        options.sampleCount = samples
        options.length = length?.value
        options.seed = seed
        options.clampFractions = try table.clamps
        options.aggregations = try table.aggregations
        options.interval = table.interval?.value ?? TableService.defaultGrid.interval
        options.maxLength = table.maxLength?.value ?? TableService.defaultGrid.maxLength
        options.tokenizerPath = tokenizer
        options.subsets = subsets
        guard let mode = Packing(rawValue: packing) else { throw ValidationError("--packing must be document or packed, not '\(packing)'") }
        options.packing = mode
        let parts = shard.split(separator: "/").compactMap { Int($0) }
        guard parts.count == 2 else { throw ValidationError("--shard must look like i/n, e.g. 0/4") }
        options.shardIndex = parts[0]
        options.shardCount = parts[1]
        options.measurePrefill = measurePrefill
        options.residentWeights = residentWeights.choice

        let display = ProgressDisplay(enabled: !quiet)
        let started = Date()
        // Interruption tests kill the process between samples; this pause makes the moment certain.
        let pause = Double(ProcessInfo.processInfo.environment["LONGMAMBA_TEST_PAUSE_AFTER_SAMPLE"] ?? "") ?? 0
        let result = try CalibrationJob(options: options).run { event in
            display.show(event)
            if pause > 0, case .sampleCommitted = event { Thread.sleep(forTimeInterval: pause) }
        }
        let wall = Date().timeIntervalSince(started)
        var lines = ["run \(result.runID): recorded \(result.samplesRecorded) samples, \(result.samplesResumed) already committed"
                     + String(format: " · %.1f tokens/s · wall %.1f s · peak memory %.0f MiB", result.tokensPerSecond, wall, PeakMemory.megabytes)]
        if let prefill = result.prefillTokensPerSecond, result.tokensRecorded > 0 {
            lines.append(String(format: "recording %.1f tokens/s against a plain prefill of %.1f tokens/s in this run: %.0f %%",
                                result.tokensPerSecond, prefill, 100 * result.tokensPerSecond / prefill))
        }
        if !result.complete {
            lines.append("shard \(shard) done; the run still lacks other shards' samples (join them with `longmamba merge`)")
        }
        FileHandle.standardError.write(Data((lines.joined(separator: "\n") + "\n").utf8))
        if result.complete {
            let store = try CalibrationStore(path: db, readOnly: true)
            for id in result.tableIDs { print(id) }
            FileHandle.standardError.write(Data(try CalibrationSummary.text(store: store, tables: result.tableIDs).utf8))
        }
    }
}

/// Progress on stderr: a redrawn bar on a terminal, plain lines otherwise.
final class ProgressDisplay {
    let enabled: Bool
    let terminal = isatty(2) == 1
    private var lastPlain = Date.distantPast

    init(enabled: Bool) { self.enabled = enabled }

    func show(_ event: CalibrationEvent) {
        guard enabled else { return }
        switch event {
        case .sampling(let p):
            guard terminal || Date().timeIntervalSince(lastPlain) > 2 else { return }
            lastPlain = Date()
            emit("sampling · " + ProgressLine.format(p), transient: true)
        case .sampled(let n, let seconds):
            emit(String(format: "sampled %d sequences in %.1f s", n, seconds), transient: false)
        case .resumed(let run, let recorded, let total):
            emit("resuming run \(run): \(recorded)/\(total) samples already committed", transient: false)
        case .layer(let sample, let layer, let layers):
            guard terminal else { return }
            emit("sample \(sample) " + bar(Double(layer + 1) / Double(layers)) + " layer \(layer + 1)/\(layers)", transient: true)
        case .sampleCommitted(let sample, let done, let total, let rate):
            emit(String(format: "sample %d committed (%d/%d) · %.0f tokens/s", sample, done, total, rate), transient: false)
        case .solving(let p, let aggregation):
            emit("solving p = \(p), aggregate \(aggregation.rawValue)", transient: true)
        case .solvedLayer(let done, let layers, let seconds):
            guard terminal || Date().timeIntervalSince(lastPlain) > 5 || done == layers else { return }
            lastPlain = Date()
            let eta = seconds / Double(done) * Double(layers - done)
            emit("solving " + (terminal ? bar(Double(done) / Double(layers)) + " " : "") + String(format: "layer %d/%d · %.1f s · ETA %.0f s", done, layers, seconds, eta), transient: done < layers)
        case .solved(let table):
            emit("table \(table) stored", transient: false)
        case .reused(let table):
            emit("table \(table) already stored with these parameters", transient: false)
        }
    }

    private func bar(_ fraction: Double) -> String {
        let width = 24, filled = Int((fraction * Double(width)).rounded())
        return "[" + String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled) + "]"
    }

    private func emit(_ line: String, transient: Bool) {
        if terminal {
            let padded = line + String(repeating: " ", count: max(0, 100 - line.count))
            FileHandle.standardError.write(Data(("\r" + padded + (transient ? "" : "\n")).utf8))
        } else {
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
    }
}

/// The tables to solve once a calibration is complete (shared by `calibrate` and `merge`).
struct TableOptions: ParsableArguments {
    @Option(name: .customLong("clamp"), help: "Clamp fractions p (repeat or comma-separate; default 0.05 for Mamba-2 and Zamba2, 0.2 for Mamba-1).")
    var clampValues: [String] = []
    @Option(name: .customLong("aggregate"), help: "max or mean (repeat or comma-separate; default max).")
    var aggregateValues: [String] = []
    @Option(help: "Table interval in tokens, k = ×1000 (calibrate: default 1000; merge: default the grid the shards were started with).")
    var interval: TokenCount?
    @Option(help: "Longest tabulated length, k = ×1000 (calibrate: default 256k; merge: default the grid the shards were started with).")
    var maxLength: TokenCount?

    var clamps: [Double] { get throws { clampValues.isEmpty ? [] : try listValues(clampValues, name: "clamp") { Double($0) } } }
    var aggregations: [Aggregation] {
        get throws { aggregateValues.isEmpty ? [.max] : try listValues(aggregateValues, name: "aggregate") { Aggregation(rawValue: $0) } }
    }
}

/// `--resident-weights` of `calibrate` and `bench`.
enum ResidentWeights: String, ExpressibleByArgument, CaseIterable {
    case auto, always, never
    /// MambaModel's keepWeightsResident: nil lets it decide (f32 weights ≤ 4 GiB).
    var choice: Bool? { self == .auto ? nil : self == .always }
}
