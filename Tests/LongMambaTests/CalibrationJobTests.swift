import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
@testable import LongMamba

/// The calibration fixture: a tiny Mamba-2 with the fixture tokenizer, and the fixture corpus.
enum CalibrationFixture {
    static let model = ModelFixtures.model("mamba2-tiny-calib")
    static let corpus = ModelFixtures.root.appendingPathComponent("Fixtures/corpus/fixture.jsonl.zst").path

    static func options(db: String, seed: UInt64 = 0) -> CalibrationOptions {
        var o = CalibrationOptions(modelDirectory: model, corpusPaths: [corpus], databasePath: db)
        o.samples(3)
        o.seed = seed
        o.interval = 256
        o.maxLength = 4096
        return o
    }

    static func database() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("lm-cal-\(UUID().uuidString).sqlite").path
    }

    static func tableHash(_ db: String, _ id: Int64) throws -> String {
        try CalibrationStore(path: db, readOnly: true).table(id).contentHash
    }

    /// The `longmamba` executable built next to the test bundle.
    static var executable: URL? { Tool.executable }
}

private extension CalibrationOptions {
    mutating func samples(_ k: Int) { sampleCount = k }
}

@Suite struct CalibrationJobTests {
    @Test func calibratesTheFixtureIntoAStoredTable() throws {
        let db = CalibrationFixture.database()
        var options = CalibrationFixture.options(db: db)
        options.aggregations = [.max, .mean]
        let result = try CalibrationJob(options: options).run()
        #expect(result.complete)
        #expect(result.samplesRecorded == 3)
        #expect(result.tableIDs.count == 2)
        let store = try CalibrationStore(path: db, readOnly: true)
        let table = try store.table(result.tableIDs[0])
        #expect(table.parameters.trainingLength == 256)
        #expect(table.parameters.clampFraction == 0.05)         // Mamba-2 default
        let lookup = try TableLookup(store: store).lookup(table: result.tableIDs[0], length: 2048)
        #expect(lookup.layers.count == 2)
        #expect(lookup.layers.allSatisfy { $0.deltaThreshold.count == 8 })
        let run = try store.run(result.runID)
        #expect(run.status == .complete)
        #expect(run.corpusProvenanceJSON.contains("fixture.jsonl.zst"))
        // Rerunning the finished command records nothing and gives the same tables.
        let again = try CalibrationJob(options: options).run()
        #expect(again.samplesRecorded == 0 && again.samplesResumed == 3)
        #expect(again.tableIDs == result.tableIDs)
        #expect(try store.tables().count == 2)
    }

    @Test func shardsMergedGiveTheSameTableAsOneRun() throws {
        let single = CalibrationFixture.database()
        let whole = try CalibrationJob(options: CalibrationFixture.options(db: single)).run()
        var shardDBs: [String] = []
        for i in 0..<2 {
            let db = CalibrationFixture.database()
            var o = CalibrationFixture.options(db: db)
            o.shardIndex = i
            o.shardCount = 2
            let r = try CalibrationJob(options: o).run()
            #expect(!r.complete)
            #expect(r.samplesRecorded == (i == 0 ? 2 : 1))
            shardDBs.append(db)
        }
        let merged = CalibrationFixture.database()
        let result = try CalibrationMerge.merge(inputs: shardDBs, into: merged, clampFractions: [], aggregations: [.max], interval: 256, maxLength: 4096)
        #expect(result.samples == 3)
        #expect(try CalibrationFixture.tableHash(merged, result.tableIDs[0]) == CalibrationFixture.tableHash(single, whole.tableIDs[0]))
        // The merged run carries the shards' identity and sampled tokens.
        let mergedStore = try CalibrationStore(path: merged, readOnly: true)
        let singleStore = try CalibrationStore(path: single, readOnly: true)
        #expect(try mergedStore.run(result.runID).calibrationKey == singleStore.run(whole.runID).calibrationKey)
        #expect(try mergedStore.sequences(run: result.runID) == singleStore.sequences(run: whole.runID))
        // Rerunning merge, like rerunning calibrate, reuses the finished table instead of adding a
        // duplicate; without --interval/--max-length it takes the grid the shards were started with.
        #expect(try mergedStore.calibratedGrid(run: result.runID)! == (256, 4096))
        let again = try CalibrationMerge.merge(inputs: shardDBs, into: merged, clampFractions: [], aggregations: [.max])
        #expect(again.tableIDs == result.tableIDs)
        #expect(try mergedStore.tables().count == 1)
    }

    @Test func refusesMergingCalibrationsOfDifferentSeeds() throws {
        let a = CalibrationFixture.database(), b = CalibrationFixture.database()
        _ = try CalibrationJob(options: CalibrationFixture.options(db: a, seed: 1)).run()
        _ = try CalibrationJob(options: CalibrationFixture.options(db: b, seed: 2)).run()
        let error = #expect(throws: CalibrationError.self) {
            try CalibrationMerge.merge(inputs: [a, b], into: CalibrationFixture.database(), clampFractions: [], aggregations: [.max], interval: 256, maxLength: 4096)
        }
        guard case let .calibrationMismatch(input, description)? = error else { Issue.record("wrong case: \(String(describing: error))"); return }
        #expect(input == b && description?.contains("seed 2") == true)
        let reason = error?.reason ?? ""
        #expect(reason.hasPrefix("\(b) comes from another calibration ("), "\(reason)")
        #expect(reason.contains("seed 2"), "\(reason)")
        #expect(reason.hasSuffix("shards must share model, tokenizer, corpus, seed, K and L"), "\(reason)")
    }

    @Test func refusesADatabaseOfAnotherSeedAndKeepsItsContents() throws {
        let db = CalibrationFixture.database()
        let first = try CalibrationJob(options: CalibrationFixture.options(db: db, seed: 1)).run()
        do {
            _ = try CalibrationJob(options: CalibrationFixture.options(db: db, seed: 2)).run()
            Issue.record("expected an error")
        } catch let error as CalibrationError {
            guard case let .otherCalibration(database, run, existing, this, differences) = error else { Issue.record("wrong case: \(error)"); return }
            #expect(database == db && run == first.runID)
            #expect(existing?.contains("seed 1") == true && this.contains("seed 2"))
            #expect(differences == ["seed: 1 → 2"])
            #expect(error.description.contains("they differ in seed: 1 → 2"), "\(error.description)")
        }
        #expect(try CalibrationStore(path: db, readOnly: true).tables().map(\.id) == first.tableIDs)
    }

    @Test func refusalOfAnotherCalibrationNamesThePackingThatDiffers() throws {
        let db = CalibrationFixture.database()
        _ = try CalibrationJob(options: CalibrationFixture.options(db: db)).run()
        var packed = CalibrationFixture.options(db: db)
        packed.packing = .packed
        let error = #expect(throws: CalibrationError.self) { try CalibrationJob(options: packed).run() }
        guard case let .otherCalibration(_, _, _, _, differences)? = error else { Issue.record("wrong case: \(String(describing: error))"); return }
        #expect(differences == ["packing: document → packed"])
        #expect(error?.reason.hasSuffix("they differ in packing: document → packed") == true, "\(error?.reason ?? "")")
    }

    @Test func solveSweepAndTuneDefaultToTheGridTheRunWasCalibratedWith() throws {
        let db = CalibrationFixture.database()
        let result = try CalibrationJob(options: CalibrationFixture.options(db: db)).run()   // interval 256, up to 4096
        let store = try CalibrationStore(path: db)
        #expect(try store.calibratedGrid(run: result.runID)! == (256, 4096))
        let service = TableService(store: store)
        let p = try service.parameters(run: result.runID, clampFraction: 0.1, aggregation: .max)
        #expect(p.interval == 256 && p.maxLength == 4096 && p.lengths.first == 256)
        // An explicit grid still wins, one part at a time.
        let q = try service.parameters(run: result.runID, clampFraction: 0.1, aggregation: .max, interval: 512)
        #expect(q.interval == 512 && q.maxLength == 4096)
        // A run of an older tool has no stored grid: its first table's grid is the default.
        try store.write { db in try db.execute(sql: "UPDATE calibration_runs SET recording_metadata_json = '{}'") }
        #expect(try store.calibratedGrid(run: result.runID)! == (256, 4096))
    }

    @Test func refusesATokenizerBeyondTheModelsVocabularyBeforeSampling() throws {
        // The model's own tokenizer with one added token past its 2048 embedding rows.
        let source = CalibrationFixture.model + "/tokenizer.json"
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: source))) as! [String: Any]
        var added = json["added_tokens"] as! [[String: Any]]
        added.append(["id": 2100, "content": "<|extra|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true])
        json["added_tokens"] = added
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lm-tok-\(UUID().uuidString).json").path
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
        var o = CalibrationFixture.options(db: CalibrationFixture.database())
        o.tokenizerPath = path
        o.corpusPaths = ["/nonexistent/corpus.jsonl.zst"]   // never reached: refused before the corpus is even listed
        let error = #expect(throws: CalibrationError.self) { try CalibrationJob(options: o).run() }
        #expect(error == .tokenizerBeyondVocabulary(tokenizer: path, largestId: 2100, vocabulary: 2048, modelDirectory: o.modelDirectory))
        #expect(error?.description.contains("ids 0 to 2047") == true)
        #expect(!FileManager.default.fileExists(atPath: o.databasePath))
    }

    @Test func refusesAModelWithoutTokenizer() throws {
        var o = CalibrationFixture.options(db: CalibrationFixture.database())
        o.modelDirectory = ModelFixtures.model("mamba2-tiny-hf")
        // mamba2-tiny-hf's config has no training length either, and that is checked first ...
        let noLength = #expect(throws: CalibrationError.self) { try CalibrationJob(options: o).run() }
        #expect(noLength == .noTrainingLength(modelDirectory: o.modelDirectory))
        #expect(noLength?.reason == "\(o.modelDirectory): the config does not say the model's training length")
        // ... so give L to reach the tokenizer check.
        o.length = 256
        let error = #expect(throws: CalibrationError.self) { try CalibrationJob(options: o).run() }
        #expect(error == .noTokenizer(modelDirectory: o.modelDirectory))
        #expect(error?.reason == "\(o.modelDirectory) has no tokenizer.json and no --tokenizer was given")
        #expect(error?.hint?.contains("--tokenizer") == true)
    }

    @Test func refusesACorpusThatCannotYieldTheSamples() throws {
        var o = CalibrationFixture.options(db: CalibrationFixture.database())
        o.length = 100_000
        #expect(throws: CorpusError.notEnoughDocuments(eligible: 0, needed: 3, criteria: "at least 100000 tokens")) { try CalibrationJob(options: o).run() }
        #expect(try CalibrationStore(path: o.databasePath, readOnly: true).runs().isEmpty)
    }

    @Test func resumesAfterTheProcessIsKilledAndEndsWithTheSameTable() throws {
        guard let exe = CalibrationFixture.executable else {
            Issue.record("longmamba executable not built next to the tests (run `swift build` first)")
            return
        }
        let reference = CalibrationFixture.database()
        let uninterrupted = try CalibrationJob(options: CalibrationFixture.options(db: reference)).run()

        let db = CalibrationFixture.database()
        let arguments = ["calibrate", "--model", CalibrationFixture.model, "--corpus", CalibrationFixture.corpus, "--db", db,
                         "--samples", "3", "--interval", "256", "--max-length", "4096"]
        let child = Process()
        child.executableURL = exe
        child.arguments = arguments
        child.environment = ProcessInfo.processInfo.environment.merging(["LONGMAMBA_TEST_PAUSE_AFTER_SAMPLE": "30"]) { $1 }
        let stderr = Pipe()
        child.standardError = stderr
        child.standardOutput = FileHandle.nullDevice
        try child.run()
        // Wait for the first committed sample, then kill -9 while the child pauses.
        var seen = ""
        while !seen.contains("committed") {
            let chunk = stderr.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            seen += String(decoding: chunk, as: UTF8.self)
        }
        kill(child.processIdentifier, SIGKILL)
        child.waitUntilExit()
        #expect(child.terminationReason == .uncaughtSignal)
        let partial = try CalibrationStore(path: db, readOnly: true)
        #expect(try partial.tables().isEmpty)
        #expect(try partial.run(1).status == .recording)

        let resumed = try CalibrationJob(options: CalibrationFixture.options(db: db)).run()
        #expect(resumed.samplesResumed == 1)
        #expect(resumed.samplesRecorded == 2)
        #expect(try CalibrationFixture.tableHash(db, resumed.tableIDs[0]) == CalibrationFixture.tableHash(reference, uninterrupted.tableIDs[0]))
    }
}

@Suite struct ReportAndEvaluationTests {
    @Test func reportIsOneSelfContainedPageWithWellFormedPlots() throws {
        let db = CalibrationFixture.database()
        var o = CalibrationFixture.options(db: db)
        o.sampleCount = 2; o.maxLength = 2048
        let result = try CalibrationJob(options: o).run()
        let store = try CalibrationStore(path: db, readOnly: true)
        let curve = CalibrationReport.PerplexityCurve(lengths: [256, 512], vanilla: [10, 20], longMamba: [10, 12])
        let html = try CalibrationReport.html(store: store, table: result.tableIDs[0], perplexity: curve)
        #expect(!html.contains("<script"))
        #expect(!html.contains("src=\"http"))
        var svgs: [String] = []
        var rest = html[...]
        while let start = rest.range(of: "<svg"), let end = rest.range(of: "</svg>", range: start.upperBound..<rest.endIndex) {
            svgs.append(String(rest[start.lowerBound..<end.upperBound]))
            rest = rest[end.upperBound...]
        }
        // 2 layers + Δ distributions + τ + α + perplexity
        #expect(svgs.count == 6)
        for svg in svgs {
            let parser = XMLParser(data: Data(svg.utf8))
            #expect(parser.parse(), "SVG is not well-formed XML: \(parser.parserError.map { "\($0)" } ?? "")")
        }
        #expect(html.contains("model_fingerprint"))
        #expect(html.contains("perplexity"))
    }

    @Test func evaluationWithATableFiltersOnlyLongWindowsAndKeepsVanillaIntact() throws {
        let db = CalibrationFixture.database()
        var o = CalibrationFixture.options(db: db)
        o.sampleCount = 2; o.maxLength = 1024
        let result = try CalibrationJob(options: o).run()
        let model = try MambaModel(directory: o.modelDirectory)
        let stored = try CalibrationStore(path: db, readOnly: true)
        let tokens = try stored.sequences(run: try #require(stored.runs().first?.id)).flatMap { $0.map(Int.init) }
        var evaluation = PerplexityEvaluation(model: model, table: try StoredTableSource(store: CalibrationStore(path: db, readOnly: true), table: result.tableIDs[0]))
        evaluation.theta = 0.01
        evaluation.chunk = 100  // several chunks per window
        let points = try evaluation.run(tokens: tokens, lengths: [256, 512])
        // 256 < 1.5 L: not filtered, identical; 512: filtered with the 512 row.
        #expect(points[0].longMambaPerplexity == points[0].vanillaPerplexity)
        #expect(points[0].tabulatedLength == nil)
        #expect(points[1].tabulatedLength == 512)
        #expect(points[1].longMambaPerplexity != points[1].vanillaPerplexity)
        #expect((points[1].keptShare ?? 1) < 1)
        // Vanilla perplexity does not depend on the chunk size.
        evaluation.chunk = 512
        let whole = try evaluation.run(tokens: tokens, lengths: [512])
        #expect(abs(whole[0].vanillaPerplexity - points[1].vanillaPerplexity) / points[1].vanillaPerplexity < 1e-5)
        // Beyond the table: refused unless allowed.
        let beyond = #expect(throws: EvaluationError.self) { try evaluation.run(tokens: tokens + tokens + tokens, lengths: [1200]) }
        #expect(beyond == .beyondTable(length: 1200, largest: 1024))
        #expect(beyond?.description.hasPrefix("length 1200 is beyond the table's largest length 1024;") == true, "\(String(describing: beyond))")
        #expect(beyond?.description.contains("--allow-beyond-table") == true)
        let short = #expect(throws: EvaluationError.self) { try evaluation.run(tokens: Array(tokens.prefix(100)), lengths: [256]) }
        #expect(short == .textTooShort(tokens: 100, length: 256))
        #expect(short?.description == "the text has 100 tokens, fewer than the requested length 256")
    }
}

@Suite struct LongMambaPrefillTests {
    @Test func prefillFiltersFromOnePointFiveTimesLWithTheNearestRowAndRefusesOtherModels() throws {
        let db = CalibrationFixture.database()
        var o = CalibrationFixture.options(db: db)
        o.sampleCount = 2; o.maxLength = 1024
        let id = try CalibrationJob(options: o).run().tableIDs[0]
        let source = try StoredTableSource(store: CalibrationStore(path: db, readOnly: true), table: id)
        let model = try MambaModel(directory: o.modelDirectory)
        let L = source.trainingLength
        #expect(LongMambaPrefill.defaultFilterStart(trainingLength: L) == L * 3 / 2)
        let below = try LongMambaPrefill(table: source, model: model, length: L * 3 / 2 - 1, theta: 0.01)
        #expect(below.run == nil && below.tabulatedLength == nil)
        let at = try LongMambaPrefill(table: source, model: model, length: L * 3 / 2, theta: 0.01)
        #expect(at.run != nil)
        #expect(at.tabulatedLength == source.lengths[LengthRounding.nearestIndex(of: L * 3 / 2, in: source.lengths)!])
        #expect(at.metadata(tableName: "t")["longmamba_tabulated_length"] == at.tabulatedLength.map(String.init))
        let early = try LongMambaPrefill(table: source, model: model, length: 10, theta: 0.01, filterFrom: 10)
        #expect(early.run != nil)
        let zero = #expect(throws: EvaluationError.self) { try LongMambaPrefill(table: source, model: model, length: 600, theta: 0) }
        #expect(zero == .nonPositiveTheta(0))
        #expect(zero?.description == "θ must be > 0, got 0.0")
        let other = try MambaModel(directory: ModelFixtures.model("mamba2-tiny-hf"))
        let refused = #expect(throws: EvaluationError.self) { try source.checkModel(fingerprint: other.checkpoint.fingerprint(), force: false) }
        #expect(refused == .tableForAnotherModel(table: source.modelFingerprint!, model: "this one", modelFingerprint: other.checkpoint.fingerprint()))
        #expect(refused?.description == "the table was calibrated on model \(source.modelFingerprint!.prefix(12)), not on this one (\(other.checkpoint.fingerprint().prefix(12))); pass --force to use it anyway")
        // Forced onto a model of the same shape: accepted. Onto a Mamba-1 with 128 channels per
        // layer: refused by the shape check instead.
        try source.checkModel(fingerprint: other.checkpoint.fingerprint(), force: true)
        #expect(try LongMambaPrefill(table: source, model: other, length: 600, theta: 0.01).run != nil)
        let mamba1 = try MambaModel(directory: ModelFixtures.model("mamba-tiny-hf"))
        let mismatch = #expect(throws: LongMambaFilterError.self) { try LongMambaPrefill(table: source, model: mamba1, length: 600, theta: 0.01) }
        #expect(mismatch == .modelChannelMismatch(layer: 0, tableChannels: 8, modelChannels: 128), "\(String(describing: mismatch))")
        #expect(mismatch?.description == "table layer 0 has 8 channels, the model 128", "\(String(describing: mismatch))")
    }
}

@Suite struct ExportedTableSourceTests {
    @Test func anExportedTableGivesTheSameFilterAsTheStoredOne() throws {
        let db = CalibrationFixture.database()
        var o = CalibrationFixture.options(db: db)
        o.sampleCount = 2; o.maxLength = 2048
        let table = try CalibrationJob(options: o).run().tableIDs[0]
        let store = try CalibrationStore(path: db, readOnly: true)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lm-export-\(UUID().uuidString).safetensors").path
        try TableExport.export(store: store, table: table, format: .safetensors, to: path)
        let exported = try ExportedTableSource(path: path), stored = try StoredTableSource(store: store, table: table)
        #expect(exported.lengths == stored.lengths)
        #expect(exported.trainingLength == 256)
        #expect(exported.modelFingerprint == stored.modelFingerprint)
        for length in [300, 640, 1500, 5000] {
            let a = try exported.filter(length: length, theta: 0.02), b = try stored.filter(length: length, theta: 0.02)
            #expect(a.tabulatedLength == b.tabulatedLength)
            #expect(a.filter.layers.map(\.deltaThreshold) == b.filter.layers.map(\.deltaThreshold))
            #expect(a.filter.layers.map(\.globalChannel) == b.filter.layers.map(\.globalChannel))
            // The whole-prompt methods read the α row and the decay budgets from either.
            for method in [LongMambaMethod.alpha, .bound, .norm] {
                let x = try exported.filter(length: length, theta: 0.02, method: method), y = try stored.filter(length: length, theta: 0.02, method: method)
                #expect(x.filter.method == method && y.filter.method == method)
                #expect(x.filter.layers.map(\.keptFraction) == y.filter.layers.map(\.keptFraction))
                #expect(x.filter.layers.map(\.decayBudget) == y.filter.layers.map(\.decayBudget))
                #expect(method == .alpha ? !y.filter.layers[0].keptFraction.isEmpty : !y.filter.layers[0].decayBudget.isEmpty)
            }
        }
    }
}
