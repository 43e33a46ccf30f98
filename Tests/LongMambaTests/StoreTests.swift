import Foundation
import GRDB
import Testing
@testable import LongMamba

/// Synthetic `longmamba record` outputs for store, lookup and export tests.
enum SyntheticRecordings {
    static func tempDir() -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lm-solver-\(UUID().uuidString)").path
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// K files, `layers` layers of [L, C] Δ; Mamba-2-style A [C] unless `stateSize` is given.
    static func write(in dir: String, samples K: Int = 3, layers: Int = 2, L: Int = 64, C: Int = 6, stateSize: Int? = nil, seed: UInt64 = 1,
                      architecture: String = "mamba2", mutate: ((Int, Int, inout [Float]) -> Void)? = nil) throws -> [String] {
        var rng = SolverRNG(seed)
        let A = (0..<layers).map { _ in (0..<(C * (stateSize ?? 1))).map { _ in -Float(exp(rng.normal())) } }
        return try (0..<K).map { s in
            var w = SafetensorsWriter(metadata: ["architecture": architecture, "fingerprint": "synthetic-\(architecture)-\(layers)x\(C)", "tool_version": "test", "seed": "7"])
            for i in 0..<layers {
                var delta = rng.delta(L * C)
                mutate?(s, i, &delta)
                w.add("layer.\(i).delta", shape: [L, C], floats: delta)
                w.add("layer.\(i).A", shape: stateSize.map { [C, $0] } ?? [C], floats: A[i])
            }
            let path = "\(dir)/sample\(s).safetensors"
            try w.write(to: path)
            return path
        }
    }
}

@Suite struct StoreTests {
    func count(_ store: CalibrationStore, _ table: String) throws -> Int {
        try store.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM \(table)") ?? -1 }
    }

    @Test func solvingStoredExactRecordingsEqualsSolvingTheFiles() throws {
        let dir = SyntheticRecordings.tempDir()
        let files = try SyntheticRecordings.write(in: dir)
        let store = try CalibrationStore(path: "\(dir)/cal.sqlite")
        let run = try store.importRecordings(files)
        #expect(try store.run(run).status == .complete)
        #expect(try store.recordingEncodings(run: run) == [DeltaRepresentation.exactEncoding])
        let id = try TableService(store: store).solve(run: run, clampFraction: 0.2, aggregation: .max, interval: 50, maxLength: 2000)
        let params = SolverParameters(clampFraction: 0.2, aggregation: .max, interval: 50, maxLength: 2000, trainingLength: 64)
        for i in 0..<2 {
            let direct = try DeltaThresholdSolver.solveLayer(samples: try files.map { try RecordingFile(path: $0).layer(i) }, parameters: params)
            #expect(try store.tableLayer(table: id, layer: i) == direct)
        }
        let info = try store.table(id)
        #expect(info.parameters == params && info.method == "longmamba" && info.layerCount == 2 && info.lengths.count == 40)
    }

    @Test func sameInputsGiveOneTableWithOneContentHashAndTablesAreNeverRewritten() throws {
        let dir = SyntheticRecordings.tempDir()
        let store = try CalibrationStore(path: "\(dir)/cal.sqlite")
        let run = try store.importRecordings(try SyntheticRecordings.write(in: dir))
        let a = try TableService(store: store).solve(run: run, clampFraction: 0.1, aggregation: .mean, interval: 100, maxLength: 1000)
        let b = try TableService(store: store).solve(run: run, clampFraction: 0.1, aggregation: .mean, interval: 100, maxLength: 1000)
        let c = try TableService(store: store).solve(run: run, clampFraction: 0.2, aggregation: .mean, interval: 100, maxLength: 1000)
        #expect(a == b)   // solving the same inputs again returns the stored table (a rerun, or a second process)
        #expect(try store.table(a).contentHash != store.table(c).contentHash)
        // The triggers refuse at the SQLite level (RAISE(ABORT) → SQLITE_CONSTRAINT_TRIGGER) ...
        let update = #expect(throws: DatabaseError.self) { try store.writer.write { db in try db.execute(sql: "UPDATE threshold_tables SET clamp_fraction = 0.5 WHERE id = ?", arguments: [a]) } }
        #expect(update?.extendedResultCode == .SQLITE_CONSTRAINT_TRIGGER)
        #expect(update?.message == "threshold tables are immutable; solve again to add a new one")
        let delete = #expect(throws: DatabaseError.self) { try store.writer.write { db in try db.execute(sql: "DELETE FROM table_layers WHERE table_id = ?", arguments: [a]) } }
        #expect(delete?.extendedResultCode == .SQLITE_CONSTRAINT_TRIGGER)
        #expect(delete?.message == "threshold tables are immutable")
        // ... and the store's write path reports that refusal as a database error naming the file.
        let mapped = #expect(throws: StoreError.self) { try store.write { db in try db.execute(sql: "UPDATE threshold_tables SET clamp_fraction = 0.5 WHERE id = ?", arguments: [a]) } }
        guard case let .database(path, detail)? = mapped else { Issue.record("wrong case: \(String(describing: mapped))"); return }
        #expect(path == "\(dir)/cal.sqlite")
        #expect(detail.contains("threshold tables are immutable; solve again to add a new one"))
        let mappedDelete = #expect(throws: StoreError.self) { try store.write { db in try db.execute(sql: "DELETE FROM threshold_tables WHERE id = ?", arguments: [a]) } }
        guard case let .database(_, deleteDetail)? = mappedDelete else { Issue.record("wrong case: \(String(describing: mappedDelete))"); return }
        #expect(deleteDetail.contains("threshold tables are immutable"))
        #expect(try store.table(a).parameters.clampFraction == 0.1)
        #expect(try count(store, "table_layers") == 4)
        #expect(try store.tables().map(\.id) == [a, c])
    }

    @Test func databaseUsesWALAndRecordsTheSchemaVersion() throws {
        let dir = SyntheticRecordings.tempDir()
        let store = try CalibrationStore(path: "\(dir)/cal.sqlite")
        let (mode, version) = try store.read { db in
            (try String.fetchOne(db, sql: "PRAGMA journal_mode") ?? "", try Int.fetchOne(db, sql: "PRAGMA user_version") ?? 0)
        }
        #expect(mode == "wal")
        #expect(version == CalibrationStore.schemaVersion)
    }

    @Test func refusesADatabaseFromANewerSchema() throws {
        let dir = SyntheticRecordings.tempDir()
        let path = "\(dir)/cal.sqlite"
        _ = try CalibrationStore(path: path)
        let q = try DatabaseQueue(path: path)
        try q.write { db in
            try db.execute(sql: "PRAGMA user_version = 9")
            try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v9: from the future')")
        }
        try q.close()
        do {
            _ = try CalibrationStore(path: path)
            Issue.record("newer schema accepted")
        } catch let e as StoreError {
            #expect(e == .newerSchema(path: path, found: 9, supported: CalibrationStore.schemaVersion))
            #expect("\(e)".contains("newer longmamba"))
        }
        #expect(throws: StoreError.newerSchema(path: path, found: 9, supported: CalibrationStore.schemaVersion)) { try CalibrationStore(path: path, readOnly: true) }
    }

    @Test func unknownTableAndRunAreClearErrors() throws {
        let dir = SyntheticRecordings.tempDir()
        let store = try CalibrationStore(path: "\(dir)/cal.sqlite")
        #expect(throws: StoreError.unknownTable(path: "\(dir)/cal.sqlite", id: 42)) { try store.table(42) }
        #expect(throws: StoreError.unknownRun(path: "\(dir)/cal.sqlite", id: 7)) { try TableService(store: store).solve(run: 7, clampFraction: 0.1, aggregation: .max) }
        let missing = "\(dir)/missing.sqlite"
        #expect(throws: StoreError.noSuchDatabase(path: missing)) {
            try CalibrationStore(path: missing, readOnly: true)
        }
        #expect(!FileManager.default.fileExists(atPath: missing))
    }

    @Test func readOnlyStoreRefusesWritesAndLeavesDataIntact() throws {
        let dir = SyntheticRecordings.tempDir()
        let path = "\(dir)/cal.sqlite"
        let run = try CalibrationStore(path: path).importRecordings(try SyntheticRecordings.write(in: dir))
        let ro = try CalibrationStore(path: path, readOnly: true)
        #expect(throws: StoreError.readOnly(path: path)) { try TableService(store: ro).solve(run: run, clampFraction: 0.1, aggregation: .max, interval: 100, maxLength: 500) }
        #expect(try count(ro, "threshold_tables") == 0)
        #expect(try ro.run(run).status == .complete)
    }

    @Test func lockedDatabaseIsAClearError() throws {
        let dir = SyntheticRecordings.tempDir()
        let path = "\(dir)/cal.sqlite"
        let files = try SyntheticRecordings.write(in: dir)
        let store = try CalibrationStore(path: path, busyTimeout: 0.2)
        var config = Configuration()
        config.allowsUnsafeTransactions = true
        let other = try DatabaseQueue(path: path, configuration: config)
        try other.inDatabase { db in try db.execute(sql: "BEGIN IMMEDIATE") }  // another writer holds the lock
        #expect(throws: StoreError.locked(path: path)) { try store.importRecordings(files) }
        try other.inDatabase { db in try db.execute(sql: "ROLLBACK") }
        #expect(try count(store, "calibration_runs") == 0)
        _ = try store.importRecordings(files)
    }

    @Test func interruptedWritesLeaveTheDatabaseConsistent() throws {
        let dir = SyntheticRecordings.tempDir()
        let store = try CalibrationStore(path: "\(dir)/cal.sqlite")
        let files = try SyntheticRecordings.write(in: dir)
        #expect(throws: SimulatedInterruption(afterLayers: 3)) { try store.importRecordings(files, representation: nil, provenance: RunProvenance(), failAfterLayers: 3) }
        #expect(try count(store, "calibration_runs") == 0)
        #expect(try count(store, "recordings") == 0)
        let run = try store.importRecordings(files)
        let first = try TableService(store: store).solve(run: run, clampFraction: 0.2, aggregation: .max, interval: 100, maxLength: 500)
        let layers = try (0..<2).map { try store.tableLayer(table: first, layer: $0) }
        var params = try store.table(first).parameters
        params.clampFraction = 0.3   // another table (the same one would be reused, not written)
        #expect(throws: SimulatedInterruption(afterLayers: 1)) { try store.saveTable(run: run, method: CalibrationStore.longMambaMethod, parameters: params, layers: layers, failAfterLayers: 1) }
        #expect(try count(store, "threshold_tables") == 1)
        #expect(try count(store, "table_layers") == 2)
        #expect(try store.tableLayer(table: first, layer: 1) == layers[1])
    }

    @Test func badRecordingsAreRefusedNamingFileAndPosition() throws {
        let dir = SyntheticRecordings.tempDir()
        let store = try CalibrationStore(path: "\(dir)/cal.sqlite")
        let nan = try SyntheticRecordings.write(in: "\(dir)", samples: 2) { s, layer, d in if s == 1 && layer == 1 { d[13] = .nan } }
        do { _ = try store.importRecordings(nan); Issue.record("NaN accepted") } catch {
            #expect("\(error)".contains("sample1.safetensors") && "\(error)".contains("layer 1") && "\(error)".contains("token 2, channel 1"))
            #expect(error as? RecordingError == .invalidLayer(path: nan[1], .invalidDelta(
                "\(nan[1]): layer 1: Δ[token 2, channel 1] = nan; Δ = softplus(·) must be finite and ≥ 0 (check the runner's dt path)")), "\(error)")
        }
        let negDir = SyntheticRecordings.tempDir()
        let negative = try SyntheticRecordings.write(in: negDir, samples: 1) { _, _, d in d[0] = -0.5 }
        let negativeError = #expect(throws: RecordingError.self) { try store.importRecordings(negative) }
        #expect(negativeError?.path == negative[0])
        #expect(negativeError == .invalidLayer(path: negative[0], .invalidDelta(
            "\(negative[0]): layer 0: Δ[token 0, channel 0] = -0.5; Δ = softplus(·) must be finite and ≥ 0 (check the runner's dt path)")),
                "\(String(describing: negativeError))")
        #expect(negativeError?.description.hasPrefix("\(negative[0]): invalid Δ recording: \(negative[0]): layer 0: Δ[token 0, channel 0] = -0.5;") == true,
                "\(String(describing: negativeError))")
        let a = try SyntheticRecordings.write(in: SyntheticRecordings.tempDir(), samples: 1, C: 6)
        let b = try SyntheticRecordings.write(in: SyntheticRecordings.tempDir(), samples: 1, C: 5)
        do { _ = try store.importRecordings(a + b); Issue.record("channel mismatch accepted") } catch {
            #expect(error as? RecordingError == .channelMismatch(path: b[0], layer: 0, channels: 5, aShape: [5], firstPath: a[0], firstChannels: 6, firstAShape: [6]),
                    "\(error)")
            #expect("\(error)" == "\(b[0]): layer 0 has 5 channels (A [5]) but \(a[0]) has 6 (A [6])")
        }
        let c = try SyntheticRecordings.write(in: SyntheticRecordings.tempDir(), samples: 1, layers: 3)
        let layerError = #expect(throws: RecordingError.self) { try store.importRecordings(a + c) }
        #expect(layerError == .layerCountMismatch(path: c[0], layers: 3, firstPath: a[0], firstLayers: 2))
        #expect(layerError?.description == "\(c[0]): has 3 layers but \(a[0]) has 2")
        #expect(try count(store, "calibration_runs") == 0)
    }

    @Test func sketchedMambaOneRunsAreStoredSmallAndSolveClose() throws {
        let dir = SyntheticRecordings.tempDir()
        let files = try SyntheticRecordings.write(in: dir, samples: 2, layers: 1, L: 512, C: 40, stateSize: 4, architecture: "mamba")
        let store = try CalibrationStore(path: "\(dir)/cal.sqlite")
        #expect(DeltaRepresentation.automatic(architecture: "mamba", channels: 4096) == .sketch(bytesPerChannel: DeltaRepresentation.defaultSketchBytes))
        #expect(DeltaRepresentation.automatic(architecture: "mamba2", channels: 4096) == .exact)
        let run = try store.importRecordings(files, representation: .sketch(bytesPerChannel: 200))
        #expect(try store.recordingEncodings(run: run) == [DeltaRepresentation.sketchEncoding])
        #expect(try store.recordingBytes(run: run) <= 2 * 40 * (200 + 4 * 4))
        let id = try TableService(store: store).solve(run: run, clampFraction: 0.2, aggregation: .mean, interval: 1000, maxLength: 20_000)
        let exact = try DeltaThresholdSolver.solveLayer(samples: try files.map { try RecordingFile(path: $0).layer(0) },
                                                        parameters: try store.table(id).parameters)
        let stored = try store.tableLayer(table: id, layer: 0)
        let errors: [Double] = zip(exact.deltaThreshold, stored.deltaThreshold).filter { $0.0 > 0 }.map { (e: (Float, Float)) -> Double in Double(abs(e.0 - e.1) / e.0) }
        #expect(!errors.isEmpty)
        let meanError: Double = errors.reduce(0, +) / Double(errors.count)
        #expect(meanError < 2e-3)
    }
}

/// A database written by the schema-v1 tool (Fixtures/store/v1.sqlite, made by
/// scripts/make-v1-store-fixture.sh): a `calibrate` run (2 × 256 tokens of the calibration
/// fixture) with its table, and an imported run of two solver fixtures with its table.
@Suite struct SchemaMigrationTests {
    static let fixture = ModelFixtures.root.appendingPathComponent("Fixtures/store/v1.sqlite").path

    func migratedCopy() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lm-v1-\(UUID().uuidString).sqlite").path
        try FileManager.default.copyItem(atPath: Self.fixture, toPath: path)
        return path
    }

    @Test func aVersionOneDatabaseOpensReadOnlyWithoutBeingMigrated() throws {
        let path = try migratedCopy()
        #expect(throws: StoreError.olderSchema(path: path, found: 1, current: CalibrationStore.schemaVersion)) { try CalibrationStore(path: path, readOnly: true) }
        let q = try DatabaseQueue(path: path)
        #expect(try q.read { try Int.fetchOne($0, sql: "PRAGMA user_version") } == 1)
    }

    @Test func aVersionOneDatabaseMigratesKeepingRunsRecordingsAndTables() throws {
        let path = try migratedCopy()
        let v1 = try DatabaseQueue(path: path)
        let (oldMetadata, oldHashes, oldLayers) = try v1.read { db in
            (try String.fetchOne(db, sql: "SELECT recording_metadata_json FROM calibration_runs WHERE id = 1")!,
             try String.fetchAll(db, sql: "SELECT content_hash FROM threshold_tables ORDER BY id"),
             try Row.fetchAll(db, sql: "SELECT * FROM table_layers ORDER BY table_id, layer_index"))
        }
        try v1.close()
        let old = try #require(try JSONSerialization.jsonObject(with: Data(oldMetadata.utf8)) as? [String: Any])
        let oldSequences = try #require(old["sequences"] as? [[Int]])

        let store = try CalibrationStore(path: path)
        #expect(try store.read { try Int.fetchOne($0, sql: "PRAGMA user_version") } == CalibrationStore.schemaVersion)
        let runs = try store.runs()
        #expect(runs.map(\.id) == [1, 2])
        // The calibrate run: identity in columns, tokens in run_samples, the JSON without them.
        #expect(runs[0].calibrationKey == old["calibration_key"] as? String && runs[0].calibrationKey?.count == 64)
        #expect(runs[0].description == old["calibration_description"] as? String)
        #expect(runs[0].sampleLength == 256 && runs[0].sampleCount == 2 && runs[0].status == .complete)
        #expect(try store.sequences(run: 1).map { $0.map(Int.init) } == oldSequences)
        let metadata = try #require(try JSONSerialization.jsonObject(with: Data(runs[0].recordingMetadataJSON.utf8)) as? [String: Any])
        #expect(metadata["sequences"] == nil && metadata["calibration_key"] == nil && metadata["architecture"] as? String == "mamba2")
        // The imported run has no key and no sampled tokens.
        #expect(runs[1].calibrationKey == nil && runs[1].sampleLength == 100)
        #expect(try store.sequences(run: 2).isEmpty)
        // Tables are untouched, and solving the migrated recordings again gives the same content.
        #expect(try store.tables().map(\.contentHash) == oldHashes)
        let newLayers = try store.read { try Row.fetchAll($0, sql: "SELECT * FROM table_layers ORDER BY table_id, layer_index") }
        #expect(newLayers == oldLayers)
        for table in try store.tables() {
            let again = try TableService(store: store).solve(run: table.runID, parameters: table.parameters)
            #expect(try store.table(again).contentHash == table.contentHash)
        }
        #expect(try store.read { try String.fetchOne($0, sql: "PRAGMA integrity_check") } == "ok")
        #expect(try store.read { try Row.fetchAll($0, sql: "PRAGMA foreign_key_check") }.isEmpty)
    }

    @Test func aMigratedCalibrationResumesAsFinishedAndReusesItsTable() throws {
        let path = try migratedCopy()
        var o = CalibrationOptions(modelDirectory: ModelFixtures.model("mamba2-tiny-calib"),
                                   corpusPaths: [ModelFixtures.root.appendingPathComponent("Fixtures/corpus/fixture.jsonl.zst").path],
                                   databasePath: path)
        o.sampleCount = 2; o.interval = 256; o.maxLength = 2048
        let result = try CalibrationJob(options: o).run()
        #expect(result.runID == 1 && result.samplesRecorded == 0 && result.samplesResumed == 2)
        #expect(result.tableIDs == [1])
        #expect(try CalibrationStore(path: path, readOnly: true).tables().count == 2)
    }
}
