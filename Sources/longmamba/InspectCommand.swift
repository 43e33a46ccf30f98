import ArgumentParser
import Foundation
import LongMamba

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show one table: summary, per-layer thresholds, then its metadata and provenance; or, with --model, a checkpoint's shape and fingerprint.")

    @Option(help: "SQLite database.") var db: String?
    @Option(help: "Table id.") var table: Int64?
    @Option(help: "Instead of a table: a model directory; prints its architecture, shape and fingerprint (the identity tables and evaluations are keyed by).") var model: String?
    @Flag(help: "With --model: print JSON.") var json = false
    @Option(help: "θ > 0 for the global-channel count.") var theta: Double = GlobalChannels.defaultTheta

    func validate() throws {
        try checkTheta(theta)
        if model != nil, db != nil || table != nil { throw ValidationError("give either --model DIR or --db FILE --table ID") }
        if model == nil, db == nil || table == nil { throw ValidationError("give --db FILE --table ID (a table) or --model DIR (a checkpoint)") }
    }

    func inspectModel(_ directory: String) throws {
        let checkpoint = try ModelCheckpoint(directory: directory)
        let c = checkpoint.config
        let fingerprint = checkpoint.fingerprint()
        if json {
            struct Summary: Encodable { let model, architecture: String; let layers, dModel, vocabSize: Int; let fingerprint: String }
            try printJSON(Summary(model: directory, architecture: c.architecture.rawValue, layers: c.layerCount, dModel: c.dModel,
                                  vocabSize: c.paddedVocabSize, fingerprint: fingerprint))
            return
        }
        print("model \(directory): \(c.architecture.rawValue), \(c.layerCount) layers, d_model \(c.dModel), vocabulary \(c.paddedVocabSize)")
        print("fingerprint: \(fingerprint)")
    }

    /// Metadata printed last: provenance and the long JSON documents.
    static let provenanceKeys: Set<String> = ["model_config", "corpus_provenance", "recording_metadata", "parameters", "calibration_key",
                                              "tokenizer_hash", "model_fingerprint", "content_hash"]

    func run() throws {
        if let model { return try inspectModel(model) }
        guard let db, let table else { return }
        let store = try CalibrationStore(path: db, readOnly: true)
        let info = try store.table(table)
        let p = info.parameters
        let layers = try (0..<info.layerCount).map { try store.tableLayer(table: table, layer: $0) }
        let global = layers.map { GlobalChannels.count(cumulativeDecay: $0.cumulativeDecay, theta: theta) }
        // Summary first.
        print("table \(table) of run \(info.runID): \(info.architecture), \(info.layerCount) layers × \(layers.first?.channels ?? 0) channels, "
              + "p = \(p.clampFraction), aggregate \(p.aggregation.rawValue), L = \(p.trainingLength)")
        print("lengths: \(info.lengths.count), every \(p.interval) tokens up to \(p.maxLength); recordings \(info.recordingRepresentation); hash \(info.contentHash.prefix(12))")
        print("global channels at θ = \(theta): \(global.reduce(0, +)) of \(layers.reduce(0) { $0 + $1.channels }) (per layer: \(global.map(String.init).joined(separator: " ")))")
        print("")
        var probe: [Int] = []
        for S in [info.lengths.first, info.lengths.first(where: { $0 > p.trainingLength }), info.lengths.last].compactMap({ $0 }) where !probe.contains(S) { probe.append(S) }
        var rows: [[String]] = []
        for l in layers {
            var row = [String(l.layer), String(l.channels), "\(global[l.layer])", String(format: "%.4g–%.4g", l.decayBudget.min() ?? 0, l.decayBudget.max() ?? 0)]
            for S in probe {
                guard let t = l.lengths.firstIndex(of: S) else { row.append("-"); continue }
                let slice = l.deltaThreshold[(t * l.channels)..<((t + 1) * l.channels)]
                row.append(String(format: "%.4g–%.4g", slice.min() ?? 0, slice.max() ?? 0))
            }
            rows.append(row)
        }
        printTable(header: ["layer", "channels", "global@θ=\(theta)", "D range"] + probe.map { "τ@\($0)" }, rows: rows)
        // Then the metadata, provenance last.
        let metadata = try store.tableMetadata(table)
        print("")
        for k in metadata.keys.sorted() where !Self.provenanceKeys.contains(k) { print("\(k): \(metadata[k] ?? "")") }
        print("")
        print("provenance:")
        for k in metadata.keys.sorted() where Self.provenanceKeys.contains(k) { print("\(k): \(metadata[k] ?? "")") }
    }
}
