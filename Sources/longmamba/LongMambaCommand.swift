import ArgumentParser
import LongMamba

@main
struct LongMambaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "longmamba",
        abstract: "LongMamba calibration: per-channel Δ-threshold tables for Mamba-family models.",
        version: ToolInfo.version,
        subcommands: [
            // The main job: corpus → samples → Δ → tables, resumable, shardable
            CalibrateCommand.self, MergeCommand.self,
            // Corpus and tokenizer
            SampleCommand.self, TokenizeCommand.self,
            // Model runner (Δ recordings)
            RecordCommand.self,
            // Solver and store: tables from recordings
            SolveCommand.self, SweepCommand.self, TablesCommand.self, InspectCommand.self, MigrateCommand.self,
            // Using tables: lookup, evaluation, export, report
            LookupCommand.self, EvalCommand.self, TuneCommand.self, ExportCommand.self, ReportCommand.self,
            // Benchmarks (each prints this machine's baseline beside its figure)
            BenchCommand.self, BenchCorpusCommand.self, BenchSolverCommand.self,
        ]
    )
}
