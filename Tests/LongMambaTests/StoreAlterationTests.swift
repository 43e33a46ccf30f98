import Foundation
import GRDB
import Testing
@testable import LongMamba

/// A store altered outside the tool (rows well-formed for SQLite, wrong for us): every read path
/// gives a StoreError naming the row and column, never a trap, never an answer from such rows;
/// `check` lists the damage. One named case per kind of alteration (the `store-rows` fuzzer's
/// findings become cases here).
@Suite struct StoreAlterationTests {
    /// A calibrated fixture store (2 samples, tables of p = 0.05 and 0.2, grid 128…1024), built once.
    static let template: String = {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lm-alter-\(UUID().uuidString)").path
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = dir + "/template.sqlite"
        var o = CalibrationOptions(modelDirectory: CalibrationFixture.model, corpusPaths: [CalibrationFixture.corpus], databasePath: path)
        o.sampleCount = 2; o.interval = 128; o.maxLength = 1024; o.clampFractions = [0.05, 0.2]
        _ = try? CalibrationJob(options: o).run()
        return path
    }()

    /// A copy of the template with `sql` applied after dropping the immutability triggers.
    func altered(_ sql: String, arguments: StatementArguments = []) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lm-altered-\(UUID().uuidString).sqlite").path
        try FileManager.default.copyItem(atPath: Self.template, toPath: path)
        let queue = try DatabaseQueue(path: path)
        try queue.writeWithoutTransaction { db in
            for t in ["threshold_tables_are_immutable", "threshold_tables_are_never_deleted", "table_layers_are_immutable", "table_layers_are_never_deleted"] {
                try db.execute(sql: "DROP TRIGGER \(t)")
            }
            try db.execute(sql: sql, arguments: arguments)
        }
        try queue.close()
        return path
    }

    /// Every read of table 1 throws a StoreError whose message contains `expected`, and check reports it.
    func expectTableRefused(_ path: String, _ expected: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let store = try CalibrationStore(path: path, readOnly: true)
        let reads: [(String, () throws -> Void)] = [
            ("lookup", { _ = try TableLookup(store: store).lookup(table: 1, length: 700) }),
            ("tableLayer", { _ = try store.tableLayer(table: 1, layer: 0) }),
            ("export safetensors", { try TableExport.export(store: store, table: 1, format: .safetensors, to: path + ".safetensors") }),
            ("export json", { try TableExport.export(store: store, table: 1, format: .json, to: path + ".json") }),
            ("report", { _ = try CalibrationReport.html(store: store, table: 1) }),
            ("eval source", { _ = try StoredTableSource(store: store, table: 1).filter(length: 700, theta: 0.05) }),
        ]
        for (name, read) in reads {
            do {
                try read()
                Issue.record("\(name) answered from an altered table", sourceLocation: sourceLocation)
            } catch let error as StoreError {
                #expect("\(error)".contains(expected), "\(name): \(error)", sourceLocation: sourceLocation)
                #expect("\(error)".hasPrefix(path + ": "), "\(name) does not name the file: \(error)", sourceLocation: sourceLocation)
            } catch {
                Issue.record("\(name): not a StoreError: \(type(of: error)) \(error)", sourceLocation: sourceLocation)
            }
        }
        let report = try CalibrationStore(path: path, readOnly: true).check()
        #expect(report.problems.contains { $0.contains(expected) }, "check: \(report.problems)", sourceLocation: sourceLocation)
    }

    @Test func anUnalteredStoreChecksHealthy() throws {
        let report = try CalibrationStore(path: Self.template, readOnly: true).check()
        #expect(report.healthy, "\(report.problems)")
        #expect(report.runs == 1 && report.recordings == 2 * 2 && report.tables == 2 && report.sequences == 2)
    }

    @Test func aShortThresholdBlobIsRefusedWithItsSize() throws {
        let path = try altered("UPDATE table_layers SET delta_thresholds_f32 = substr(delta_thresholds_f32, 1, 100) WHERE table_id = 1 AND layer_index = 0")
        try expectTableRefused(path, "table 1 layer 0: delta_thresholds_f32 holds 100 bytes, expected 256 (T=8 × C=8 × 4)")
    }

    @Test func anExtendedDecayBlobIsRefused() throws {
        let path = try altered("UPDATE table_layers SET cumulative_decays_f32 = cumulative_decays_f32 || x'00000000' WHERE table_id = 1 AND layer_index = 1")
        try expectTableRefused(path, "table 1 layer 1: cumulative_decays_f32 holds 36 bytes, expected 32")
    }

    @Test func oneFlippedThresholdIsCaughtByTheContentHash() throws {
        // Sizes, ranges and the grid all stay right: only the hash can tell.
        let path = try altered("UPDATE table_layers SET delta_thresholds_f32 = x'0000803f' || substr(delta_thresholds_f32, 5) WHERE table_id = 1 AND layer_index = 1")
        try expectTableRefused(path, "the store was altered after the table was written")
    }

    @Test func reorderedLengthsAreRefused() throws {
        // Swap the first two lengths (128 and 256) of layer 0.
        let path = try altered("UPDATE table_layers SET lengths_i64 = substr(lengths_i64, 9, 8) || substr(lengths_i64, 1, 8) || substr(lengths_i64, 17) WHERE table_id = 1 AND layer_index = 0")
        try expectTableRefused(path, "lengths_i64 entry 0 is 256, but the table's grid (every 128 up to 1024) has 128")
    }

    @Test func aChangedCountIsRefused() throws {
        try expectTableRefused(try altered("UPDATE table_layers SET channel_count = 9 WHERE table_id = 1 AND layer_index = 0"),
                               "table 1 layer 0: delta_thresholds_f32 holds 256 bytes, expected 288")
        try expectTableRefused(try altered("UPDATE threshold_tables SET length_count = 7 WHERE id = 1"),
                               "table 1: length_count holds 7 but parameters_json says 8")
        try expectTableRefused(try altered("UPDATE threshold_tables SET layer_count = 3 WHERE id = 1"),
                               "table 1: layer_count 3, but the model has 2 layers")
    }

    @Test func aGarbledParametersColumnIsRefusedNotADecodingError() throws {
        try expectTableRefused(try altered("UPDATE threshold_tables SET parameters_json = '{\"aggregation\":' WHERE id = 1"),
                               "table 1: parameters_json not the parameters object")
        try expectTableRefused(try altered("UPDATE threshold_tables SET parameters_json = replace(parameters_json, '\"interval\":128', '\"interval\":0') WHERE id = 1"),
                               "table 1: parameters_json invalid solver parameter: interval 0 must be a positive number of tokens")
    }

    @Test func aNegativeOrNaNThresholdIsRefused() throws {
        try expectTableRefused(try altered("UPDATE table_layers SET delta_thresholds_f32 = substr(delta_thresholds_f32, 1, 40) || x'0000c07f' || substr(delta_thresholds_f32, 45) WHERE table_id = 1 AND layer_index = 0"),
                               "delta_thresholds_f32 row 1 (S = 256) channel 2 holds nan, expected a finite threshold ≥ 0")
        try expectTableRefused(try altered("UPDATE table_layers SET kept_fractions_f32 = x'00000000' || substr(kept_fractions_f32, 5) WHERE table_id = 1 AND layer_index = 0"),
                               "kept_fractions_f32 row 0 (S = 128) channel 0 holds 0.0, expected a kept fraction in (0, 1]")
    }

    @Test func aDeletedOrDuplicatedLayerIsRefused() throws {
        try expectTableRefused(try altered("DELETE FROM table_layers WHERE table_id = 1 AND layer_index = 1"),
                               "table 1: table_layers layer 1 is missing (1 layer rows of 2)")
    }

    @Test func anUnknownMethodOrEncodingIsRefused() throws {
        try expectTableRefused(try altered("UPDATE threshold_tables SET method = 'future_method' WHERE id = 1"),
                               "table 1 has the method 'future_method' (per_channel rows), which this tool does not know")
        try expectTableRefused(try altered("UPDATE threshold_tables SET row_kind = 'per_layer' WHERE id = 1"),
                               "table 1 has the method 'longmamba' (per_layer rows), which this tool does not know")
        let path = try altered("UPDATE recordings SET encoding = 'logrice-v2' WHERE sample_index = 0 AND layer_index = 0")
        let store = try CalibrationStore(path: path, readOnly: true)
        let error = #expect(throws: StoreError.self) { try store.layerSamples(run: 1, layer: 0) }
        #expect("\(error!)".contains("run 1 sample 0 layer 0: encoding 'logrice-v2' is not an encoding this tool knows"), "\(error!)")
        #expect(try store.check().problems.contains { $0.contains("logrice-v2") })
    }

    @Test func anAlteredRecordingIsCaughtByItsHashAndSolveRefusesIt() throws {
        let path = try altered("UPDATE recordings SET delta_blob = x'0000803f' || substr(delta_blob, 5) WHERE sample_index = 1 AND layer_index = 1")
        let store = try CalibrationStore(path: path)
        let error = #expect(throws: StoreError.self) { try TableService(store: store).solve(run: 1, clampFraction: 0.1, aggregation: .max) }
        #expect(error == .alteredRecording(path: path, run: 1, sample: 1, layer: 1))
        #expect(try store.tables().count == 2)   // nothing was added
    }

    @Test func aRecordingWithARecomputedHashStillMeetsItsSizeCheck() throws {
        // Whoever altered it recomputed the hash: the size check still refuses the short blob.
        let path = try altered("UPDATE recordings SET delta_blob = substr(delta_blob, 1, 12) WHERE sample_index = 0 AND layer_index = 0")
        let queue = try DatabaseQueue(path: path)
        try queue.write { db in try rehash(db) }
        try queue.close()
        let error = #expect(throws: StoreError.self) { try CalibrationStore(path: path, readOnly: true).recording(run: 1, sample: 0, layer: 0) }
        #expect("\(error!)".contains("run 1 sample 0 layer 0: delta_blob holds 12 bytes, expected 8192 (L=256 × C=8 × 4)"), "\(error!)")
    }

    @Test func aColumnOfTheWrongTypeIsAStoreErrorNotARawDecodingError() throws {
        // SQLite reads text as 0 in an integer column: the count check names it.
        let text = try altered("UPDATE threshold_tables SET layer_count = 'two' WHERE id = 1")
        do { _ = try CalibrationStore(path: text, readOnly: true).tables(); Issue.record("read a table with a text layer_count") } catch let error as StoreError {
            #expect("\(error)".contains("table 1: layer_count 0 is not a layer count"), "\(error)")
        }
        // A blob where the record needs an integer: SQLite reads 0 as well.
        let blob = try altered("UPDATE threshold_tables SET layer_count = x'0102' WHERE id = 1")
        do { _ = try CalibrationStore(path: blob, readOnly: true).tables(); Issue.record("read a table with a blob layer_count") } catch let error as StoreError {
            #expect("\(error)".contains("table 1: layer_count 0 is not a layer count"), "\(error)")
        }
    }

    /// store-rows fuzzer finding (Fixtures/fuzz-regressions/store-rows/blob-layer-index-in-recordings.bin):
    /// `check` read recordings' indices with GRDB's typed subscript, which traps on a blob.
    @Test func aBlobWhereARecordingsLayerIndexBelongsIsReportedNotATrap() throws {
        let path = try altered("UPDATE recordings SET layer_index = zeroblob(88) WHERE sample_index = 1 AND layer_index = 1")
        let store = try CalibrationStore(path: path, readOnly: true)
        let report = try store.check()
        #expect(report.problems.contains { $0.contains("run 1: a recording's sample_index 1 / layer_index") && $0.contains("are not integers") }, "\(report.problems)")
        // The solver's read of layer 1 now misses sample 1: refused, naming the layer.
        let writable = try CalibrationStore(path: path)
        let error = #expect(throws: StoreError.self) { try TableService(store: writable).solve(run: 1, clampFraction: 0.1, aggregation: .max) }
        #expect(error == .missingSamples(path: path, run: 1, layer: 1, stored: 1, expected: 2))
    }

    @Test func shortSampledTokensAreRefused() throws {
        let path = try altered("UPDATE run_samples SET token_ids_i32 = substr(token_ids_i32, 1, 10) WHERE sample_index = 1")
        let error = #expect(throws: StoreError.self) { try CalibrationStore(path: path, readOnly: true).sequences(run: 1) }
        #expect("\(error!)".contains("run 1 sample 1: token_ids_i32 holds 10 bytes, expected 1024 (L=256 × 4)"), "\(error!)")
    }

    @Test func aRunWithAnImpossibleShapeIsRefused() throws {
        let path = try altered("UPDATE calibration_runs SET sample_length = -5")
        let error = #expect(throws: StoreError.self) { try CalibrationStore(path: path, readOnly: true).run(1) }
        #expect("\(error!)".contains("run 1: sample_length -5 is outside 1 to"), "\(error!)")
    }

    /// Recomputes the content hashes of every recording and table (as the fuzzer's rehash does).
    func rehash(_ db: Database) throws {
        for row in try Row.fetchAll(db, sql: "SELECT rowid, encoding, delta_blob, a_values FROM recordings") {
            let hash = RecordingRecord.contentHash(encoding: row[1], blob: row[2], aValues: row[3])
            try db.execute(sql: "UPDATE recordings SET content_hash = ? WHERE rowid = ?", arguments: [hash, row[0] as Int64])
        }
    }
}
