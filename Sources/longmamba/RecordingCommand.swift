import ArgumentParser
import Foundation
import LongMamba

/// `longmamba recording`: one stored recording (run, sample, layer) decoded, as JSON — what a
/// reader of the store in another language checks its own decoder against
/// (docs/store-format.md).
struct RecordingCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recording",
        abstract: "Print one stored recording (run, sample, layer) decoded: each channel's Δ sorted descending, and A, as JSON.")

    @Option(help: "SQLite database.") var db: String
    @Option(name: .customLong("run"), help: "Calibration run id.") var runID: Int64
    @Option(help: "Sample index k (0-based).") var sample: Int
    @Option(help: "Layer index (0-based).") var layer: Int

    struct Output: Encodable {
        var run: Int64, sample: Int, layer: Int, encoding: String, length: Int, channels: Int
        var sortedDelta: [[Float]]
        var A: [Float]
        var aShape: [Int]
        enum CodingKeys: String, CodingKey {
            case run, sample, layer, encoding, length, channels, sortedDelta = "sorted_delta", A, aShape = "a_shape"
        }
    }

    func run() throws {
        let store = try CalibrationStore(path: db, readOnly: true)
        let recording = try store.recording(run: runID, sample: sample, layer: layer)
        let d = recording.decoded
        let rows = (0..<d.channels).map { c in Array(d.sortedDelta[(c * d.length)..<((c + 1) * d.length)]) }
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        print(String(decoding: try e.encode(Output(run: runID, sample: sample, layer: layer, encoding: recording.encoding, length: d.length,
                                                   channels: d.channels, sortedDelta: rows, A: d.A, aShape: d.aShape)), as: UTF8.self))
    }
}
