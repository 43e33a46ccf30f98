import ArgumentParser
import Foundation
import LongMamba

extension Aggregation: ExpressibleByArgument {}
extension ExportFormat: ExpressibleByArgument {}

/// Which stored form to use when importing recordings.
enum RepresentationChoice: String, ExpressibleByArgument, CaseIterable {
    case auto, exact, sketch
}

struct SolveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "solve",
        abstract: "Solve Δ thresholds into a new immutable table; prints the table id.",
        discussion: """
            Either import `longmamba record` outputs (one safetensors file per sample; this creates the model and \
            calibration-run rows) or solve a run already in the database. Importing stores Mamba-2 Δ exactly and \
            Mamba-1 Δ as a bounded sketch (--representation to choose).
            """)

    @Option(help: "SQLite database (created if missing).") var db: String
    @Option(parsing: .upToNextOption, help: "Recording files (layer.{i}.delta [L, C], layer.{i}.A), one per sample.") var recordings: [String] = []
    @Option(name: .customLong("run"), help: "Solve a stored calibration run instead of importing.") var runID: Int64?
    @Option(help: "Clamp fraction p in (0, 1]: Δ is capped at its floor(L·p)-th largest value.") var clamp: Double
    @Option(help: "Aggregation over samples: max or mean.") var aggregate: Aggregation
    @Option(help: "Tabulate every this many tokens (default: the run's calibrated grid, else 1000).") var interval: TokenCount?
    @Option(name: .customLong("max-length"), help: "Longest tabulated length (default: the run's calibrated grid, else 256000).") var maxLength: TokenCount?
    @Option(name: .customLong("training-length"), help: "Training length L (default: the recorded length).") var trainingLength: TokenCount?
    @Option(help: "Stored form of imported recordings: auto, exact or sketch.") var representation: RepresentationChoice = .auto
    @Option(name: .customLong("sketch-bytes"), help: "Byte budget per channel and sample for the sketch.") var sketchBytes: Int = DeltaRepresentation.defaultSketchBytes
    @Flag(help: "Use the naive reference search (slow; same result).") var naive = false
    @Flag(help: "No progress on stderr.") var quiet = false

    func validate() throws {
        if recordings.isEmpty == (runID == nil) { throw ValidationError("give either --recordings FILE... or --run ID") }
        if sketchBytes < 64 { throw ValidationError("--sketch-bytes must be at least 64") }
    }

    func run() throws {
        let store = try CalibrationStore(path: db)
        let run: Int64
        if let runID { run = runID } else {
            let chosen: DeltaRepresentation? = switch representation {
            case .auto: nil
            case .exact: .exact
            case .sketch: .sketch(bytesPerChannel: sketchBytes)
            }
            run = try store.importRecordings(recordings, representation: chosen)
            FileHandle.standardError.write(Data("imported \(recordings.count) recordings as calibration run \(run)\n".utf8))
        }
        let service = TableService(store: store)
        let parameters = try service.parameters(run: run, clampFraction: clamp, aggregation: aggregate, interval: interval?.value,
                                                maxLength: maxLength?.value, trainingLength: trainingLength?.value)
        // A table of this run with exactly these parameters is reused (a rerun, or one after a
        // kill, adds nothing); --naive always solves, as a check of the fast solver.
        let display = ProgressDisplay(enabled: !quiet)
        let id = naive ? try service.solve(run: run, parameters: parameters, method: .naive, progress: display.show)
            : try service.tables(run: run, for: [parameters]) { event in
                if case .reused(let table) = event {
                    FileHandle.standardError.write(Data("table \(table) already holds run \(run) with these parameters; reused\n".utf8))
                } else if case .solvedLayer = event {
                    display.show(event)
                }
            }[0]
        print(id)
    }
}
