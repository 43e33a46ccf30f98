import Foundation
import GRDB
import Testing
@testable import LongMamba

/// The per-layer scale methods (delta_scale, a_power): applied in the runner, stored as tables,
/// calibrated by SPSA with every step committed, compared by tune.
@Suite struct ScaleMethodTests {
    static let model = ModelFixtures.model("mamba2-tiny-calib")
    static let corpus = ModelFixtures.root.appendingPathComponent("Fixtures/corpus/fixture.jsonl.zst").path

    func temporaryPath(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("lm-scales-\(name)-\(UUID().uuidString)").path
    }

    func calibrated() throws -> (db: String, run: Int64) {
        let db = temporaryPath("store") + ".sqlite"
        var o = CalibrationOptions(modelDirectory: Self.model, corpusPaths: [Self.corpus], databasePath: db)
        o.sampleCount = 2; o.interval = 256; o.maxLength = 1024
        return (db, try CalibrationJob(options: o).run().runID)
    }

    func scaleOptions(_ db: String, _ run: Int64, _ method: ScaleMethod, steps: Int = 3) -> ScaleCalibrationOptions {
        var o = ScaleCalibrationOptions(modelDirectory: Self.model, corpusPaths: [Self.corpus], databasePath: db, runID: run, method: method, lengths: [768, 512])
        o.sampleCount = 2; o.steps = steps
        return o
    }

    func logits(_ model: MambaModel, _ tokens: [Int], scales: LayerScales? = nil, filter: DeltaFilter? = nil) throws -> [Float] {
        var none = DiscardingRecorder()
        return try model.forward(tokens: tokens, recorder: &none, computeLogits: true, deltaFilter: filter, layerScales: scales)
    }

    @Test func unitScalesAreTheVanillaModelAndDeltaScaleMultipliesEveryDelta() throws {
        let model = try MambaModel(directory: Self.model)
        let tokens = (0..<200).map { ($0 * 31 + 7) % 1000 }
        let vanilla = try logits(model, tokens)
        for method in ScaleMethod.allCases {
            #expect(try logits(model, tokens, scales: LayerScales(method: method, scales: [1, 1])) == vanilla)
        }
        // Δ' = s_l · Δ, written independently as a Δ filter.
        let s: [Float] = [0.7, 1.6]
        let byFilter = try logits(model, tokens, filter: { layer, delta, _, _ in for i in delta.indices { delta[i] *= s[layer] } })
        let scaled = try logits(model, tokens, scales: LayerScales(method: .deltaScale, scales: s))
        #expect(scaled == byFilter)
        #expect(scaled != vanilla)
    }

    @Test(arguments: ["mamba2-tiny-calib", "mamba-tiny-hf", "zamba2-tiny-calib"])
    func aPowerEqualsACheckpointWhoseALogIsScaled(name: String) throws {
        // A' = −exp(s · A_log): the same as running a copy of the checkpoint with A_log := s · A_log
        // (Mamba-2: A_log [H]; Mamba-1: A_log [d_inner, N]; Zamba2: hybrid layers included).
        let source = ModelFixtures.model(name)
        let layers = try ModelCheckpoint(directory: source).config.layerCount
        let s: [Float] = (0..<layers).map { [0.5, 2.0, 1.3][$0 % 3] }
        let dir = temporaryPath("apower")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for f in ["config.json", "tokenizer.json"] where FileManager.default.fileExists(atPath: source + "/" + f) {
            try FileManager.default.copyItem(atPath: source + "/" + f, toPath: dir + "/" + f)
        }
        let file = try SafetensorsFile(path: source + "/model.safetensors")
        var writer = SafetensorsWriter(metadata: file.metadata)
        for t in file.tensors {
            // backbone.layers.{i}.mixer.A_log; Zamba2: model.layers.{i}.mamba.A_log, model.layers.{i}.mamba_decoder.mamba.A_log
            if t.name.hasSuffix(".A_log"), let layer = Int(t.name.split(separator: ".")[2]) {
                writer.add(t.name, shape: t.shape, floats: try file.floats(t.name).map { s[layer] * $0 })
            } else {
                writer.add(t.name, dtype: t.dtype, shape: t.shape, data: Data(file.bytes(of: t)))
            }
        }
        try writer.write(to: dir + "/model.safetensors")
        let tokens = (0..<150).map { ($0 * 13 + 5) % 500 }
        let powered = try logits(try MambaModel(directory: source), tokens, scales: LayerScales(method: .aPower, scales: s))
        let rewritten = try logits(try MambaModel(directory: dir), tokens)
        #expect(powered == rewritten)
    }

    @Test func theSPSAPerturbationIsTheDocumentedSplitMix64Stream() {
        // seed ^ S·φ ^ k·ψ, then the top bit of each draw: 0 → +1.
        let seed: UInt64 = 7, S = 512, k = 3
        var state = seed ^ (UInt64(S) &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(k) &* 0xBF58_476D_1CE4_E5B9)
        var expected: [Float] = []
        for _ in 0..<5 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            expected.append((z ^ (z >> 31)) >> 63 == 0 ? 1 : -1)
        }
        #expect(SPSA.perturbation(seed: seed, length: S, step: k, layers: 5) == expected)
        #expect(abs(SPSA.stepSize(0.5, stability: 5, step: 1) - 0.5 / pow(6, 0.602)) < 1e-15)
        #expect(abs(SPSA.perturbationSize(0.1, step: 4) - 0.1 / pow(4, 0.101)) < 1e-15)
        // The gain makes step j move every log-scale by exactly step_size.
        let a = SPSA.gain(stepSize: 0.1, stability: 5, step: 1, lossPlus: 2.01, lossMinus: 2.0, perturbation: 0.1)
        #expect(abs(SPSA.stepSize(a, stability: 5, step: 1) * 0.01 / (2 * SPSA.perturbationSize(0.1, step: 1)) - 0.1) < 1e-12)
    }

    @Test func aStepWithANonFiniteLossIsRejectedAndMovesAreClippedAndBounded() {
        let u: [Float] = [0, 2.95, -1]
        let delta: [Float] = [1, -1, 1]
        #expect(SPSA.update(u, perturbation: delta, lossPlus: .nan, lossMinus: 2, perturbationSize: 0.1, stepSize: 1, maximumMove: 0.1) == nil)
        #expect(SPSA.update(u, perturbation: delta, lossPlus: 2, lossMinus: .infinity, perturbationSize: 0.1, stepSize: 1, maximumMove: 0.1) == nil)
        // ĝ = (2.2 − 2.0) / (2 · 0.1 · δ) = ±1; a·ĝ = ±0.05 within the clip.
        let small = SPSA.update(u, perturbation: delta, lossPlus: 2.2, lossMinus: 2.0, perturbationSize: 0.1, stepSize: 0.05, maximumMove: 0.1)!
        #expect(small == [Float(-0.05), Float(2.95 + 0.05), Float(-1.05)])
        // A large step is clipped to ±0.1, and u stays within ±3.
        let large = SPSA.update(u, perturbation: delta, lossPlus: 12, lossMinus: 2, perturbationSize: 0.1, stepSize: 1, maximumMove: 0.1)!
        #expect(large == [Float(-0.1), Float(3), Float(-1.1)])
    }

    @Test func calibrationStoresEveryStepResumesToTheSameTableAndKeepsTheBestPoint() throws {
        let (db, run) = try calibrated()
        let first = try ScaleCalibrationJob(options: scaleOptions(db, run, .deltaScale)).run()
        let table = try #require(first.table)
        #expect(first.stepsRun == 6 && first.forwardPasses == 2 * (1 + 2 * 3) * 2)
        let store = try CalibrationStore(path: db)
        let info = try store.scaleTable(table)
        #expect(info.method == .deltaScale && info.lengths == [512, 768] && info.layerCount == 2)
        #expect(info.parameters.trainingLength == 256 && info.parameters.sampleCount == 2 && info.parameters.stability == 1)
        let steps = try store.scaleSteps(job: first.job, length: 768)
        #expect(steps.map(\.step) == [0, 1, 2, 3] && steps[0].outcome == "start")
        // The table holds exp(best u), and best is the lowest loss evaluated.
        let losses = [steps[0].bestLoss] + steps.dropFirst().flatMap { [$0.lossPlus!, $0.lossMinus!] }
        #expect(steps.last!.bestLoss == losses.min()!)
        #expect(try store.scales(table: table).map { $0[1] } == SPSA.scales(steps.last!.bestLogScales))

        // A kill after step 1: the steps after it are gone; the same command recomputes them
        // bit for bit and finds the same table.
        let kept = steps
        try DatabaseQueue(path: db).write { try $0.execute(sql: "DELETE FROM scale_steps WHERE length = 768 AND step > 1") }
        let resumed = try ScaleCalibrationJob(options: scaleOptions(db, run, .deltaScale)).run()
        #expect(resumed.job == first.job && resumed.table == table && resumed.stepsRun == 2)
        let again = try CalibrationStore(path: db).scaleSteps(job: first.job, length: 768)
        #expect(again.map(\.logScales) == kept.map(\.logScales) && again.map(\.lossPlus) == kept.map(\.lossPlus))
        // A finished job reruns nothing.
        #expect(try ScaleCalibrationJob(options: scaleOptions(db, run, .deltaScale)).run().stepsRun == 0)
    }

    @Test func scaleTablesAreEvaluatedAndTunedBesideThresholdTables() throws {
        let (db, run) = try calibrated()
        let deltaTable = try #require(try ScaleCalibrationJob(options: scaleOptions(db, run, .deltaScale, steps: 1)).run().table)
        let powerTable = try #require(try ScaleCalibrationJob(options: scaleOptions(db, run, .aPower, steps: 1)).run().table)
        // eval with a scale table: below the filter start (384) vanilla, above it the table's scales.
        let tokens = temporaryPath("tokens") + ".txt"
        try (0..<1200).map { String(($0 * 37 + 11) % 1500) }.joined(separator: " ").write(toFile: tokens, atomically: true, encoding: .utf8)
        var e = EvaluationOptions(modelDirectory: Self.model, text: .tokens(path: tokens), lengths: [256, 512])
        e.table = .stored(database: db, table: powerTable)
        let points = try EvaluationJob(options: e).run().points
        #expect(points[0].tabulatedLength == nil && points[0].longMambaPerplexity == points[0].vanillaPerplexity)
        #expect(points[1].tabulatedLength == 512 && points[1].longMambaPerplexity != points[1].vanillaPerplexity)
        // Beyond the largest calibrated length: refused unless allowed.
        e.lengths = [1000]
        #expect(throws: EvaluationError.beyondScaleTable(length: 1000, largest: 768)) { try EvaluationJob(options: e).run() }

        var o = TuneOptions(databasePath: db, runID: run, modelDirectory: Self.model, thetas: [0.05], clampFractions: [0.05],
                            aggregations: [.max], lengths: [512, 768], task: .perplexity(text: .tokens(path: tokens), windows: 1))
        o.interval = 256; o.maxLength = 1024
        o.scaleMethods = [.deltaScale, .aPower]
        let tuned = try TuneJob(options: o).run()
        #expect(tuned.ranked.count == 4)
        let scaleRows = tuned.ranked.filter { $0.scaleMethod != nil }
        #expect(Set(scaleRows.compactMap(\.table)) == [deltaTable, powerTable] && scaleRows.allSatisfy { $0.theta == nil })
        #expect(tuned.pointsEvaluated == 8)
        let stored = try CalibrationStore(path: db).evaluations().filter { $0.tableID == deltaTable }
        #expect(stored.count == 2 && stored.allSatisfy { $0.theta == nil && $0.detailJSON.hasSuffix(",\"method\":\"delta_scale\"}") })
        // Every point is reused by a second tune.
        let second = try TuneJob(options: o).run()
        #expect(second.pointsEvaluated == 0 && second.pointsReused == 8)
        #expect(second.ranked.map(\.values) == tuned.ranked.map(\.values))
    }

    @Test func anExportedScaleTableAppliesAsTheStoredOneAndLooksUpTheNearestLength() throws {
        let (db, run) = try calibrated()
        let store = try CalibrationStore(path: db)
        let p = ScaleTableParameters(lengths: [512, 1024], perturbation: 0.1, sampleCount: 1, samplesHash: "h", seed: 0, stability: 1, stepSize: 0.1, steps: 1, trainingLength: 256)
        let id = try store.saveScaleTable(run: run, method: .deltaScale, parameters: p, scales: [[1.25, 0.5], [0.75, 2]])
        let file = temporaryPath("export") + ".safetensors"
        try TableExport.export(store: store, table: id, format: .safetensors, to: file)
        let stored = try StoredScaleSource(store: store, table: id), exported = try ExportedScaleSource(file: SafetensorsFile(path: file))
        for S in [400, 700, 800, 5000] {
            #expect(try stored.scales(length: S).scales == exported.scales(length: S).scales)
        }
        #expect(try exported.scales(length: 768).tabulatedLength == 512)   // halfway: the shorter row
        #expect(try exported.scales(length: 900).scales.scales == [0.5, 2])
        #expect(exported.contentHash == stored.contentHash && exported.trainingLength == 256)
        let json = try ScaleTableExport.lookupJSON(store: store, table: id, length: 700, layer: 1)
        #expect(json.contains("\"tabulated_length\":512") && json.contains("{\"layer\":1,\"scale\":0.75}"))
        #expect(throws: ExportError.methodNotInFormat(path: file, method: "delta_scale", format: "longmamba-artifacts")) {
            try TableExport.export(store: store, table: id, format: .longmambaArtifacts, to: file)
        }
    }

    @Test func exportsOfThresholdTablesSayWhatEachModeDoesAndWhichWasChosen() throws {
        let (db, _) = try calibrated()
        let store = try CalibrationStore(path: db)
        let id = try store.tables()[0].id
        let file = temporaryPath("modes") + ".safetensors"
        try TableExport.export(store: store, table: id, format: .safetensors, to: file, mode: .bound)
        let metadata = try SafetensorsFile(path: file).metadata
        #expect(metadata["mode"] == "bound" && metadata["apply"] == LookupResult.modeRules["bound"])
        let modes = try JSONSerialization.jsonObject(with: Data(metadata["modes"]!.utf8)) as? [String: String]
        #expect(Set(modes?.keys ?? [:].keys) == Set(LongMambaMethod.allCases.map(\.rawValue)))
        let lookup = try TableLookup(store: store).lookup(table: id, length: 700)
        let budget = try store.tableLayer(table: id, layer: 0).decayBudget
        #expect(lookup.method == "longmamba" && lookup.layers[0].decayBudget == budget)
    }

    @Test func aTableOfAnUnknownMethodIsRefusedByIdAndLeftInTheStore() throws {
        let (db, run) = try calibrated()
        let store = try CalibrationStore(path: db)
        let thresholds = try store.tables()
        try store.write { db in
            try db.execute(sql: """
                INSERT INTO threshold_tables (run_id, method, parameters_json, layer_count, length_count, content_hash, tool_version, schema_version, created_at, row_kind)
                VALUES (?, 'future_method', '{}', 2, 1, 'x', '9.9', 9, '2030-01-01', 'per_token')
                """, arguments: [run])
        }
        let fresh = try CalibrationStore(path: db)
        #expect(try fresh.tables() == thresholds)          // listings skip it
        let id = try #require(try fresh.tableKinds().last?.id)
        #expect(try fresh.tableKind(id) == .unknown(method: "future_method", rowKind: "per_token"))
        #expect(throws: StoreError.unknownTableMethod(path: db, id: id, method: "future_method", rowKind: "per_token")) { try fresh.table(id) }
        #expect(throws: StoreError.unknownTableMethod(path: db, id: id, method: "future_method", rowKind: "per_token")) { try fresh.scaleTable(id) }
        #expect(throws: StoreError.unknownTableMethod(path: db, id: id, method: "future_method", rowKind: "per_token")) {
            try TableChoice.stored(database: db, table: id).open()
        }
        #expect(try fresh.tableKinds().count == thresholds.count + 1)   // still there
        // A threshold table asked for as scales, and the reverse, say what they are.
        #expect(throws: StoreError.notAScaleTable(path: db, id: thresholds[0].id, kind: "a LongMamba threshold table")) { try fresh.scaleTable(thresholds[0].id) }
    }

    @Test func badScaleTablesAreRefusedAndAlteredOnesDetected() throws {
        let (db, run) = try calibrated()
        let store = try CalibrationStore(path: db)
        let p = ScaleTableParameters(lengths: [512], perturbation: 0.1, sampleCount: 1, samplesHash: "h", seed: 0, stability: 1, stepSize: 0.1, steps: 1, trainingLength: 256)
        #expect(throws: StoreError.invalidScaleTable(path: db, problem: "layer 1 has the scale nan (scales are finite and > 0)")) {
            try store.saveScaleTable(run: run, method: .aPower, parameters: p, scales: [[1], [.nan]])
        }
        #expect(throws: StoreError.invalidScaleTable(path: db, problem: "layer 0 has 2 scales for 1 lengths")) {
            try store.saveScaleTable(run: run, method: .aPower, parameters: p, scales: [[1, 2], [1]])
        }
        let id = try store.saveScaleTable(run: run, method: .aPower, parameters: p, scales: [[1.5], [0.5]])
        #expect(try store.saveScaleTable(run: run, method: .aPower, parameters: p, scales: [[1.5], [0.5]]) == id)   // stored once
        // A hand edit past the triggers changes the content: detected on the next open.
        try DatabaseQueue(path: db).write { db in
            try db.execute(sql: "DROP TRIGGER table_scales_are_immutable")
            try db.execute(sql: "UPDATE table_scales SET scales_f32 = ? WHERE table_id = ? AND layer_index = 1", arguments: [[Float(0.25)].littleEndianData, id])
        }
        #expect(throws: (any Error).self) { try CalibrationStore(path: db).scales(table: id) }
        do { _ = try CalibrationStore(path: db).scaleTable(id); Issue.record("altered table read") } catch let e as StoreError {
            guard case .alteredTable = e else { Issue.record("\(e)"); return }
        }
    }

    @Test func calibrationRefusesAnotherModelAndBadSettings() throws {
        let (db, run) = try calibrated()
        var o = scaleOptions(db, run, .deltaScale)
        o.modelDirectory = ModelFixtures.model("mamba2-tiny-hf")
        #expect(throws: (any Error).self) { try ScaleCalibrationJob(options: o).run() }
        o = scaleOptions(db, run, .deltaScale); o.lengths = []
        #expect(throws: ScaleCalibrationError.noLengths) { try ScaleCalibrationJob(options: o).run() }
        o = scaleOptions(db, run, .deltaScale); o.perturbation = 0
        #expect(throws: (any Error).self) { try ScaleCalibrationJob(options: o).run() }
        #expect(try CalibrationStore(path: db).scaleTables().isEmpty)
    }
}
