import ArgumentParser
import Foundation
import LongMamba

/// `longmamba calibrate-scales`: MambaExtend's Δ scales or Mamba Modulation's A powers, one per
/// layer and target length, by SPSA on the run's corpus (resumable: every step is stored).
struct CalibrateScalesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calibrate-scales",
        abstract: "Calibrate per-layer scales (delta_scale: Δ' = s·Δ; a_power: A' = −exp(s·A_log)) by SPSA on text of each target length.",
        discussion: """
            Each length runs --steps SPSA steps of two loss evaluations on --samples packed samples of \
            the run's corpus (the run's seed), (1 + 2·steps)·samples forward passes of S tokens. Every \
            step is committed: rerun the same command after a kill to resume. The table keeps, per length, \
            the scales of the lowest loss evaluated (the start, s = 1, included). With --prepare-only the \
            samples are stored as a job that `python -m longmamba_tables calibrate-scales --job J` runs on a GPU.
            """)

    @Option(help: "SQLite database.") var db: String
    @Option(name: .customLong("run"), help: "Calibration run id (its model and corpus).") var runID: Int64
    @Option(help: "Model directory (the run's model).") var model: String
    @Option(name: .customLong("corpus"), parsing: .upToNextOption, help: "Corpus files, directories or globs (the run's corpus).") var corpus: [String]
    @Option(help: "delta_scale (MambaExtend) or a_power (Mamba Modulation).") var method: String
    @Option(help: "Target lengths (repeat or comma-separate; k = ×1000).") var lengths: [String] = []
    @Option(help: "Samples per loss evaluation.") var samples: Int = 20
    @Option(help: "SPSA steps per length.") var steps: Int = 50
    @Option(name: .customLong("step-size"), help: "How far the first step moves each log-scale (sets a; a_k = a / (k + A)^0.602).") var stepSize: Double = 0.1
    @Option(help: "c: perturbation in log-scale at step 1 (c_k = c / k^0.101).") var perturbation: Double = 0.1
    @Option(help: "A: stability constant (default ⌈steps / 10⌉).") var stability: Int?
    @Option(help: "Sampling and perturbation seed (default: the run's seed).") var seed: UInt64?
    @Option(help: "tokenizer.json (default: the model directory's).") var tokenizer: String?
    @Option(name: .customLong("subset"), help: "Only documents with this pile_set_name (repeatable).") var subsets: [String] = []
    @Flag(name: .customLong("prepare-only"), help: "Sample and store the job (prints its id), run no step.") var prepareOnly = false
    @Option(help: "Threads for matrix products and the scan.") var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Flag(help: "No progress on stderr.") var quiet = false

    func validate() throws {
        guard ScaleMethod(rawValue: method) != nil else { throw ValidationError("--method must be one of \(ScaleMethod.names), not '\(method)'") }
    }

    func run() throws {
        BLASThreads.set(threads)
        let scaleMethod = ScaleMethod(rawValue: method)!   // checked in validate()
        var options = ScaleCalibrationOptions(modelDirectory: model, corpusPaths: corpus, databasePath: db, runID: runID, method: scaleMethod,
                                              lengths: try lengthValues(lengths, name: "lengths"))
        options.sampleCount = samples; options.steps = steps; options.stepSize = stepSize; options.perturbation = perturbation
        options.stability = stability; options.seed = seed; options.tokenizerPath = tokenizer; options.subsets = subsets
        options.prepareOnly = prepareOnly
        let display = ProgressLines(enabled: !quiet)
        let started = Date()
        let result = try ScaleCalibrationJob(options: options).run { event in
            guard !quiet else { return }
            switch event {
            case let .sampling(samples, length): display.note("sampling \(samples) packed samples of \(length) tokens")
            case let .job(id, reused): display.note(reused ? "job \(id): resuming" : "job \(id)")
            case let .resumed(length, steps): display.note("length \(length): \(steps) steps already stored")
            case let .step(length, step, of, plus, minus, bestPPL, startPPL, outcome):
                let losses = plus.map { p in String(format: "f+ %.5f f− %.5f · ", p, minus ?? .nan) } ?? ""
                let rejected = outcome.hasPrefix("rejected") ? " · \(outcome)" : ""
                display.note(String(format: "%@ length %d step %d/%d: %@best perplexity %.4f (start %.4f)%@", method, length, step, of, losses, bestPPL, startPPL, rejected))
            }
        }
        display.finish()
        let wall = Date().timeIntervalSince(started)
        if let table = result.table {
            print("table \(table) (\(method), lengths \(options.lengths.map(String.init).joined(separator: ","))) · job \(result.job) · "
                  + String(format: "%d steps, %d forward passes · wall %.1f s", result.stepsRun, result.forwardPasses, wall))
        } else {
            print("job \(result.job)")
        }
    }
}
