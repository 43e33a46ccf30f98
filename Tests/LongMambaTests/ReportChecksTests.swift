import Foundation
import Testing
@testable import LongMamba

/// `report` draws only what measured its table: the results' model, table and θ are checked.
@Suite struct ReportChecksTests {
    static let model = ModelFixtures.model("mamba2-tiny-calib")

    /// A calibrated fixture with two tables (p = 0.05 and 0.1) and a token file of 1200 ids.
    func calibrated() throws -> (db: String, tables: [Int64], tokens: String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lm-report-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var o = CalibrationOptions(modelDirectory: Self.model, corpusPaths: [ModelFixtures.root.appendingPathComponent("Fixtures/corpus/fixture.jsonl.zst").path],
                                   databasePath: dir + "/db.sqlite")
        o.sampleCount = 2; o.interval = 256; o.maxLength = 2048; o.clampFractions = [0.05, 0.1]
        let tables = try CalibrationJob(options: o).run().tableIDs
        try (0..<1200).map { String(($0 * 37 + 11) % 1500) }.joined(separator: " ").write(toFile: dir + "/t.tokens", atomically: true, encoding: .utf8)
        return (dir + "/db.sqlite", tables, dir + "/t.tokens")
    }

    func perplexity(_ db: String, table: Int64, theta: Double, tokens: String) throws -> PerplexityResults {
        var options = EvaluationOptions(modelDirectory: Self.model, text: .tokens(path: tokens), lengths: [600])
        options.table = .stored(database: db, table: table)
        options.theta = theta
        return try EvaluationJob(options: options).run()
    }

    @Test func refusesAnEvaluationOfAnotherTableOrThetaAndDrawsItsOwn() throws {
        let (db, tables, tokens) = try calibrated()
        let store = try CalibrationStore(path: db, readOnly: true)
        let (one, two) = (try store.table(tables[0]), try store.table(tables[1]))
        let results = try perplexity(db, table: two.id, theta: 0.01, tokens: tokens)
        #expect(results.tableContentHash == two.contentHash)
        // Table 2 at θ = 0.01 drawn under table 1: refused, naming the file and what it measured.
        let other = #expect(throws: ReportError.self) { try CalibrationReport.check(results, path: "e.json", table: one, theta: 0.01) }
        #expect(other == .resultsOfAnotherTable(path: "e.json", measured: "\(db)#\(two.id)", table: one.id))
        #expect(other?.description.hasPrefix("e.json measured table \(db)#\(two.id), not table \(one.id)") == true)
        // The right table at another θ: refused, with the θ to pass.
        let theta = #expect(throws: ReportError.self) { try CalibrationReport.check(results, path: "e.json", table: two, theta: 0.05) }
        #expect(theta == .resultsAtAnotherTheta(path: "e.json", measured: 0.01, theta: 0.05))
        #expect(theta?.description.contains("pass --theta 0.01") == true)
        // What it measured: accepted and labelled with the table and θ.
        try CalibrationReport.check(results, path: "e.json", table: two, theta: 0.01)
        let html = try CalibrationReport.html(store: store, table: two.id, theta: 0.01, perplexity: results.curve)
        #expect(html.contains("Perplexity against length (table \(two.id), θ = 0.01)"))
        #expect(html.contains("LongMamba θ=0.01"))
        // Results of an older tool (no content hash) are checked by their "db#id".
        var old = results
        old.tableContentHash = nil
        #expect(throws: ReportError.resultsOfAnotherTable(path: "e.json", measured: "\(db)#\(two.id)", table: one.id)) {
            try CalibrationReport.check(old, path: "e.json", table: one, theta: 0.01)
        }
        // Results of another model.
        var foreign = results
        foreign.modelFingerprint = String(repeating: "0", count: 64)
        #expect(throws: ReportError.resultsOfAnotherModel(path: "e.json", measured: foreign.modelFingerprint, tableModel: two.modelFingerprint)) {
            try CalibrationReport.check(foreign, path: "e.json", table: two, theta: 0.01)
        }
        // θ ≤ 0 draws nothing.
        #expect(throws: ReportError.nonPositiveTheta(0)) { try CalibrationReport.html(store: store, table: two.id, theta: 0) }
    }

    @Test func aTunedTableReportsAtTheThetaTuneChose() throws {
        let (db, tables, tokens) = try calibrated()
        #expect(try TunedTheta.best(store: CalibrationStore(path: db, readOnly: true), table: tables[0]) == nil)
        var o = TuneOptions(databasePath: db, runID: 1, modelDirectory: Self.model, thetas: [0.01, 0.05, 0.3], clampFractions: [0.05, 0.1],
                            aggregations: [.max], lengths: [600, 1000], task: .perplexity(text: .tokens(path: tokens), windows: 1))
        o.interval = nil; o.maxLength = nil
        let tuned = try TuneJob(options: o).run()
        #expect(tuned.tablesSolved == 0)     // both tables came from calibrate: the default grid is the calibrated one
        let winner = try #require(tuned.best)
        let best = try #require(try TunedTheta.best(store: CalibrationStore(path: db, readOnly: true), table: winner.table!))
        #expect(best.theta == winner.theta && best.task == "perplexity" && best.lengths == [600, 1000])
        #expect(abs(best.score - winner.score) < 1e-12)
        // The report's tune heatmap holds its whole title and caption.
        let svg = try #require(try TuneHeatmap.svgs(store: CalibrationStore(path: db, readOnly: true), run: 1).first)
        let width = Double(svg.components(separatedBy: "width=\"")[1].prefix { $0 != "\"" })!
        let title = svg.components(separatedBy: "font-weight=\"bold\">")[1].prefix { $0 != "<" }
        #expect(width >= Double(title.count) * 6.6, "title of \(title.count) characters in \(width) px")
        #expect(width > 300)
        // Every table of the grid has its own best θ, the lowest geometric mean of its row.
        for table in tables {
            let rows = tuned.ranked.filter { $0.table == table }
            let chosen = try #require(try TunedTheta.best(store: CalibrationStore(path: db, readOnly: true), table: table))
            #expect(chosen.theta == rows.min { $0.score < $1.score }!.theta)
        }
    }
}
