import Foundation
import Testing
@testable import LongMamba
import LongMambaKernels

@Suite struct ExportTests {
    func solvedStore(interval: Int = 1000) throws -> (CalibrationStore, Int64, String) {
        let dir = SyntheticRecordings.tempDir()
        let store = try CalibrationStore(path: "\(dir)/cal.sqlite")
        let run = try store.importRecordings(try SyntheticRecordings.write(in: dir, samples: 2, layers: 2, L: 300, C: 5))
        let id = try TableService(store: store).solve(run: run, clampFraction: 0.1, aggregation: .max, interval: interval, maxLength: 5000)
        return (store, id, dir)
    }

    @Test func safetensorsExportHasTheDocumentedNamesShapesValuesAndMetadata() throws {
        let (store, id, dir) = try solvedStore()
        try TableExport.export(store: store, table: id, format: .safetensors, to: "\(dir)/t.safetensors")
        let f = try SafetensorsFile(path: "\(dir)/t.safetensors")
        #expect(try f.integers("lengths") == [1000, 2000, 3000, 4000, 5000])
        #expect(f.info("lengths")?.dtype == .i64)
        var names: Set<String> = ["lengths"]
        for i in 0..<2 {
            let l = try store.tableLayer(table: id, layer: i)
            #expect(f.info("layer.\(i).threshold")?.shape == [5, 5])
            #expect(try f.floats("layer.\(i).threshold") == l.deltaThreshold)
            #expect(try f.floats("layer.\(i).kept_fraction") == l.keptFraction)
            #expect(try f.floats("layer.\(i).decay_budget") == l.decayBudget)
            #expect(try f.floats("layer.\(i).cumulative_decay") == l.cumulativeDecay)
            #expect(try f.floats("layer.\(i).A") == l.A && f.info("layer.\(i).A")?.shape == [5])
            for n in ["threshold", "kept_fraction", "decay_budget", "cumulative_decay", "A"] { names.insert("layer.\(i).\(n)") }
        }
        #expect(Set(f.tensors.map(\.name)) == names)
        #expect(f.metadata["content_hash"] == (try store.table(id).contentHash))
        #expect(f.metadata["clamp_fraction"] == "0.1" && f.metadata["aggregation"] == "max" && f.metadata["method"] == "longmamba")
        let all = try JSONSerialization.jsonObject(with: Data((f.metadata["longmamba_table"] ?? "").utf8)) as? [String: Any]
        #expect(all?["model_fingerprint"] as? String == "synthetic-mamba2-2x5")
    }

    @Test func jsonExportRoundTripsEveryFloatExactly() throws {
        let (store, id, dir) = try solvedStore()
        try TableExport.export(store: store, table: id, format: .json, to: "\(dir)/t.json")
        let root = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(dir)/t.json"))) as? [String: Any]
        let layers = root?["layers"] as? [[String: Any]] ?? []
        #expect(layers.count == 2)
        for (i, layer) in layers.enumerated() {
            let l = try store.tableLayer(table: id, layer: i)
            let thresholds = (layer["threshold"] as? [[Double]] ?? []).flatMap { $0 }.map { Float($0) }
            #expect(thresholds == l.deltaThreshold)
            #expect((layer["cumulative_decay"] as? [Double] ?? []).map { Float($0) } == l.cumulativeDecay)
        }
        // Metadata typed: numbers as numbers, JSON documents as objects, strings as strings.
        let metadata = root?["metadata"] as? [String: Any]
        #expect(metadata?["content_hash"] as? String == (try store.table(id).contentHash))
        #expect((metadata?["clamp_fraction"] as? NSNumber)?.doubleValue == 0.1 && (metadata?["training_length"] as? NSNumber)?.intValue == 300)
        #expect((metadata?["parameters"] as? [String: Any])?["aggregation"] as? String == "max")
        #expect(metadata?["aggregation"] as? String == "max")
    }

    @Test func artifactExportWritesTheAuthorsLayoutAsTorchZipFiles() throws {
        let (store, id, dir) = try solvedStore()
        let out = "\(dir)/artifacts"
        try TableExport.export(store: store, table: id, format: .longmambaArtifacts, to: out)
        // The export states the table and the rules the authors' code will apply to it.
        let described = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(out)/longmamba-table.json"))) as? [String: Any]
        #expect((described?["metadata"] as? [String: Any])?["content_hash"] as? String == (try store.table(id).contentHash))
        let rules = described?["inference_rules"] as? [String: String]
        #expect(rules?["filter_start"]?.contains("int(S / 1000) > 2") == true)
        #expect(rules?["row_choice"]?.contains("halfway takes the shorter") == true)
        for i in 0..<2 {
            for sub in ["tA_prod", "decay", "A", "alpha", "delta_t-thre"] {
                #expect(FileManager.default.fileExists(atPath: "\(out)/\(sub)/\(sub)_layer_\(i).pt"))
            }
            let l = try store.tableLayer(table: id, layer: i)
            let alpha = try TorchCheckpoint(path: "\(out)/alpha/alpha_layer_\(i).pt")
            let thre = try TorchCheckpoint(path: "\(out)/delta_t-thre/delta_t-thre_layer_\(i).pt")
            #expect(alpha.tensors.map(\.name) == ["1k", "2k", "3k", "4k", "5k"])
            for (t, key) in ["1k", "2k", "3k", "4k", "5k"].enumerated() {
                #expect(try alpha.floats(key) == Array(l.keptFraction[(t * 5)..<((t + 1) * 5)]))
                #expect(try thre.floats(key) == Array(l.deltaThreshold[(t * 5)..<((t + 1) * 5)]))
            }
        }
    }

    @Test func artifactExportRefusesLengthsThatAreNotWholeThousands() throws {
        let (store, id, dir) = try solvedStore(interval: 500)
        let error = #expect(throws: ExportError.self) { try TableExport.export(store: store, table: id, format: .longmambaArtifacts, to: "\(dir)/a") }
        #expect(error == .lengthNotThousands(directory: "\(dir)/a", length: 500))
        #expect(error?.path == "\(dir)/a")
        #expect(error?.description.hasPrefix("\(dir)/a: length 500 is not a whole number of thousands;") == true, "\(String(describing: error))")
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/a"))
    }
}

/// Thresholds in raw-dt space keep exactly the (token, channel) pairs the Δ filter keeps.
@Suite struct RawDeltaThresholdTests {
    /// Δ as the runner computes it, and the two filters' decisions, over raw values.
    func agree(tau: [Float], bias: [Float], limit: (lower: Float, upper: Float)?, raw: [Float], r: [Float]) -> Int {
        let C = bias.count, T = tau.count / C
        var disagreements = 0
        for x in raw {
            let row = [Float](repeating: x, count: T * C)
            let delta = row.withUnsafeBufferPointer { softplusDelta($0.baseAddress!, rows: T, channels: C, stride: C, bias: bias, limit: limit) }
            for i in 0..<(T * C) where (delta[i] > tau[i]) != (x > r[i]) { disagreements += 1 }
        }
        return disagreements
    }

    @Test func filteringRawDtKeepsTheSamePairsAsFilteringDelta() throws {
        var generator = SplitMix64(seed: 7)
        func uniform() -> Double { Double(generator.next() >> 11) / Double(1 << 53) }
        let (T, C) = (6, 16)
        let bias = (0..<C).map { _ in Float(uniform() * 8 - 6) }
        // τ over the range thresholds take, 0 (rows up to L) and a value above the clamp.
        var tau = (0..<(T * C)).map { _ in Float(Foundation.exp(uniform() * 10 - 8)) }
        for c in 0..<C { tau[c] = 0 }
        tau[T * C - 1] = 200
        for limit in [nil, (lower: Float(0.001), upper: Float(100))] as [(lower: Float, upper: Float)?] {
            let r = RawDeltaThresholds.convert(thresholds: tau, bias: bias, limit: limit)
            #expect(r.count == T * C)
            // Random raw values, and every boundary with its neighbours an ulp either side.
            var raw = (0..<400).map { _ in Float(uniform() * 40 - 25) }
            for v in r where v.isFinite { raw += [v, v.nextUp, v.nextDown, v.nextUp.nextUp] }
            #expect(agree(tau: tau, bias: bias, limit: limit, raw: raw, r: r) == 0)
            // τ = 0 rows keep every token; τ above the clamp keeps none.
            #expect(r[0..<C].allSatisfy { $0 == -.infinity })
            if limit != nil { #expect(r[T * C - 1] == .infinity) }
        }
        // Without a clamp, r is softplus⁻¹(τ) − b up to a few ulp.
        let r = RawDeltaThresholds.convert(thresholds: tau, bias: bias, limit: nil)
        for i in C..<(T * C - 1) {
            let analytic = Double(tau[i]) + Foundation.log(-Foundation.expm1(-Double(tau[i]))) - Double(bias[i % C])
            #expect(abs(Double(r[i]) - analytic) <= 1e-5 * max(1, abs(analytic)), "\(i): \(r[i]) vs \(analytic)")
        }
    }

    @Test func exportsCarryRawThresholdsOfTheTablesModel() throws {
        let db = CalibrationFixture.database()
        let table = try CalibrationJob(options: CalibrationFixture.options(db: db)).run().tableIDs[0]
        let store = try CalibrationStore(path: db, readOnly: true)
        let raw = try RawDeltaThresholds(store: store, table: table, modelDirectory: CalibrationFixture.model)
        let checkpoint = try ModelCheckpoint(directory: CalibrationFixture.model)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("lm-raw-\(UUID().uuidString).safetensors").path
        try TableExport.export(store: store, table: table, format: .safetensors, to: out, theta: 0.05, rawDeltaThresholds: raw)
        let f = try SafetensorsFile(path: out)
        #expect(f.metadata["raw_dt_threshold"] == RawDeltaThresholds.rule)
        for i in 0..<raw.layers.count {
            let l = try store.tableLayer(table: table, layer: i)
            let bias = try checkpoint.floats("backbone.layers.\(i).mixer.dt_bias")
            #expect(try f.floats("layer.\(i).raw_dt_threshold") == raw.layers[i])
            #expect(raw.layers[i] == RawDeltaThresholds.convert(thresholds: l.deltaThreshold, bias: bias,
                                                                limit: (checkpoint.config.dtLimitLower, checkpoint.config.dtLimitUpper)))
        }
        // Another model's biases are refused unless forced.
        #expect(throws: EvaluationError.self) {
            try RawDeltaThresholds(store: store, table: table, modelDirectory: ModelFixtures.model("mamba2-tiny-hf"))
        }
    }
}
