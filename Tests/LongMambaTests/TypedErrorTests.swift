import Foundation
import Testing
@testable import LongMamba

/// Errors that no other suite reaches: the case thrown and its exact message.
@Suite struct TypedErrorTests {
    func tempFile(_ contents: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lm-typed-\(UUID().uuidString).tokens").path
        try Data(contents.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test func tokenFileErrorsNameTheFileAndByte() throws {
        let missing = "/nonexistent-\(UUID().uuidString).tokens"
        let unreadable = #expect(throws: TokenFileError.self) { try TokenFile.read(missing) }
        #expect(unreadable == .unreadable(path: missing))
        #expect(unreadable?.description == "\(missing): cannot read file")

        let letter = try tempFile("1 2 x 3")
        let unexpected = #expect(throws: TokenFileError.self) { try TokenFile.read(letter) }
        #expect(unexpected == .unexpectedByte(path: letter, shown: "'x'", offset: 4, token: 2))
        #expect(unexpected?.description == "\(letter): unexpected 'x' at byte 4 (token 2): expected whitespace-separated non-negative integers")

        let control = try tempFile("7\u{1}")
        #expect(throws: TokenFileError.unexpectedByte(path: control, shown: "0x01", offset: 1, token: 0)) { try TokenFile.read(control) }

        let huge = try tempFile("5 99999999999999999999999")
        let tooLarge = #expect(throws: TokenFileError.self) { try TokenFile.read(huge) }
        #expect(tooLarge == .numberTooLarge(path: huge, offset: 2))
        #expect(tooLarge?.description == "\(huge): number at byte 2 is too large")

        let blank = try tempFile(" \n\t ")
        let empty = #expect(throws: TokenFileError.self) { try TokenFile.read(blank) }
        #expect(empty == .empty(path: blank))
        #expect(empty?.path == blank)
        #expect(empty?.description == "\(blank): no token ids in file")
    }

    @Test func fileAccessErrorsNameTheFile() throws {
        let missing = "/nonexistent-\(UUID().uuidString).bin"
        let open = #expect(throws: FileAccessError.self) { try MappedFile(path: missing) }
        #expect(open == .cannotOpen(path: missing, reason: String(cString: strerror(ENOENT))))
        #expect(open?.description == "\(missing): cannot open (\(String(cString: strerror(ENOENT))))")

        let dir = FileManager.default.temporaryDirectory.path
        let directory = #expect(throws: FileAccessError.self) { try MappedFile(path: dir) }
        #expect(directory == .isDirectory(path: dir))
        #expect(directory?.path == dir)
        #expect(directory?.description == "\(dir): is a directory, expected a file")
    }

    @Test func deltaBlobErrorsSayWhatIsWrong() throws {
        let A: [Float] = [-1], aShape = [1]
        let short = #expect(throws: DeltaBlobError.self) {
            try DeltaBlob.decode(Data(count: 3), encoding: DeltaRepresentation.exactEncoding, layer: 2, length: 2, channels: 1, A: A, aShape: aShape)
        }
        #expect(short == .exactSizeMismatch(layer: 2, bytes: 3, expected: 8))
        #expect(short?.description == "stored Δ blob: layer 2: exact blob has 3 bytes, expected L·C·4 = 8")

        let unknown = #expect(throws: DeltaBlobError.self) {
            try DeltaBlob.decode(Data(), encoding: "zstd-v9", layer: 1, length: 2, channels: 1, A: A, aShape: aShape)
        }
        #expect(unknown == .unknownEncoding(layer: 1, encoding: "zstd-v9"))
        #expect(unknown?.description == "stored Δ blob: layer 1: unknown encoding 'zstd-v9' (known: exact-f32-v1, logrice-v1); written by a newer tool?")

        let truncated = #expect(throws: DeltaBlobError.self) {
            try DeltaBlob.decode(Data(), encoding: DeltaRepresentation.sketchEncoding, layer: 0, length: 2, channels: 1, A: A, aShape: aShape)
        }
        #expect(truncated == .truncated(byte: 0))
        #expect(truncated?.description == "stored Δ blob: sketch blob ends early at byte 0 (truncated?)")

        var w = BitWriter()
        w.write(0, bits: 5)   // exponent
        w.write(5, bits: 32)  // positive values: more than L = 2
        let record = w.finish()
        let claims = #expect(throws: DeltaBlobError.self) {
            try DeltaBlob.decode(record, encoding: DeltaRepresentation.sketchEncoding, layer: 0, length: 2, channels: 1, A: A, aShape: aShape)
        }
        #expect(claims == .tooManyPositives(claimed: 5, length: 2))
        #expect(claims?.description == "stored Δ blob: sketch record claims 5 positive values but L = 2")

        let sortedOnly = SortedDeltaLayer(layer: 4, length: 2, channels: 1, sortedDelta: [2, 1], A: A, aShape: aShape)
        let noTokenOrder = #expect(throws: DeltaBlobError.self) { try DeltaBlob.encode(sortedOnly, as: .exact) }
        #expect(noTokenOrder == .tokenOrderMissing(layer: 4))
        #expect(noTokenOrder?.description == "stored Δ blob: layer 4: the exact representation needs Δ in token order, which this input does not carry")
    }
}
