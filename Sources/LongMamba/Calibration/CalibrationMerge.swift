// Joins shard databases of one calibration (`calibrate --shard i/n` on several machines) into
// one: runs must share the calibration key (same model fingerprint, tokenizer, corpus, seed, K, L).
import Foundation

public enum CalibrationMerge {
    public struct Result: Sendable {
        public var runID: Int64
        public var samples: Int
        public var sampleCount: Int
        public var tableIDs: [Int64]
    }

    public static func merge(inputs: [String], into output: String, clampFractions: [Double], aggregations: [Aggregation],
                             interval: Int, maxLength: Int) throws -> Result {
        guard !inputs.isEmpty else { throw CalibrationError(reason: "no input databases given") }
        let target = try CalibrationStore(path: output)
        var targetRun: ResumableRun? = nil
        var key: String? = nil
        var fingerprint: String? = nil
        for input in inputs {
            let source = try CalibrationStore(path: input, readOnly: true)
            let runs = try source.calibrationKeys()
            guard runs.count == 1, let runKey = runs[0].key else {
                throw CalibrationError(reason: "\(input) holds \(runs.count) calibration runs; expected exactly one made by `calibrate`")
            }
            let model = try source.runModel(runs[0].id)
            if let fingerprint, fingerprint != model.fingerprint {
                throw CalibrationError(reason: "\(input) was calibrated on model \(model.fingerprint.prefix(12)), the others on \(fingerprint.prefix(12)); refusing to merge")
            }
            if let key, key != runKey {
                throw CalibrationError(reason: "\(input) comes from another calibration (\(runs[0].description ?? "?")); shards must share model, tokenizer, corpus, seed, K and L")
            }
            fingerprint = model.fingerprint
            key = runKey
            guard let sourceRun = try source.resumableRun(calibrationKey: runKey) else { continue }
            if targetRun == nil {
                if let existing = try target.resumableRun(calibrationKey: runKey) {
                    targetRun = existing
                } else {
                    if let other = try target.calibrationKeys().first {
                        throw CalibrationError(reason: "\(output) already holds run \(other.id) of another calibration; merge into a new database")
                    }
                    let info = try source.run(sourceRun.id)
                    var provenance = RunProvenance()
                    provenance.corpusProvenanceJSON = info.corpusProvenanceJSON
                    provenance.tokenizerHash = info.tokenizerHash
                    provenance.seed = info.seed
                    let metadata = (try? JSONSerialization.jsonObject(with: Data(info.recordingMetadataJSON.utf8))) as? [String: Any] ?? [:]
                    let id = try target.beginRun(calibrationKey: runKey, description: runs[0].description ?? "", fingerprint: model.fingerprint,
                                                 architecture: model.architecture, configJSON: model.configJSON, sequences: sourceRun.sequences,
                                                 trainingLength: info.trainingLength, layerCount: info.layerCount, provenance: provenance,
                                                 extraMetadata: metadata.filter { !["calibration_key", "calibration_description", "sequences"].contains($0.key) })
                    targetRun = try target.resumableRun(calibrationKey: runKey) ?? ResumableRun(id: id, calibrationKey: runKey, sequences: sourceRun.sequences, recordedSamples: [], status: "recording")
                }
            }
            _ = try target.mergeRecordings(from: source, run: sourceRun.id, into: targetRun!.id)
        }
        guard let key, var run = try target.resumableRun(calibrationKey: key) else {
            throw CalibrationError(reason: "the inputs hold no recordings")
        }
        let info = try target.run(run.id)
        var result = Result(runID: run.id, samples: run.recordedSamples.count, sampleCount: info.sampleCount, tableIDs: [])
        guard run.recordedSamples.count == info.sampleCount else { return result }
        if run.status != "complete" { try target.finishRun(run.id); run = try target.resumableRun(calibrationKey: key) ?? run }
        let architecture = Architecture(rawValue: try target.runModel(run.id).architecture) ?? .mamba
        for p in clampFractions.isEmpty ? [CalibrationJob.defaultClampFraction(architecture)] : clampFractions {
            for a in aggregations {
                result.tableIDs.append(try target.solve(run: run.id, clampFraction: p, aggregation: a, interval: interval, maxLength: maxLength))
            }
        }
        return result
    }
}
