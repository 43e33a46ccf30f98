import ArgumentParser
import LongMamba

@main
struct LongMambaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "longmamba",
        abstract: "LongMamba calibration: per-channel Δ-threshold tables for Mamba-family models.",
        version: ToolInfo.version,
        subcommands: [
            // Issue 5: the main job
            CalibrateCommand.self, MergeCommand.self, ReportCommand.self,
            // Issue 6: LongMamba inference
            EvalCommand.self,
            // Issue 2: model runner
            RecordCommand.self, BenchCommand.self,
            // Issue 3: corpus and tokenizer
            SampleCommand.self, TokenizeCommand.self, BenchCorpusCommand.self,
            // Issue 4: solver, store, lookup, export
            SolveCommand.self, SweepCommand.self, TablesCommand.self, InspectCommand.self,
            LookupCommand.self, ExportCommand.self, BenchSolverCommand.self,
        ]
    )
}
