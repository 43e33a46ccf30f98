// Regression tests for inputs the fuzzers found (Fixtures/fuzz-regressions/<harness>/, one file
// per crasher, decoded exactly as the harness decodes it) and for damaged stores: each must be a
// typed error naming what is wrong, never a trap.
import Foundation
import GRDB
import Testing
@testable import LongMamba

@Suite struct UntrustedInputTests {
    static func regressionInputs(_ harness: String) throws -> [String] {
        let dir = fixturePath("fuzz-regressions/\(harness)")
        let names = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        #expect(!names.isEmpty, "no regression inputs in \(dir)")
        return names.map { dir + "/" + $0 }
    }

    /// The delta-blob harness's layout: [L − 1 (mod 64), C − 1 (mod 16), encoding parity] + blob.
    static func decodeLikeTheHarness(_ bytes: [UInt8]) throws -> SortedDeltaLayer {
        let L = Int(bytes[0] % 64) + 1, C = Int(bytes[1] % 16) + 1
        let encoding = bytes[2] % 2 == 0 ? DeltaRepresentation.exactEncoding : DeltaRepresentation.sketchEncoding
        return try DeltaBlob.decode(Data(bytes[3...]), encoding: encoding, layer: 0, length: L, channels: C,
                                    A: [Float](repeating: -1, count: C), aShape: [C])
    }

    @Test func deltaBlobCrashersAreRefusedAsDamagedBlobs() throws {
        for path in try Self.regressionInputs("delta-blob") {
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
            #expect(throws: DeltaBlobError.self, "\(path)") { try Self.decodeLikeTheHarness(bytes) }
        }
    }

    @Test func exactBlobWithANegativeOrNaNDeltaNamesChannelAndPosition() throws {
        var values = [Float](repeating: 0.5, count: 2 * 4)   // C = 2 channels × L = 4 tokens
        values[6] = -1.5
        let blob = values.withUnsafeBytes { Data($0) }
        #expect(throws: DeltaBlobError.invalidDelta(layer: 3, channel: 1, position: 2, value: -1.5)) {
            try DeltaBlob.decode(blob, encoding: DeltaRepresentation.exactEncoding, layer: 3, length: 4, channels: 2, A: [-1, -1], aShape: [2])
        }
        values[6] = .nan
        let nanBlob = values.withUnsafeBytes { Data($0) }
        #expect(throws: DeltaBlobError.self) {
            try DeltaBlob.decode(nanBlob, encoding: DeltaRepresentation.exactEncoding, layer: 3, length: 4, channels: 2, A: [-1, -1], aShape: [2])
        }
    }

    /// A sketch whose first code is near Int64.min and whose next gap would take it below:
    /// checked arithmetic used to trap here; now it is a corrupt Rice code.
    @Test func sketchWhoseCodesOverflowIsACorruptRiceCode() throws {
        var w = BitWriter()
        w.write(0, bits: 5)                                  // e = 0
        w.write(4, bits: 32)                                 // n = 4 positives, L = 4 → top zone of 2
        w.write(UInt64(bitPattern: Int64.min + 1), bits: 64) // first code
        w.write(0, bits: 5)                                  // Rice k = 0
        w.writeRice(5, k: 0)                                 // gap 5: Int64.min + 1 − 5 overflows
        let blob = w.finish()
        do {
            _ = try DeltaBlob.decode(blob, encoding: DeltaRepresentation.sketchEncoding, layer: 0, length: 4, channels: 1, A: [-1], aShape: [1])
            Issue.record("an overflowing sketch decoded")
        } catch let error as DeltaBlobError {
            guard case .corruptRiceCode = error else { Issue.record("expected a corrupt Rice code, got \(error)"); return }
        }
    }

    /// A v1 store whose run metadata is NULL (the fuzzer's find: the v2 migration trapped in
    /// GRDB's row subscript). Migrating it now fails as a typed error and leaves the file as it was.
    @Test func damagedStoresFailToMigrateWithAStoreErrorAndStayUnchanged() throws {
        for path in try Self.regressionInputs("store") {
            let copy = SyntheticRecordings.tempDir() + "/damaged.sqlite"
            try FileManager.default.copyItem(atPath: path, toPath: copy)
            let before = try Data(contentsOf: URL(fileURLWithPath: copy))
            #expect(throws: StoreError.self, "\(path)") { _ = try CalibrationStore(path: copy) }
            #expect(try Data(contentsOf: URL(fileURLWithPath: copy)) == before, "\(path) was modified")
        }
    }

    /// config.json with hidden_size ≈ 6.4e35 trapped on `expand × hidden_size` overflow.
    @Test func configCrashersAreRefusedAsConfigErrors() throws {
        for path in try Self.regressionInputs("config") {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            #expect(throws: ConfigError.self, "\(path)") { _ = try ModelConfig.parse(data, path: path) }
        }
        let huge = Data(#"{"model_type": "mamba", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 8, "expand": 9999999}"#.utf8)
        #expect(throws: ConfigError.valueOutOfRange(path: "c.json", key: "expand × hidden_size", value: "639999936", limit: 1 << 24)) {
            _ = try ModelConfig.parse(huge, path: "c.json")
        }
        let fractional = Data(#"{"model_type": "mamba", "hidden_size": 64.5, "num_hidden_layers": 2, "vocab_size": 8}"#.utf8)
        #expect(throws: ConfigError.valueOutOfRange(path: "c.json", key: "hidden_size", value: "64.5", limit: 1 << 24)) {
            _ = try ModelConfig.parse(fractional, path: "c.json")
        }
    }

    /// tokenizer.json with one token id near 6e8 made the loader allocate a 4.8 GB id table.
    @Test func tokenizerWithASparseHugeIdIsMalformedNotAnAllocation() throws {
        for path in try Self.regressionInputs("tokenizer-json") {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            #expect(throws: TokenizerError.self, "\(path)") { _ = try BPETokenizer(data: data, source: path) }
        }
    }

    @Test func emptyTokenFileIsRefusedAsEmpty() throws {
        for path in try Self.regressionInputs("token-file") {
            #expect(throws: TokenFileError.self) { try TokenFile.read(path) }
        }
    }

    @Test func emptyDatabaseFileIsRefusedAsHoldingNoLongMambaSchema() throws {
        let path = SyntheticRecordings.tempDir() + "/empty.sqlite"
        FileManager.default.createFile(atPath: path, contents: Data())
        #expect(throws: StoreError.noLongMambaSchema(path: path, foreignTables: [])) {
            _ = try CalibrationStore(path: path, readOnly: true)
        }
        let message = "\(StoreError.noLongMambaSchema(path: path, foreignTables: []))"
        #expect(message.contains("no longmamba schema") && !message.contains("SELECT"))
    }

    @Test func anotherApplicationsDatabaseIsNeitherReadNorModified() throws {
        let path = SyntheticRecordings.tempDir() + "/other.sqlite"
        let other = try DatabaseQueue(path: path)
        try other.write { try $0.execute(sql: "CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL); INSERT INTO invoices VALUES (1, 9.5)") }
        try other.close()
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        for readOnly in [true, false] {
            #expect(throws: StoreError.noLongMambaSchema(path: path, foreignTables: ["invoices"])) {
                _ = try CalibrationStore(path: path, readOnly: readOnly)
            }
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before)
    }

    @Test func garbageAndTruncatedDatabasesAreRefusedAsNotADatabase() throws {
        let dir = SyntheticRecordings.tempDir()
        // A real store, then its first 3 pages only (truncated mid-file) and random bytes.
        let good = dir + "/good.sqlite"
        try FileManager.default.copyItem(atPath: fixturePath("store/v1.sqlite"), toPath: good)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: good))
        let truncated = dir + "/truncated.sqlite", garbage = dir + "/garbage.sqlite"
        FileManager.default.createFile(atPath: truncated, contents: bytes.prefix(3 * 4096 + 100))
        var rng = SplitMix64(seed: 11)
        FileManager.default.createFile(atPath: garbage, contents: Data((0..<8192).map { _ in UInt8(truncatingIfNeeded: rng.next()) }))
        #expect(throws: StoreError.self) {
            let store = try CalibrationStore(path: garbage, readOnly: true)
            _ = try store.runs()
        }
        // The truncated file opens (its first pages are intact) but reading the missing pages fails clearly.
        do {
            let store = try CalibrationStore(path: truncated)
            for run in try store.runs() { _ = try store.layerSamples(run: run.id!, layer: 0) }
            for table in try store.tables() { _ = try store.tableLayer(table: table.id, layer: 0) }
            Issue.record("a truncated store read without error")
        } catch let error as StoreError {
            #expect("\(error)".contains(truncated))
        }
    }
}
