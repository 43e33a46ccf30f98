import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
@testable import LongMamba

@Suite struct PasskeyTests {
    static let model = ModelFixtures.model("mamba2-tiny-calib")

    func prompts(haystack: [Int]? = nil) throws -> PasskeyPrompts {
        try PasskeyPrompts(tokenizer: BPETokenizer(contentsOf: BPETokenizer.defaultPath(modelDirectory: Self.model)), haystack: haystack)
    }

    @Test func promptsHaveTheExactLengthAndTheNeedleAtTheDepth() throws {
        let p = try prompts()
        let tokenizer = p.tokenizer
        let key = PasskeyPrompts.key(seed: 3, length: 600, depth: 0.5, trial: 1)
        #expect(key.count == 5 && Int(key)! >= 10_000)
        #expect(key != PasskeyPrompts.key(seed: 3, length: 600, depth: 0.5, trial: 2))
        let needle = tokenizer.encode(PasskeyPrompts.needle(key))
        var starts: [Int] = []
        for depth in [0.0, 0.5, 1.0] {
            let (tokens, start) = try p.prompt(length: 600, depth: depth, key: key)
            #expect(tokens.count == 600)
            #expect(Array(tokens[start..<(start + needle.count)]) == needle)
            #expect(Array(tokens.suffix(p.questionTokens.count)) == p.questionTokens)
            let text = try tokenizer.decode(tokens)
            #expect(text.hasPrefix(PasskeyPrompts.instruction) && text.hasSuffix(PasskeyPrompts.question))
            #expect(text.contains("The pass key is \(key). Remember it. \(key) is the pass key."))
            starts.append(start)
        }
        // Depth 0 right after the instruction, 1 right before the question, 0.5 between, on a filler boundary.
        #expect(starts[0] == p.instructionTokens.count)
        #expect(starts[2] == 600 - p.questionTokens.count - needle.count)
        #expect(starts[0] < starts[1] && starts[1] < starts[2])
        #expect((starts[1] - starts[0]) % p.haystackUnit.count == 0)
    }

    @Test func refusesBadDepthsShortLengthsAndEmptyHaystacks() throws {
        let p = try prompts()
        #expect(throws: PasskeyError.depthOutOfRange(1.5)) { try p.prompt(length: 600, depth: 1.5, key: "12345") }
        let needed = p.instructionTokens.count + p.tokenizer.encode(PasskeyPrompts.needle("12345")).count + p.questionTokens.count
        #expect(throws: PasskeyError.lengthTooShort(length: 20, needed: needed)) { try p.prompt(length: 20, depth: 0, key: "12345") }
        #expect(throws: PasskeyError.emptyHaystack) { try self.prompts(haystack: []) }
        // A short custom haystack is repeated (and says so).
        let custom = try prompts(haystack: p.tokenizer.encode(" In the beginning was the word."))
        #expect(custom.repeatsHaystack(length: 600))
        #expect(try custom.prompt(length: 600, depth: 0.3, key: "12345").tokens.count == 600)
    }

    @Test func answersAreTheFirstRunOfDigits() {
        #expect(PasskeyPrompts.answer(in: " 12345. Remember") == "12345")
        #expect(PasskeyPrompts.answer(in: " the key 987 and 12") == "987")
        #expect(PasskeyPrompts.answer(in: " no digits") == nil)
    }

    @Test func belowTheFilterStartLongMambaIsVanillaAndAboveItFilters() throws {
        let db = FileManager.default.temporaryDirectory.appendingPathComponent("lm-pk-\(UUID().uuidString).sqlite").path
        var o = CalibrationOptions(modelDirectory: Self.model, corpusPaths: [ModelFixtures.root.appendingPathComponent("Fixtures/corpus/fixture.jsonl.zst").path],
                                   databasePath: db)
        o.sampleCount = 2; o.interval = 256; o.maxLength = 2048
        let table = try CalibrationJob(options: o).run().tableIDs[0]
        var options = EvaluationOptions(modelDirectory: Self.model, text: nil, lengths: [300, 600])
        options.table = .stored(database: db, table: table)
        options.theta = 0.01
        options.depths = [0, 1]
        options.trials = 2
        let results = try EvaluationJob(options: options).runPasskey()
        #expect(results.points.map(\.length) == [300, 300, 600, 600])
        #expect(results.filterFromLength == 384)
        for p in results.points where p.length == 300 {
            #expect(p.longMambaAccuracy == p.vanillaAccuracy && p.keptShare == 1 && p.tabulatedLength == nil)
        }
        for p in results.points where p.length == 600 {
            #expect(p.tabulatedLength == 512 && (p.keptShare ?? 1) < 1)
        }
        #expect(results.promptsPerSecond > 0)
        let decoded = try PasskeyResults.decoder.decode(PasskeyResults.self, from: results.json())
        #expect(decoded.task == "passkey" && decoded.points == results.points)
        // snake_case keys, as lookup's; files of the camelCase era still load.
        let text = String(decoding: try results.json(), as: UTF8.self)
        #expect(text.contains("\"long_mamba_accuracy\"") && text.contains("\"prompts_per_second\"") && !text.contains("longMamba"))
        let camel = try JSONEncoder().encode(results)
        #expect(try PasskeyResults.decoder.decode(PasskeyResults.self, from: camel).points == results.points)
        let svg = PasskeyHeatmap.svg(results)
        #expect(XMLParser(data: Data(svg.utf8)).parse())
        #expect(svg.contains("LongMamba θ=0.01"))
        options.trials = 0
        #expect(throws: PasskeyError.noTrials) { try EvaluationJob(options: options).runPasskey() }
    }

    @Test func trialsContinuedFromTheSharedPrefixEqualWholePromptPrefills() throws {
        let db = FileManager.default.temporaryDirectory.appendingPathComponent("lm-pk-\(UUID().uuidString).sqlite").path
        var o = CalibrationOptions(modelDirectory: Self.model, corpusPaths: [ModelFixtures.root.appendingPathComponent("Fixtures/corpus/fixture.jsonl.zst").path],
                                   databasePath: db)
        o.sampleCount = 2; o.interval = 256; o.maxLength = 2048
        let tableID = try CalibrationJob(options: o).run().tableIDs[0]
        let model = try MambaModel(directory: Self.model)
        let table = try StoredTableSource(store: CalibrationStore(path: db, readOnly: true), table: tableID)
        var evaluation = PasskeyEvaluation(model: model, prompts: try prompts(), table: table)
        evaluation.theta = 0.01; evaluation.trials = 3; evaluation.chunk = 128
        var dumped: [PasskeyPrompt] = []
        evaluation.onPrompt = { dumped.append($0) }

        // The logits after the prefix's state plus the rest equal those of the whole prompt, filtered.
        let filter = try #require(try LongMambaPrefill(table: table, model: model, length: 700, theta: 0.01, filterFrom: nil, allowBeyondTable: false).run?.filter)
        let prompt = try evaluation.prompts.prompt(length: 700, depth: 0.5, key: "12345")
        let shared = try evaluation.sharedPrefix(prompt.tokens[..<prompt.needleStart], filter: filter)
        #expect(shared.length == prompt.needleStart && shared.considered > 0)
        var continued = shared.state, whole = SequenceState(layerCount: model.config.layerCount)
        var none = DiscardingRecorder()
        let a = try model.forward(tokens: Array(prompt.tokens[prompt.needleStart...]), continuing: &continued, recorder: &none, computeLogits: true,
                                  deltaFilter: LongMambaFilterRun(filter: filter).deltaFilter)
        let b = try model.forward(tokens: prompt.tokens, continuing: &whole, recorder: &none, computeLogits: true,
                                  deltaFilter: LongMambaFilterRun(filter: filter).deltaFilter)
        let V = model.config.paddedVocabSize
        #expect(relativeError(Array(a.suffix(V)), Array(b.suffix(V))) < 1e-5)

        // Whole evaluations agree, and every prompt is reported once, in order.
        let reused = try evaluation.run(lengths: [300, 700], depths: [0, 0.5, 1]).points
        #expect(dumped.count == 2 * 3 * 3)
        #expect(dumped.map(\.length) == [Int](repeating: 300, count: 9) + [Int](repeating: 700, count: 9))
        for d in dumped {
            #expect(d.tokens.count == d.length && d.key == PasskeyPrompts.key(seed: 0, length: d.length, depth: d.depth, trial: d.trial))
            let rebuilt = try evaluation.prompts.prompt(length: d.length, depth: d.depth, key: d.key)
            #expect(rebuilt.tokens == d.tokens && rebuilt.needleStart == d.needleStart)
        }
        evaluation.reusePrefix = false
        let whole3 = try evaluation.run(lengths: [300, 700], depths: [0, 0.5, 1]).points
        #expect(reused.map(\.vanillaAccuracy) == whole3.map(\.vanillaAccuracy))
        #expect(reused.map(\.longMambaAccuracy) == whole3.map(\.longMambaAccuracy))
        for (r, w) in zip(reused, whole3) { #expect(abs((r.keptShare ?? 0) - (w.keptShare ?? 0)) < 1e-3) }
    }

    @Test func keysOfAnotherTokenCountMoveTheNeedleAndGetTheirOwnPrefix() throws {
        // The demo tokenizer writes some five-digit keys in 3 tokens and others in 4 or 5: at 512
        // tokens, depth 1, seed 7 the needle of trial 0 starts later than those of trials 1 and 2.
        let model = ModelFixtures.root.appendingPathComponent("Fixtures/demo-model").path
        let db = FileManager.default.temporaryDirectory.appendingPathComponent("lm-pk-\(UUID().uuidString).sqlite").path
        var o = CalibrationOptions(modelDirectory: model, corpusPaths: [ModelFixtures.root.appendingPathComponent("Fixtures/demo-corpus/train-sample.jsonl.zst").path],
                                   databasePath: db)
        o.sampleCount = 2; o.interval = 64; o.maxLength = 1024
        let tableID = try CalibrationJob(options: o).run().tableIDs[0]
        var options = EvaluationOptions(modelDirectory: model, text: nil, lengths: [512])
        options.table = .stored(database: db, table: tableID)
        options.theta = 0.01; options.depths = [1]; options.trials = 3; options.seed = 7
        var starts: [Int] = []
        let reused = try EvaluationJob(options: options).runPasskey(onPrompt: { starts.append($0.needleStart) })
        #expect(Set(starts).count > 1)
        options.reusePrefix = false
        let whole = try EvaluationJob(options: options).runPasskey()
        #expect(reused.points.map(\.longMambaAccuracy) == whole.points.map(\.longMambaAccuracy))
        #expect(abs(reused.points[0].keptShare! - whole.points[0].keptShare!) < 1e-6)
    }
}

@Suite struct PositionPerplexityTests {
    @Test func bucketsAverageToTheWindowPerplexity() throws {
        let model = try MambaModel(directory: ModelFixtures.model("mamba2-tiny-calib"))
        let tokens = (0..<700).map { ($0 * 37 + 11) % 1500 }
        var evaluation = PerplexityEvaluation(model: model)
        evaluation.bucketSize = 100
        evaluation.windows = 2
        let point = try #require(try evaluation.run(tokens: tokens, lengths: [512]).first)
        let buckets = try #require(point.byPosition)
        #expect(buckets.map(\.start) == [0, 100, 200, 300, 400, 500])
        #expect(buckets.last?.end == 511)
        // exp(mean of log perplexities weighted by bucket size) = the window's perplexity.
        let weighted = buckets.reduce(0.0) { $0 + Foundation.log($1.vanillaPerplexity) * Double($1.end - $1.start) } / 511
        #expect(abs(Foundation.exp(weighted) - point.vanillaPerplexity) / point.vanillaPerplexity < 1e-9)
        evaluation.bucketSize = 0
        #expect(throws: EvaluationError.badBucketSize(0)) { try evaluation.run(tokens: tokens, lengths: [512]) }
    }
}

@Suite struct TuneTests {
    static let model = ModelFixtures.model("mamba2-tiny-calib")

    func calibrated() throws -> (db: String, run: Int64) {
        let db = FileManager.default.temporaryDirectory.appendingPathComponent("lm-tune-\(UUID().uuidString).sqlite").path
        var o = CalibrationOptions(modelDirectory: Self.model, corpusPaths: [ModelFixtures.root.appendingPathComponent("Fixtures/corpus/fixture.jsonl.zst").path],
                                   databasePath: db)
        o.sampleCount = 2; o.interval = 256; o.maxLength = 2048
        return (db, try CalibrationJob(options: o).run().runID)
    }

    func options(_ db: String, _ run: Int64, thetas: [Double], clamps: [Double]) -> TuneOptions {
        let tokens = FileManager.default.temporaryDirectory.appendingPathComponent("lm-tune-\(UUID().uuidString).txt").path
        try? (0..<1200).map { String(($0 * 37 + 11) % 1500) }.joined(separator: " ").write(toFile: tokens, atomically: true, encoding: .utf8)
        var o = TuneOptions(databasePath: db, runID: run, modelDirectory: Self.model, thetas: thetas, clampFractions: clamps,
                            aggregations: [.max], lengths: [300, 600], task: .perplexity(text: .tokens(path: tokens), windows: 1))
        o.interval = 256; o.maxLength = 2048
        return o
    }

    @Test func tuneSolvesMissingTablesStoresEveryPointAndReusesThem() throws {
        let (db, run) = try calibrated()
        let first = try TuneJob(options: options(db, run, thetas: [0.01, 0.05], clamps: [0.05])).run()
        // vanilla + 1 table × 2 θ, at 2 lengths; the p = 0.05 table came from calibrate.
        #expect(first.pointsEvaluated == 6 && first.pointsReused == 0 && first.tablesSolved == 0)
        #expect(first.ranked.count == 3 && first.ranked.contains { $0.table == nil })
        let vanilla = try #require(first.ranked.first { $0.table == nil })
        // At 300 < 1.5 L no filtering: every row equals vanilla there.
        for r in first.ranked { #expect(r.values[0] == vanilla.values[0]) }
        // Ranked by the geometric mean, lowest first.
        #expect(first.ranked.map(\.score) == first.ranked.map(\.score).sorted())
        // An overlapping grid reuses the stored points and solves only the new table, on the grid
        // the run was calibrated with when none is given (256 … 2048, not 1000 … 256000).
        var overlapping = options(db, run, thetas: [0.05, 0.1], clamps: [0.05, 0.2])
        overlapping.interval = nil; overlapping.maxLength = nil
        let second = try TuneJob(options: overlapping).run()
        #expect(second.tablesSolved == 1)
        let solved = try CalibrationStore(path: db, readOnly: true).tables().last!
        #expect(solved.parameters.clampFraction == 0.2 && solved.lengths.first == 256 && solved.lengths.last == 2048)
        #expect(second.pointsReused == 2 + 2)              // vanilla and (p 0.05, θ 0.05)
        #expect(second.pointsEvaluated == 2 * 2 * 2 - 2)   // the other three (table, θ) pairs at 2 lengths
        let store = try CalibrationStore(path: db, readOnly: true)
        #expect(try store.evaluations().count == first.pointsEvaluated + second.pointsEvaluated)
        #expect(try store.tables().count == 2)
        #expect(second.best?.table != nil)
        // The report shows the stored grid: one heatmap for this evaluation, 2 tables × 3 θ.
        let grids = try TuneHeatmap.svgs(store: store, run: run)
        #expect(grids.count == 1)
        #expect(grids[0].components(separatedBy: "<rect x=").count - 1 == 2 * 3)
        #expect(XMLParser(data: Data(grids[0].utf8)).parse())
        #expect(try CalibrationReport.html(store: store, table: second.best!.table!).contains("Tuning θ and p"))
    }

    @Test func halvingKeepsTheBestThirdOfEachLengthWithMoreWindowsAtLongerOnes() throws {
        let (db, run) = try calibrated()
        var o = options(db, run, thetas: [0.01, 0.05, 0.1, 0.3, 0.5, 0.7], clamps: [0.05])
        o.lengths = [900, 400, 600]   // evaluated shortest first, reported in this order
        o.task = o.task.with { _ in 9 }
        o.halving = true
        let r = try TuneJob(options: o).run()
        #expect(r.effortByLength == [9, 1, 3])   // ⌈9 / 9⌉ at 400, ⌈9 / 3⌉ at 600, all 9 at 900
        // 6 candidates at 400, the best 2 at 600, the best 1 at 900; vanilla at every length.
        #expect(r.pointsEvaluated == 3 + 6 + 2 + 1)
        #expect(r.promptsRun == (1 + 6) * 1 + (1 + 2) * 3 + (1 + 1) * 9)
        let tables = r.ranked.filter { $0.table != nil }
        #expect(tables.filter { $0.droppedAfter == nil }.count == 1)
        #expect(tables.filter { $0.droppedAfter == 600 }.count == 1)
        #expect(tables.filter { $0.droppedAfter == 400 }.count == 4)
        // Survivors first, then the later dropped; a dropped row has no value where it was not evaluated.
        #expect(r.ranked.map { $0.droppedAfter ?? 0 }.prefix(2) == [0, 0])
        #expect(r.ranked.last!.droppedAfter == 400 && r.ranked.last!.values[0].isNaN && r.ranked.last!.values[2].isNaN)
        #expect(r.best?.droppedAfter == nil && r.ranked.allSatisfy { $0.measuredBy == ["swift cpu"] })
        // Each length's points are an evaluation of their own (the windows are in the key): a full
        // tune with 9 windows reuses the 900 points and the vanilla ones.
        let store = try CalibrationStore(path: db, readOnly: true)
        #expect(Set(try store.evaluations().map(\.evaluationKey)).count == 3)
        o.halving = false
        o.lengths = [900]
        let full = try TuneJob(options: o).run()
        #expect(full.pointsReused == 2 && full.pointsEvaluated == 5)
    }

    @Test func methodsAreComparedOnTheSamePointsWithKeysOfTheirOwn() throws {
        let (db, run) = try calibrated()
        let plain = try TuneJob(options: options(db, run, thetas: [0.05], clamps: [0.05])).run()
        var o = options(db, run, thetas: [0.05], clamps: [0.05])
        o.methods = [.dtThre, .alpha, .norm]
        let r = try TuneJob(options: o).run()
        // vanilla and dt_thre are reused (their keys are those of a tune without methods); alpha and norm are new.
        #expect(r.pointsReused == plain.pointsEvaluated && r.pointsEvaluated == 2 * 2)
        #expect(r.ranked.count == 1 + 3 && Set(r.ranked.compactMap(\.method)) == [.dtThre, .alpha, .norm])
        let rows = try CalibrationStore(path: db, readOnly: true).evaluations()
        #expect(Set(rows.map(\.evaluationKey)).count == 3)
        #expect(rows.filter { $0.detailJSON.contains("\"method\":\"alpha\"") }.count == 2)
        // Below the filter start (300 < 384) every method is vanilla.
        for row in r.ranked { #expect(row.values[0] == r.ranked.first { $0.table == nil }!.values[0]) }
        // The report's default θ comes from dt_thre's evaluation only.
        #expect(try TunedTheta.best(store: CalibrationStore(path: db, readOnly: true), table: 1)?.theta == 0.05)
    }

    @Test func halvingSurvivorsAreTheBestThirdWithTiesInGridOrder() {
        #expect(TuneHalving.kept(1) == 1 && TuneHalving.kept(3) == 1 && TuneHalving.kept(4) == 2 && TuneHalving.kept(12) == 4)
        #expect(TuneHalving.survivors([0.2, 0.9, 0.9, 0.1, 0.9, 0.5], higherIsBetter: true) == [1, 2])
        #expect(TuneHalving.survivors([3, 1, 2, 1], higherIsBetter: false) == [1, 3])
        #expect((0..<3).map { TuneHalving.effort(full: 10, round: $0, rounds: 3) } == [2, 4, 10])
        #expect(TuneHalving.effort(full: 1, round: 0, rounds: 4) == 1)
    }

    @Test func shardsOfACopiedStoreMergeIntoTheFullGrid() throws {
        let (db, run) = try calibrated()
        let o = options(db, run, thetas: [0.01, 0.05], clamps: [0.05])
        var shards: [String] = []
        for i in 0..<3 {
            let copy = db + ".shard\(i)"
            try FileManager.default.copyItem(atPath: db, toPath: copy)
            var s = o
            s.databasePath = copy; s.shardIndex = i; s.shardCount = 3
            let r = try TuneJob(options: s).run()
            #expect(r.ranked.isEmpty && r.pointsEvaluated == 2)   // 6 points, every third
            shards.append(copy)
        }
        let merged = try CalibrationMerge.merge(inputs: shards, into: db, clampFractions: [0.05], aggregations: [.max])
        #expect(merged.evaluations == { var e = EvaluationJoin(); e.added = 6; return e }())
        let again = try CalibrationMerge.merge(inputs: shards, into: db, clampFractions: [0.05], aggregations: [.max])
        #expect(again.evaluations.added == 0 && again.evaluations.present == 6)
        let ranked = try TuneJob(options: o).run()
        #expect(ranked.pointsEvaluated == 0 && ranked.pointsReused == 6 && ranked.ranked.count == 3)

        // Refusals: a bad shard, a sharded halving, a shard whose tables are not solved yet.
        var bad = o; bad.shardIndex = 3; bad.shardCount = 3
        #expect(throws: TuneError.badShard(index: 3, count: 3)) { try TuneJob(options: bad).run() }
        bad.shardIndex = 0; bad.halving = true
        #expect(throws: TuneError.shardedHalving) { try TuneJob(options: bad).run() }
        var missing = o; missing.shardIndex = 1; missing.shardCount = 2; missing.clampFractions = [0.2]
        #expect { try TuneJob(options: missing).run() } throws: { e in
            guard case let TuneError.shardNeedsTables(_, _, names, command) = e else { return false }
            return names == ["p = 0.2, aggregate max"] && command.contains("longmamba sweep --db \(db) --run \(run) --clamp 0.2 --aggregate max --interval 256 --max-length 2048")
        }
    }

    @Test func joiningRefusesPointsOfTablesTheTargetLacksOrWithAnotherKey() throws {
        let (db, run) = try calibrated()
        _ = try TuneJob(options: options(db, run, thetas: [0.05], clamps: [0.05])).run()
        let (other, _) = try calibrated()   // the same calibration: the same table, by content hash
        #expect(try CalibrationStore(path: other).joinEvaluations(from: CalibrationStore(path: db, readOnly: true)).added == 4)
        // A target without the table refuses the whole join.
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("lm-join-\(UUID().uuidString).sqlite").path
        let target = try CalibrationStore(path: empty)
        #expect { try target.joinEvaluations(from: CalibrationStore(path: db, readOnly: true)) } throws: { e in
            guard case let StoreError.evaluationOfMissingTable(source, _, table, _, t) = e else { return false }
            return source == db && table == 1 && t == empty
        }
        #expect(try target.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM evaluations") } == 0)
        // A point whose key its columns do not give.
        try CalibrationStore(path: db).write { try $0.execute(sql: "UPDATE evaluations SET length = length + 1 WHERE id = 2") }
        #expect(throws: StoreError.evaluationKeyMismatch(path: db, id: 2)) { try CalibrationStore(path: other).joinEvaluations(from: CalibrationStore(path: db, readOnly: true)) }
    }

    @Test func float32PointsKeepTheirKeysAndOtherNumericTypesGetTheirOwn() {
        let v3 = SHA256.hash(data: Data("passkey|f|t|depths [0.0, 1.0] trials 2 seed 0|default".utf8)).hexString
        #expect(EvaluationRecord.evaluationKey(task: "passkey", fingerprint: "f", textHash: "t", settings: "depths [0.0, 1.0] trials 2 seed 0", filterFrom: nil) == v3)
        let bf16 = EvaluationRecord.evaluationKey(task: "passkey", fingerprint: "f", textHash: "t", settings: "depths [0.0, 1.0] trials 2 seed 0", filterFrom: nil, dtype: "bfloat16")
        #expect(bf16 == SHA256.hash(data: Data("passkey|f|t|depths [0.0, 1.0] trials 2 seed 0|default|bfloat16".utf8)).hexString)
        var r = EvaluationRecord(evaluationKey: bf16, tableID: nil, theta: nil, task: "passkey", length: 8, metric: "accuracy", value: 1, textHash: "t")
        #expect(r.measuredBy == "swift cpu")
        r.backend = "torch"; r.device = "cuda:0 (NVIDIA H100)"; r.dtype = "bfloat16"
        #expect(r.measuredBy == "torch cuda:0 (NVIDIA H100) bfloat16")
    }

    @Test func tuneRefusesEmptyGridsBadThetaAndUnknownRows() throws {
        let (db, run) = try calibrated()
        #expect(throws: TuneError.emptyGrid(what: "--theta")) { try TuneJob(options: options(db, run, thetas: [], clamps: [0.05])).run() }
        #expect(throws: TuneError.nonPositiveTheta(0)) { try TuneJob(options: options(db, run, thetas: [0], clamps: [0.05])).run() }
        #expect(throws: StoreError.unknownRun(path: db, id: 9)) { try TuneJob(options: options(db, 9, thetas: [0.05], clamps: [0.05])).run() }
        // A length beyond the tables is refused before any point is evaluated or stored.
        var beyond = options(db, run, thetas: [0.05], clamps: [0.05])
        beyond.lengths = [300, 4096]
        #expect(throws: TuneError.beyondTables(length: 4096, largest: 2048, command: "longmamba sweep --db \(db) --run \(run) --clamp 0.05 --aggregate max --interval 256 --max-length 4096",
                                               interval: 256, maxLength: 4096)) { try TuneJob(options: beyond).run() }
        #expect(try CalibrationStore(path: db, readOnly: true).evaluations().isEmpty)
        // A row written by a newer tool (a task this one does not know) is refused, and kept.
        let store = try CalibrationStore(path: db)
        try store.saveEvaluation(EvaluationRecord(evaluationKey: "k", tableID: nil, theta: nil, task: "ruler", length: 1, metric: "score", value: 1, textHash: "h"))
        #expect(throws: StoreError.unknownEvaluation(path: db, id: 1, task: "ruler", metric: "score", toolVersion: ToolInfo.version)) { try store.evaluations() }
        #expect(try store.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM evaluations") } == 1)
    }
}
