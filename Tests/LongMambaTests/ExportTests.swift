import Foundation
import Testing
@testable import LongMamba

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
        let all = try JSONSerialization.jsonObject(with: Data((f.metadata["longmamba_table"] ?? "").utf8)) as? [String: String]
        #expect(all?["model_fingerprint"] == "synthetic-mamba2-2x5")
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
        #expect((root?["metadata"] as? [String: String])?["content_hash"] == (try store.table(id).contentHash))
    }

    @Test func artifactExportWritesTheAuthorsLayoutAsTorchZipFiles() throws {
        let (store, id, dir) = try solvedStore()
        let out = "\(dir)/artifacts"
        try TableExport.export(store: store, table: id, format: .longmambaArtifacts, to: out)
        // The export states the table and the rules the authors' code will apply to it.
        let described = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(out)/longmamba-table.json"))) as? [String: Any]
        #expect((described?["metadata"] as? [String: String])?["content_hash"] == (try store.table(id).contentHash))
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
