// Joins shard databases of one calibration (`calibrate --shard i/n` on several machines) into
// one: runs must share the calibration key (same model fingerprint, tokenizer, corpus, seed, K, L).
// Once every sample is there it finishes and solves exactly as `calibrate` does (the same steps:
// `CalibrationJob.finishIfComplete`, `TableService.tables`), so rerunning `merge` adds nothing.
// The inputs' evaluation points (`tune --shard i/n` on copies of the store) are joined too.
import Foundation

public enum CalibrationMerge {
    public struct Result: Sendable {
        public var runID: Int64
        public var samples: Int
        public var sampleCount: Int
        public var tableIDs: [Int64]
        /// Evaluation points joined from the inputs (`tune --shard i/n` copies of the store).
        public var evaluations = EvaluationJoin()
    }

    public static func merge(inputs: [String], into output: String, clampFractions: [Double], aggregations: [Aggregation],
                             interval: Int? = nil, maxLength: Int? = nil, progress: (CalibrationEvent) -> Void = { _ in }) throws -> Result {
        guard !inputs.isEmpty else { throw CalibrationError.noInputDatabases }
        let target = try CalibrationStore(path: output)
        var targetRun: Int64? = nil
        var key: String? = nil
        var fingerprint: String? = nil
        for input in inputs {
            let source = try CalibrationStore(path: input, readOnly: true)
            let runs = try source.runs()
            guard runs.count == 1, let sourceRun = runs[0].id, let runKey = runs[0].calibrationKey else {
                throw CalibrationError.notOneRun(input: input, runs: runs.count)
            }
            let model = try source.runModel(sourceRun)
            if let fingerprint, fingerprint != model.fingerprint {
                throw CalibrationError.modelMismatch(input: input, found: model.fingerprint, others: fingerprint)
            }
            if let key, key != runKey { throw CalibrationError.calibrationMismatch(input: input, description: runs[0].description) }
            fingerprint = model.fingerprint
            key = runKey
            if targetRun == nil {
                if let existing = try target.run(calibrationKey: runKey) {
                    targetRun = existing.id
                } else {
                    if let other = try target.runs().first { throw CalibrationError.outputHoldsOtherCalibration(output: output, run: other.id ?? 0) }
                    let info = runs[0]
                    var new = NewRun(fingerprint: model.fingerprint, architecture: model.architecture, sampleCount: info.sampleCount,
                                     sampleLength: info.sampleLength, layerCount: info.layerCount)
                    new.configJSON = model.configJSON
                    new.calibrationKey = runKey
                    new.description = info.description
                    new.provenance.corpusProvenanceJSON = info.corpusProvenanceJSON
                    new.provenance.tokenizerHash = info.tokenizerHash
                    new.provenance.seed = info.seed
                    new.provenance.recordingMetadataJSON = info.recordingMetadataJSON
                    targetRun = try target.beginRun(new, sequences: try source.sequences(run: sourceRun)).run
                }
            }
            _ = try target.mergeRecordings(from: source, run: sourceRun, into: targetRun!)
        }
        guard let run = targetRun else { throw CalibrationError.noRecordings }
        let info = try target.run(run)
        var result = Result(runID: run, samples: try target.recordedSamples(run: run).count, sampleCount: info.sampleCount, tableIDs: [])
        // Evaluations of tables the target holds; the tables are solved first when the run completes now.
        func joinEvaluations() throws {
            for input in inputs {
                let j = try target.joinEvaluations(from: try CalibrationStore(path: input, readOnly: true))
                result.evaluations.added += j.added; result.evaluations.present += j.present; result.evaluations.differing += j.differing
            }
        }
        guard try CalibrationJob.finishIfComplete(run: run, in: target) else { try joinEvaluations(); return result }
        let architecture = Architecture(rawValue: try target.runModel(run).architecture) ?? .mamba
        // Default: the grid the shards were started with (stored in the run's recording metadata).
        let tableGrid = try TableService(store: target).grid(run: run, interval: interval, maxLength: maxLength)
        let grid = CalibrationJob.grid(clampFractions: clampFractions, aggregations: aggregations, interval: tableGrid.interval, maxLength: tableGrid.maxLength,
                                       trainingLength: info.sampleLength, architecture: architecture)
        result.tableIDs = try TableService(store: target).tables(run: run, for: grid, progress: progress)
        try joinEvaluations()
        return result
    }
}
