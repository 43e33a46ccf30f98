import Foundation
import Testing
@testable import LongMamba

/// The value behind `Fixtures/torch/swift_written.bin`; `scripts/verify_torch_save.py` rebuilds the
/// same numbers in Python and checks them with `torch.load(weights_only=True)`.
func torchSaveSample() -> TorchValue {
    let f32 = (0..<12).map { Float($0) * 0.5 - 1 }
    let f16 = Data([Float16(1.5), Float16(-2), Float16(0.25)].flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } })
    let bf16 = Data([Float(3), -0.5, 1e-3, 7].flatMap { v in withUnsafeBytes(of: HalfConversion.floatToBF16(v).littleEndian) { Array($0) } })
    let f64 = Data([Double.pi, -1e300].flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } })
    return .dict([
        (key: "backbone.layers.0.mixer.A_log", value: .tensor(TorchTensor(floats: f32, shape: [3, 4]))),
        (key: "half", value: .tensor(TorchTensor(dtype: .f16, shape: [3], data: f16))),
        (key: "bfloat", value: .tensor(TorchTensor(dtype: .bf16, shape: [2, 2], data: bf16))),
        (key: "double", value: .tensor(TorchTensor(dtype: .f64, shape: [2], data: f64))),
        (key: "tokens", value: .tensor(TorchTensor(int64s: [0, -1, 50_276, Int64(1) << 40], shape: [2, 2]))),
        (key: "scalar", value: .tensor(TorchTensor(floats: [42], shape: []))),
        (key: "empty", value: .tensor(TorchTensor(floats: [], shape: [0, 3]))),
        (key: "mask", value: .tensor(TorchTensor(dtype: .bool, shape: [3], data: Data([1, 0, 1])))),
        (key: "bytes", value: .tensor(TorchTensor(dtype: .u8, shape: [1, 1, 300], data: Data((0..<300).map { UInt8($0 % 256) })))),
        (key: "meta", value: .dict([
            (key: "layer.0.delta", value: .tensor(TorchTensor(floats: [0.1, 0.2], shape: [1, 2]))),
            (key: "größe ✓", value: .tensor(TorchTensor(int64s: [7], shape: [1]))),
            (key: "nothing", value: .dict([])),
        ])),
    ])
}

func fixturePath(_ relative: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures").appendingPathComponent(relative).path
}

private func readLE<T: FixedWidthInteger>(_ data: Data, _ offset: Int, _: T.Type) -> T {
    var v: T = 0
    for i in 0..<MemoryLayout<T>.size { v |= T(data[data.startIndex + offset + i]) << (8 * i) }
    return v
}

/// (name, data offset, size, crc) for every entry, read from the central directory by hand.
private func zipEntries(_ zip: Data) -> [(name: String, dataOffset: Int, size: Int, crc: UInt32)] {
    var eocd = zip.count - 22
    while eocd > 0 && readLE(zip, eocd, UInt32.self) != 0x0605_4B50 { eocd -= 1 }
    let count = Int(readLE(zip, eocd + 10, UInt16.self))
    var p = Int(readLE(zip, eocd + 16, UInt32.self))
    var result: [(String, Int, Int, UInt32)] = []
    for _ in 0..<count {
        let crc = readLE(zip, p + 16, UInt32.self)
        let size = Int(readLE(zip, p + 24, UInt32.self))
        let nameLen = Int(readLE(zip, p + 28, UInt16.self))
        let extraLen = Int(readLE(zip, p + 30, UInt16.self))
        let local = Int(readLE(zip, p + 42, UInt32.self))
        let name = String(decoding: zip[(zip.startIndex + p + 46)..<(zip.startIndex + p + 46 + nameLen)], as: UTF8.self)
        let localName = Int(readLE(zip, local + 26, UInt16.self))
        let localExtra = Int(readLE(zip, local + 28, UInt16.self))
        result.append((name, local + 30 + localName + localExtra, size, crc))
        p += 46 + nameLen + extraLen
    }
    return result
}

@Suite struct TorchSaveTests {
    @Test func crc32MatchesTheStandardCheckValue() {
        #expect(TorchCRC32.checksum(Data("123456789".utf8)) == 0xCBF4_3926)
        #expect(TorchCRC32.checksum(Data()) == 0)
        // Slicing-by-8 and the byte tail agree with a continued checksum over two halves.
        let bytes = Data((0..<1000).map { UInt8(($0 * 7919) % 251) })
        let whole = TorchCRC32.checksum(bytes)
        let first = TorchCRC32.checksum(bytes.prefix(333))
        let both = bytes.suffix(from: 333).withUnsafeBytes { TorchCRC32.checksum($0, initial: first) }
        #expect(whole == both)
    }

    @Test func integersUseTheSmallestPickleOpcode() {
        #expect(TorchPickleWriter.encodeInt(0) == [0x4B, 0])
        #expect(TorchPickleWriter.encodeInt(255) == [0x4B, 255])
        #expect(TorchPickleWriter.encodeInt(256) == [0x4D, 0, 1])
        #expect(TorchPickleWriter.encodeInt(65536) == [0x4A, 0, 0, 1, 0])
        #expect(TorchPickleWriter.encodeInt(-1) == [0x4A, 0xFF, 0xFF, 0xFF, 0xFF])
        #expect(TorchPickleWriter.encodeInt(1 << 31) == [0x8A, 5, 0, 0, 0, 0x80, 0])
        #expect(TorchPickleWriter.encodeInt(1 << 40) == [0x8A, 6, 0, 0, 0, 0, 0, 1])
        #expect(TorchPickleWriter.encodeInt(-(1 << 40)) == [0x8A, 6, 0, 0, 0, 0, 0, 0xFF])
    }

    @Test func serializationIsDeterministic() throws {
        let a = try TorchSave.serialize(torchSaveSample())
        let b = try TorchSave.serialize(torchSaveSample())
        #expect(a == b)
    }

    @Test func zipHasTorchLayoutAlignedDataAndCorrectCRCs() throws {
        let zip = try TorchSave.serialize(torchSaveSample(), archiveName: "mymodel")
        let entries = zipEntries(zip)
        let names = entries.map(\.name)
        #expect(names.first == "mymodel/data.pkl")
        #expect(names.contains("mymodel/byteorder"))
        #expect(names.contains("mymodel/version"))
        #expect(names.filter { $0.hasPrefix("mymodel/data/") }.count == 11)
        for e in entries {
            #expect(e.dataOffset % 64 == 0, "\(e.name) starts at \(e.dataOffset)")
            let body = zip[(zip.startIndex + e.dataOffset)..<(zip.startIndex + e.dataOffset + e.size)]
            #expect(TorchCRC32.checksum(Data(body)) == e.crc, "\(e.name)")
        }
        let byteorder = try #require(entries.first { $0.name == "mymodel/byteorder" })
        #expect(zip[(zip.startIndex + byteorder.dataOffset)..<(zip.startIndex + byteorder.dataOffset + byteorder.size)] == Data("little".utf8))
    }

    @Test func writerReproducesTheTorchVerifiedGoldenFile() throws {
        // Fixtures/torch/swift_written.bin was checked with torch.load by scripts/verify_torch_save.py;
        // byte equality keeps that verification valid for the current writer.
        let golden = try Data(contentsOf: URL(fileURLWithPath: fixturePath("torch/swift_written.bin")))
        #expect(try TorchSave.serialize(torchSaveSample()) == golden)
        let golden64 = try Data(contentsOf: URL(fileURLWithPath: fixturePath("torch/swift_written_zip64.bin")))
        #expect(try TorchSave.serialize(torchSaveSample(), archiveName: "archive", forceZip64: true) == golden64)
    }

    @Test func writeCreatesTheFileOnDisk() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("torchsave-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("out.bin").path
        try TorchSave.write(torchSaveSample(), to: path)
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == TorchSave.serialize(torchSaveSample()))
        // Regenerate the golden files: LONGMAMBA_WRITE_TORCH_FIXTURES=1 swift test --filter TorchSaveTests
        if ProcessInfo.processInfo.environment["LONGMAMBA_WRITE_TORCH_FIXTURES"] == "1" {
            try TorchSave.write(torchSaveSample(), to: fixturePath("torch/swift_written.bin"))
            try TorchSave.serialize(torchSaveSample(), archiveName: "archive", forceZip64: true)
                .write(to: URL(fileURLWithPath: fixturePath("torch/swift_written_zip64.bin")))
        }
    }

    @Test func byteCountMismatchNamesTheTensor() {
        let value = TorchValue.dict([(key: "outer", value: .dict([(key: "w", value: .tensor(TorchTensor(dtype: .f32, shape: [2, 3], data: Data(count: 20))))]))])
        let mismatch = TorchSaveError.dataSizeMismatch(tensor: "outer.w", shape: [2, 3], dtype: .f32, elements: 6, bytes: 20)
        #expect {
            try TorchSave.serialize(value)
        } throws: { error in
            let e = error as? TorchSaveError
            return e == mismatch && e?.tensor == "outer.w" && e?.description == "tensor 'outer.w': shape [2, 3] of F32 needs 6 × 4 bytes but data has 20"
        }
        // Writing to a file adds its path to the same error.
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lm-torchsave-\(UUID().uuidString).pt").path
        let inFile = #expect(throws: TorchSaveError.self) { try TorchSave.write(value, to: path) }
        #expect(inFile == .inFile(path: path, mismatch))
        #expect(inFile?.path == path && inFile?.tensor == "outer.w")
        #expect(inFile?.description == "\(path): tensor 'outer.w': shape [2, 3] of F32 needs 6 × 4 bytes but data has 20")
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test func unsignedWideDTypesAreRefused() {
        let value = TorchValue.dict([(key: "u", value: .tensor(TorchTensor(dtype: .u32, shape: [1], data: Data(count: 4))))])
        let error = #expect(throws: TorchSaveError.self) { try TorchSave.serialize(value) }
        #expect(error == .noStorageClass(tensor: "u", dtype: .u32))
        #expect(error?.path == nil)
        #expect(error?.tensor == "u")
        #expect(error?.description == "tensor 'u': dtype U32 has no torch storage class (torch.save supports F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)")
    }

    @Test func duplicateKeysAreRefused() {
        let t = TorchValue.tensor(TorchTensor(floats: [1], shape: [1]))
        let error = #expect(throws: TorchSaveError.self) { try TorchSave.serialize(.dict([(key: "a", value: t), (key: "a", value: t)])) }
        #expect(error == .duplicateKey(tensor: "a", key: "a"))
        #expect(error?.tensor == "a")
        #expect(error?.description == "tensor 'a': duplicate key 'a' in one dict")
        let nested = #expect(throws: TorchSaveError.self) {
            try TorchSave.serialize(.dict([(key: "outer", value: .dict([(key: "w", value: t), (key: "w", value: t)]))]))
        }
        #expect(nested == .duplicateKey(tensor: "outer.w", key: "w"))
        #expect(nested?.tensor == "outer.w")
    }

    @Test func writeErrorNamesThePath() throws {
        let path = "/nonexistent-dir-\(UUID().uuidString)/x.bin"
        let size = try TorchSave.serialize(.dict([])).count
        #expect {
            try TorchSave.write(.dict([]), to: path)
        } throws: { error in
            guard case .cannotWrite(path, size, let reason)? = error as? TorchSaveError else { return false }
            return !reason.isEmpty && "\(error)" == "\(path): cannot write \(size) bytes: \(reason)"
        }
    }
}
