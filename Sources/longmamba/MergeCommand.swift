import ArgumentParser
import Foundation
import LongMamba

/// `longmamba merge`: join the shard databases of one calibration (same model, corpus, seed, K, L).
struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Combine shard databases of one calibration run into one database, then solve when complete.")

    @Option(help: "Output database (created if missing).")
    var db: String
    @Argument(help: "Input databases (from `calibrate --shard i/n`).")
    var inputs: [String]
    @Option(name: .customLong("clamp"), help: "Clamp fraction p for the tables solved once complete (repeatable).")
    var clamps: [Double] = []
    @Option(name: .customLong("aggregate"), help: "max or mean (repeatable; default max).")
    var aggregates: [Aggregation] = []
    @Option(help: "Table interval in tokens.")
    var interval: Int = 1000
    @Option(help: "Longest tabulated length.")
    var maxLength: Int = 256_000

    func run() throws {
        let aggregations = aggregates.isEmpty ? [Aggregation.max] : aggregates
        let result = try CalibrationMerge.merge(inputs: inputs, into: db, clampFractions: clamps, aggregations: aggregations,
                                                interval: interval, maxLength: maxLength)
        FileHandle.standardError.write(Data("run \(result.runID) in \(db): \(result.samples)/\(result.sampleCount) samples\n".utf8))
        for id in result.tableIDs { print(id) }
    }
}
