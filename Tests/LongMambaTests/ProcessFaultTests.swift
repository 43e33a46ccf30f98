// Real processes against one database: SIGKILL at random moments (the crash soak) and concurrent
// writers and readers. The `longmamba` executable built beside the tests runs the fixture
// calibration (tiny Mamba-2, 10 samples of 256 tokens, 1024 table rows); after every kill the
// store must pass `PRAGMA integrity_check`, hold no duplicated recording and no partial table,
// and a rerun must end with the uninterrupted run's table hash.
//
// LONGMAMBA_SOAK_KILLS sets the kills per soak (default 20; scripts/crash-soak.sh runs more).
import Foundation
import GRDB
import Testing
@testable import LongMamba

enum Tool {
    static let model = CalibrationFixture.model
    static let corpus = CalibrationFixture.corpus

    static var executable: URL? {
        let candidates = [Bundle.main.bundleURL, Bundle.main.bundleURL.deletingLastPathComponent()]
            + [ModelFixtures.root.appendingPathComponent(".build/release"), ModelFixtures.root.appendingPathComponent(".build/debug")]
        return candidates.map { $0.appendingPathComponent("longmamba") }.first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }

    static func directory() -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lm-proc-\(UUID().uuidString)").path
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    static func calibrateArguments(db: String, samples: Int = 10, seed: Int = 0, shard: String? = nil) -> [String] {
        ["calibrate", "--model", model, "--corpus", corpus, "--db", db, "--samples", "\(samples)",
         "--interval", "64", "--max-length", "65536", "--seed", "\(seed)"] + (shard.map { ["--shard", $0] } ?? [])
    }

    /// A started child whose stderr goes to a file (never a full pipe).
    final class Child {
        let process = Process()
        let stderrPath: String
        init(_ arguments: [String], environment: [String: String] = [:]) throws {
            guard let exe = Tool.executable else { throw Missing() }
            stderrPath = Tool.directory() + "/stderr.txt"
            FileManager.default.createFile(atPath: stderrPath, contents: nil)
            process.executableURL = exe
            process.arguments = arguments
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
            process.standardOutput = FileHandle.nullDevice
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
            try process.run()
        }
        var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }
        /// Waits and returns (exit status, stderr).
        func finish() -> (Int32, String) { process.waitUntilExit(); return (process.terminationStatus, stderr) }
        /// SIGKILL after `delay` seconds; true when the child was still running (a real kill).
        func kill(after delay: Double) -> Bool {
            let deadline = Date().addingTimeInterval(delay)
            while process.isRunning && Date() < deadline { usleep(500) }
            guard process.isRunning else { process.waitUntilExit(); return false }
            Foundation.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return true
        }
    }
    struct Missing: Error, CustomStringConvertible { var description: String { "longmamba executable not built next to the tests (run `swift build -c release` first)" } }

    static func run(_ arguments: [String]) throws -> (Int32, String) { try Child(arguments).finish() }

    /// The invariants a store must keep after any kill.
    static func checkStore(_ path: String, layers: Int) throws {
        guard FileManager.default.fileExists(atPath: path) else { return }
        let queue = try DatabaseQueue(path: path)   // read-write: lets SQLite recover a hot WAL, as the tool would
        try queue.read { db in
            let integrity = try String.fetchAll(db, sql: "PRAGMA integrity_check")
            #expect(integrity == ["ok"], "\(path): integrity_check \(integrity)")
            guard try db.tableExists("recordings") else { return }
            let duplicates = try Int.fetchOne(db, sql: "SELECT COUNT(*) - COUNT(DISTINCT run_id || '/' || sample_index || '/' || layer_index) FROM recordings") ?? -1
            #expect(duplicates == 0, "\(path): \(duplicates) duplicated recordings")
            let partial = try Int.fetchOne(db, sql: """
                SELECT COUNT(*) FROM threshold_tables t WHERE (SELECT COUNT(*) FROM table_layers l WHERE l.table_id = t.id) != ?
                """, arguments: [layers]) ?? -1
            #expect(partial == 0, "\(path): \(partial) tables without all \(layers) layers")
            // A recording run never has a table; a complete one has all its recordings.
            let badComplete = try Int.fetchOne(db, sql: """
                SELECT COUNT(*) FROM calibration_runs r WHERE r.status = 'complete'
                AND (SELECT COUNT(*) FROM recordings x WHERE x.run_id = r.id) != r.sample_count * r.layer_count
                """) ?? -1
            #expect(badComplete == 0, "\(path): a complete run with missing recordings")
        }
        try queue.close()
    }

    static func tableHashes(_ path: String) throws -> [String] {
        try CalibrationStore(path: path, readOnly: true).tables().map(\.contentHash)
    }

    /// Which stage the child had reached, from its last progress line.
    static func stage(_ stderr: String) -> String {
        let last = stderr.split(whereSeparator: { $0 == "\n" || $0 == "\r" }).last.map(String.init) ?? ""
        if last.isEmpty { return "before any progress line" }
        if last.hasPrefix("sampling") || last.hasPrefix("sampled") { return "sampling" }
        if last.contains("committed") || last.hasPrefix("recording") { return "recording" }
        if last.hasPrefix("solving") { return "solving" }
        return "storing"
    }

    static var kills: Int { Int(ProcessInfo.processInfo.environment["LONGMAMBA_SOAK_KILLS"] ?? "") ?? 20 }
}

@Suite(.serialized) struct ProcessFaultTests {
    /// Kills `arguments` at `Tool.kills` seeded random moments within its uninterrupted wall time,
    /// rerunning to completion between kills; returns (kills that hit a running process, stages hit).
    func soak(name: String, arguments: @escaping (String) -> [String], prepare: (String) throws -> Void = { _ in },
              layers: Int) throws -> (kills: Int, stages: [String: Int]) {
        let dir = Tool.directory()
        let reference = dir + "/reference.sqlite"
        try prepare(reference)
        let start = Date()
        let (status, log) = try Tool.run(arguments(reference))
        let wall = Date().timeIntervalSince(start)
        try #require(status == 0, "\(name): uninterrupted run failed: \(log)")
        let expected = try Tool.tableHashes(reference)
        var rng = SplitMix64(seed: 2026)
        var kills = 0, attempts = 0, stages: [String: Int] = [:]
        var db = dir + "/soak-0.sqlite"
        try prepare(db)
        while kills < Tool.kills && attempts < Tool.kills * 5 {
            attempts += 1
            let child = try Tool.Child(arguments(db))
            let delay = wall * Double(rng.next() % 1000) / 1000
            if child.kill(after: delay) {
                kills += 1
                stages[Tool.stage(child.stderr), default: 0] += 1
                try Tool.checkStore(db, layers: layers)
            } else {
                // It finished before the kill: the result must be the uninterrupted one; start over.
                #expect(child.process.terminationStatus == 0, "\(name): rerun failed: \(child.stderr)")
                try Tool.checkStore(db, layers: layers)
                #expect(try Tool.tableHashes(db) == expected, "\(name): tables differ after \(kills) kills")
                db = dir + "/soak-\(attempts).sqlite"
                try prepare(db)
            }
        }
        // Finish the last database and compare.
        let (final, finalLog) = try Tool.run(arguments(db))
        #expect(final == 0, "\(name): final rerun failed: \(finalLog)")
        try Tool.checkStore(db, layers: layers)
        #expect(try Tool.tableHashes(db) == expected)
        print("\(name) soak: \(kills) kills survived in \(attempts) starts; stages hit: \(stages.sorted { $0.key < $1.key })")
        return (kills, stages)
    }

    @Test func calibrateSurvivesKillsAtRandomMomentsAndEndsWithTheSameTable() throws {
        guard Tool.executable != nil else { throw Tool.Missing() }
        let result = try soak(name: "calibrate", arguments: { Tool.calibrateArguments(db: $0) }, layers: 2)
        #expect(result.kills == Tool.kills)
    }

    @Test func mergeSurvivesKillsAndEndsWithTheSameTable() throws {
        guard Tool.executable != nil else { throw Tool.Missing() }
        let dir = Tool.directory()
        let shards = (0..<2).map { dir + "/shard\($0).sqlite" }
        for (i, shard) in shards.enumerated() {
            let (status, log) = try Tool.run(Tool.calibrateArguments(db: shard, shard: "\(i)/2"))
            try #require(status == 0, "shard \(i): \(log)")
        }
        let result = try soak(name: "merge", arguments: { ["merge", "--db", $0] + shards + ["--interval", "64", "--max-length", "65536"] }, layers: 2)
        #expect(result.kills == Tool.kills)
    }

    @Test func solveAndSweepOnAStoredRunSurviveKills() throws {
        guard Tool.executable != nil else { throw Tool.Missing() }
        let dir = Tool.directory()
        let base = dir + "/base.sqlite"
        let (status, log) = try Tool.run(Tool.calibrateArguments(db: base))
        try #require(status == 0, "\(log)")
        let copy: (String) throws -> Void = { path in
            for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: base + suffix) {
                try? FileManager.default.removeItem(atPath: path + suffix)
                try FileManager.default.copyItem(atPath: base + suffix, toPath: path + suffix)
            }
        }
        let solve = try soak(name: "solve", arguments: { ["solve", "--db", $0, "--run", "1", "--clamp", "0.2", "--aggregate", "mean", "--interval", "64", "--max-length", "65536"] },
                             prepare: copy, layers: 2)
        let sweep = try soak(name: "sweep", arguments: { ["sweep", "--db", $0, "--run", "1", "--clamp", "0.1,0.2,0.3", "--interval", "64", "--max-length", "65536"] },
                             prepare: copy, layers: 2)
        #expect(solve.kills == Tool.kills && sweep.kills == Tool.kills)
    }

    // MARK: concurrent processes on one database

    /// Runs the children to the end; (status, stderr) each.
    func together(_ argumentLists: [[String]], environment: [String: String] = [:]) throws -> [(Int32, String)] {
        let children = try argumentLists.map { try Tool.Child($0, environment: environment) }
        return children.map { $0.finish() }
    }

    @Test func twoCalibratesOfOneCalibrationEndWithOneRunAndTheSameTable() throws {
        guard Tool.executable != nil else { throw Tool.Missing() }
        let dir = Tool.directory()
        let reference = dir + "/reference.sqlite"
        #expect(try Tool.run(Tool.calibrateArguments(db: reference)).0 == 0)
        for round in 0..<3 {
            let db = dir + "/both-\(round).sqlite"
            let results = try together([Tool.calibrateArguments(db: db), Tool.calibrateArguments(db: db)],
                                       environment: ["LONGMAMBA_TEST_PAUSE_AFTER_SAMPLE": "0.02"])
            for (status, log) in results where status != 0 {
                #expect(log.contains("locked") || log.contains("another"), "round \(round): unclear refusal: \(log)")
            }
            #expect(results.contains { $0.0 == 0 }, "round \(round): neither calibrate finished: \(results.map(\.1))")
            try Tool.checkStore(db, layers: 2)
            // A refused one, rerun, finds the finished calibration.
            #expect(try Tool.run(Tool.calibrateArguments(db: db)).0 == 0)
            let store = try CalibrationStore(path: db, readOnly: true)
            #expect(try store.runs().count == 1)
            #expect(try Tool.tableHashes(db) == Tool.tableHashes(reference))
        }
    }

    @Test func twoDifferentCalibrationsOnOneDatabaseRefuseOneWithTheReason() throws {
        guard Tool.executable != nil else { throw Tool.Missing() }
        let db = Tool.directory() + "/two.sqlite"
        let results = try together([Tool.calibrateArguments(db: db, seed: 1), Tool.calibrateArguments(db: db, seed: 2)])
        #expect(results.filter { $0.0 == 0 }.count == 1, "\(results.map(\.1))")
        for (status, log) in results where status != 0 {
            #expect(log.contains("seed") || log.contains("locked"), "unclear refusal: \(log)")
        }
        try Tool.checkStore(db, layers: 2)
        #expect(try CalibrationStore(path: db, readOnly: true).runs().count == 1)
    }

    @Test func solveSweepAndReadersWhileCalibrateWritesGetDataOrAClearMessage() throws {
        guard Tool.executable != nil else { throw Tool.Missing() }
        let dir = Tool.directory()
        let db = dir + "/busy.sqlite"
        // Slow the writer down (0.15 s after each committed sample) so the others overlap it.
        let writer = try Tool.Child(Tool.calibrateArguments(db: db), environment: ["LONGMAMBA_TEST_PAUSE_AFTER_SAMPLE": "0.15"])
        while writer.process.isRunning && !writer.stderr.contains("committed") { usleep(2000) }
        var readerRuns = 0, clearRefusals = 0
        let readers: [[String]] = [
            ["tables", "--db", db],
            ["lookup", "--db", db, "--table", "1", "--length", "4000"],
            ["export", "--db", db, "--table", "1", "--format", "json", "--out", dir + "/t.json"],
            ["report", "--db", db, "--table", "1", "--out", dir + "/r.html"],
            ["solve", "--db", db, "--run", "1", "--clamp", "0.2", "--aggregate", "max", "--interval", "64", "--max-length", "65536"],
            ["sweep", "--db", db, "--run", "1", "--clamp", "0.1", "--interval", "64", "--max-length", "65536"],
        ]
        var sawRecording = false
        while writer.process.isRunning {
            for arguments in readers {
                let child = try Tool.Child(arguments)
                let (status, log) = child.finish()
                readerRuns += 1
                #expect(child.process.terminationReason == .exit, "\(arguments[0]) crashed: \(log)")
                #expect(!log.contains("SQLite error") && !log.contains("SELECT"), "\(arguments[0]): raw SQL in the message: \(log)")
                if status != 0 {
                    clearRefusals += 1
                    let clear = ["no threshold table", "status 'recording'", "locked", "only complete runs"].contains { log.contains($0) }
                    #expect(clear, "\(arguments[0]) refused unclearly: \(log)")
                    if log.contains("status 'recording'") { sawRecording = true }
                }
            }
        }
        let (status, log) = writer.finish()
        #expect(status == 0, "calibrate failed beside readers: \(log)")
        #expect(sawRecording, "solve never ran while the run was recording")
        try Tool.checkStore(db, layers: 2)
        // Nothing was lost: every sample, then the tables calibrate, solve and sweep made.
        let store = try CalibrationStore(path: db, readOnly: true)
        #expect(try store.recordedSamples(run: 1).count == 10)
        #expect(try Tool.run(readers[1]).0 == 0)
        print("concurrency: \(readerRuns) reader/solver processes beside one writer, \(clearRefusals) clear refusals, 0 failures")
    }
}
