import ArgumentParser
import Foundation
import LongMamba

/// `longmamba merge`: join the shard databases of one calibration (same model, corpus, seed, K, L).
struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Combine shard databases of one calibration run into one database, then solve when complete; join the evaluation points of `tune --shard i/n` copies.")

    @Option(help: "Output database (created if missing).")
    var db: String
    @Argument(help: "Input databases (from `calibrate --shard i/n`, or copies of the store a `tune --shard i/n` evaluated into).")
    var inputs: [String]
    @OptionGroup var table: TableOptions
    @Flag(help: "No progress on stderr.") var quiet = false

    func run() throws {
        let display = ProgressDisplay(enabled: !quiet)
        let result = try CalibrationMerge.merge(inputs: inputs, into: db, clampFractions: try table.clamps, aggregations: try table.aggregations,
                                                interval: table.interval?.value, maxLength: table.maxLength?.value, progress: display.show)
        FileHandle.standardError.write(Data("run \(result.runID) in \(db): \(result.samples)/\(result.sampleCount) samples\n".utf8))
        let e = result.evaluations
        if e.added + e.present + e.differing > 0 {
            var line = "evaluation points: \(e.added) joined, \(e.present) already there"
            if e.differing > 0 { line += ", \(e.differing) already there with another value (kept as they were)" }
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
        for id in result.tableIDs { print(id) }
    }
}
