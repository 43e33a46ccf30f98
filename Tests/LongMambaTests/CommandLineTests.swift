import Foundation
import Testing
@testable import LongMamba

/// The CLI's one grammar (Sources/longmamba/Grammar.swift), tested on the built executable.
@Suite(.serialized) struct CommandLineTests {
    /// Runs the tool; returns (status, stdout, stderr). Outputs are small: pipes are read after exit.
    static func run(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
        guard let exe = Tool.executable else { throw Tool.Missing() }
        let dir = Tool.directory()
        FileManager.default.createFile(atPath: dir + "/out", contents: nil)
        FileManager.default.createFile(atPath: dir + "/err", contents: nil)
        let p = Process()
        p.executableURL = exe
        p.arguments = arguments
        p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/out"))
        p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/err"))
        try p.run()
        p.waitUntilExit()
        return (p.terminationStatus, (try? String(contentsOfFile: dir + "/out", encoding: .utf8)) ?? "",
                (try? String(contentsOfFile: dir + "/err", encoding: .utf8)) ?? "")
    }

    /// One calibrated fixture store shared by the tests of this suite.
    static let store: String = {
        let db = Tool.directory() + "/cli.sqlite"
        var o = CalibrationFixture.options(db: db)
        o.clampFractions = [0.05]
        _ = try? CalibrationJob(options: o).run()
        return db
    }()

    @Test func inspectOfAModelPrintsTheFingerprintTablesAreKeyedBy() throws {
        let dir = ModelFixtures.model("mamba2-tiny-hf")
        let r = try Self.run(["inspect", "--model", dir, "--json"])
        #expect(r.status == 0, "\(r.err)")
        let json = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any]
        #expect(json?["fingerprint"] as? String == (try ModelCheckpoint(directory: dir)).fingerprint())
        #expect(json?["architecture"] as? String == "mamba2" && json?["model"] as? String == dir)
        let both = try Self.run(["inspect", "--model", dir, "--db", Self.store, "--table", "1"])
        #expect(both.status != 0 && both.err.contains("either --model DIR or --db FILE --table ID"))
    }

    @Test func lengthsTakeThousandsWithK() throws {
        let a = try Self.run(["lookup", "--db", Self.store, "--table", "1", "--length", "2k", "--layer", "0"])
        let b = try Self.run(["lookup", "--db", Self.store, "--table", "1", "--length", "2000", "--layer", "0"])
        #expect(a.status == 0 && a.out == b.out && a.out.contains("\"requested_length\":2000"), "\(a.err)")
    }

    @Test func thetaAtOrBelowZeroIsAnErrorOnEveryCommand() throws {
        for arguments in [["lookup", "--db", Self.store, "--table", "1", "--length", "512", "--theta=-1"],
                          ["report", "--db", Self.store, "--table", "1", "--theta", "0", "--out", Tool.directory() + "/r.html"],
                          ["export", "--db", Self.store, "--table", "1", "--format", "json", "--theta", "0", "--out", Tool.directory() + "/t.json"],
                          ["inspect", "--db", Self.store, "--table", "1", "--theta", "0"],
                          ["sweep", "--db", Self.store, "--run", "1", "--clamp", "0.05", "--theta", "0.05,-0.1"]] {
            let r = try Self.run(arguments)
            #expect(r.status != 0, "\(arguments[0]) exited 0")
            #expect(r.err.contains("must be a finite number > 0"), "\(arguments[0]): \(r.err)")
            // The subcommand's usage, not the top-level one.
            #expect(!r.err.contains("SUBCOMMANDS"), "\(arguments[0]) printed the top-level usage: \(r.err)")
        }
    }

    @Test func listsRepeatOrCommaSeparate() throws {
        let repeated = try Self.run(["sweep", "--db", Self.store, "--run", "1", "--clamp", "0.05", "--clamp", "0.1", "--summary-lengths", "1k"])
        let commas = try Self.run(["sweep", "--db", Self.store, "--run", "1", "--clamp", "0.05,0.1", "--summary-lengths", "1000"])
        #expect(repeated.status == 0 && commas.status == 0, "\(repeated.err) \(commas.err)")
        #expect(repeated.out == commas.out)
        #expect(repeated.out.contains("p = 0.05") && repeated.out.contains("p = 0.1"))
        let empty = try Self.run(["sweep", "--db", Self.store, "--run", "1", "--clamp", ""])
        #expect(empty.status != 0 && empty.err.contains("--clamp needs at least one value"), "\(empty.err)")
    }

    @Test func oldSpellingsStillParse() throws {
        let corpus = CalibrationFixture.corpus
        let tokenizer = CalibrationFixture.model + "/tokenizer.json"
        let a = try Self.run(["sample", "--corpus", corpus, "--tokenizer", tokenizer, "--length", "64", "--samples", "2", "--seed", "1", "--out", Tool.directory()])
        let b = try Self.run(["sample", "--corpus", corpus, "--tokenizer", tokenizer, "--length", "64", "--count", "2", "--seed", "1", "--out", Tool.directory()])
        #expect(a.status == 0 && b.status == 0, "\(a.err) \(b.err)")
        #expect(a.err.contains("wrote 2 sequences") && b.err.contains("wrote 2 sequences"), "\(a.err)")
    }

    @Test func exportToStandardOutputIsTheFileAndSaysNoThetaTravels() throws {
        let file = Tool.directory() + "/t.json"
        let toFile = try Self.run(["export", "--db", Self.store, "--table", "1", "--format", "json", "--out", file])
        let toStdout = try Self.run(["export", "--db", Self.store, "--table", "1", "--format", "json", "--out", "-"])
        #expect(toFile.status == 0 && toStdout.status == 0)
        #expect(toStdout.out == (try String(contentsOfFile: file, encoding: .utf8)))
        #expect(!FileManager.default.fileExists(atPath: FileManager.default.currentDirectoryPath + "/-"))
        #expect(toFile.err.contains("no θ travels with this export"))
        let artifacts = try Self.run(["export", "--db", Self.store, "--table", "1", "--format", "longmamba-artifacts", "--out", "-"])
        #expect(artifacts.status != 0 && artifacts.err.contains("writes a directory"))
    }

    @Test func foundationErrorsAreWords() throws {
        let r = try Self.run(["report", "--db", Self.store, "--table", "1", "--out", "/nonexistent-dir/r.html"])
        #expect(r.status != 0)
        #expect(r.err.contains("/nonexistent-dir/r.html: cannot write: no such file or directory"), "\(r.err)")
        #expect(!r.err.contains("NSCocoaErrorDomain"))
        let missing = try Self.run(["tables", "--db", Tool.directory() + "/none.sqlite"])
        #expect(missing.err.contains("longmamba calibrate"), "\(missing.err)")
    }

    @Test func progressOffATerminalIsPlainLinesAtABoundedRate() throws {
        let start = Date()
        let r = try Self.run(["eval", "--task", "passkey", "--model", ModelFixtures.root.appendingPathComponent("Fixtures/demo-model").path,
                              "--lengths", "128,256", "--depths", "0,1", "--trials", "6"])
        let seconds = Date().timeIntervalSince(start)
        #expect(r.status == 0, "\(r.err)")
        #expect(!r.err.contains("\r") && !r.err.contains("█"))
        // 24 trials: at most one line per 5 s (plus the first), not one per trial.
        let lines = r.err.split(separator: "\n").filter { $0.contains("trial") }
        #expect(lines.count <= 1 + Int(seconds / 5), "\(lines.count) progress lines in \(seconds) s")
        let quiet = try Self.run(["eval", "--task", "passkey", "--model", ModelFixtures.root.appendingPathComponent("Fixtures/demo-model").path,
                                  "--lengths", "128", "--depths", "0", "--trials", "1", "--quiet"])
        #expect(quiet.status == 0 && quiet.err.isEmpty, "\(quiet.err)")
    }

    @Test func tablesAndRunsListAsJSONAndInspectPutsTheSummaryFirst() throws {
        let tables = try Self.run(["tables", "--db", Self.store, "--json"])
        let list = try JSONSerialization.jsonObject(with: Data(tables.out.utf8)) as? [[String: Any]]
        // (the sweep test of this suite may have added tables: table 1 is calibrate's)
        #expect(list?.first?["id"] as? Int == 1 && list?.first?["clamp_fraction"] as? Double == 0.05, "\(tables.out)")
        let runs = try Self.run(["runs", "--db", Self.store, "--json"])
        let run = (try JSONSerialization.jsonObject(with: Data(runs.out.utf8)) as? [[String: Any]])?.first
        #expect(run?["status"] as? String == "complete" && run?["samples_committed"] as? Int == 3 && run?["table_interval"] as? Int == 256, "\(runs.out)")
        let inspect = try Self.run(["inspect", "--db", Self.store, "--table", "1"])
        #expect(inspect.out.hasPrefix("table 1 of run 1: mamba2"), "\(inspect.out)")
        let provenance = try #require(inspect.out.range(of: "provenance:"))
        #expect(inspect.out[provenance.upperBound...].contains("corpus_provenance:"))
        #expect(!inspect.out[..<provenance.lowerBound].contains("corpus_provenance:"))
    }

    @Test func aFinishedRunLeavesNoWriteAheadLogBehind() throws {
        let db = Tool.directory() + "/wal.sqlite"
        let calibrate = try Self.run(Tool.calibrateArguments(db: db, samples: 2) + ["--quiet"])
        #expect(calibrate.status == 0, "\(calibrate.err)")
        _ = try Self.run(["lookup", "--db", db, "--table", "1", "--length", "512"])
        _ = try Self.run(["tables", "--db", db])
        for suffix in ["-wal", "-shm"] { #expect(!FileManager.default.fileExists(atPath: db + suffix), "\(db + suffix) stayed") }
    }

    @Test func theRecordingCommandPrintsTheDecodedRecording() throws {
        let r = try Self.run(["recording", "--db", Self.store, "--run", "1", "--sample", "0", "--layer", "1"])
        #expect(r.status == 0, "\(r.err)")
        let json = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any]
        let rows = json?["sorted_delta"] as? [[Double]] ?? []
        let decoded = try CalibrationStore(path: Self.store, readOnly: true).layerSamples(run: 1, layer: 1)[0]
        #expect(rows.count == decoded.channels && rows.allSatisfy { $0.count == decoded.length })
        #expect(rows.flatMap { $0 }.map { Float($0) } == decoded.sortedDelta)
    }
}
