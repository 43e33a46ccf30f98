import ArgumentParser
import LongMamba

@main
struct LongMambaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "longmamba",
        abstract: "LongMamba calibration: per-channel Δ-threshold tables for Mamba-family models.",
        version: ToolInfo.version,
        subcommands: [
            // Issue 2: model runner
            // Issue 3: corpus and tokenizer
            SampleCommand.self, TokenizeCommand.self, BenchCorpusCommand.self,
            // Issue 4: solver, store, lookup, export
        ]
    )
}
