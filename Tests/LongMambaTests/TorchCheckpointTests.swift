import Foundation
import Testing
@testable import LongMamba

/// Pickle bytes for `{name: _rebuild_tensor_v2(storage(key, numel), offset, shape, stride)}` with
/// optional extra opcodes spliced in after PROTO, built by hand to reach the reader's error paths.
private func handPickle(name: String = "t", key: String = "0", numel: Int, offset: Int = 0, shape: [Int], stride: [Int], prelude: [UInt8] = []) -> Data {
    func s(_ x: String) -> [UInt8] {
        let u = Array(x.utf8)
        return [0x58] + withUnsafeBytes(of: UInt32(u.count).littleEndian) { Array($0) } + u
    }
    func g(_ m: String, _ n: String) -> [UInt8] { [0x63] + Array("\(m)\n\(n)\n".utf8) }
    func tup(_ v: [Int]) -> [UInt8] { [0x28] + v.flatMap { TorchPickleWriter.encodeInt($0) } + [0x74] }
    var b: [UInt8] = [0x80, 2] + prelude + [0x7D, 0x28] + s(name) + g("torch._utils", "_rebuild_tensor_v2")
    b += [0x28, 0x28] + s("storage") + g("torch", "FloatStorage") + s(key) + s("cpu") + TorchPickleWriter.encodeInt(numel) + [0x74, 0x51]
    b += TorchPickleWriter.encodeInt(offset) + tup(shape) + tup(stride) + [0x89] + g("collections", "OrderedDict") + [0x29, 0x52, 0x74, 0x52]
    b += [0x75, 0x2E]
    return Data(b)
}

/// A zip with the given entries, laid out like the writer's.
private func zipFile(_ entries: [(String, Data)]) -> Data {
    var zip = TorchZipWriter()
    for (name, data) in entries { zip.add(name: name, data: data) }
    return zip.finish()
}

/// Writes `bytes` to a fresh temporary file, runs `body` with its path, removes it.
private func withTempFile<T>(_ bytes: Data, name: String = "ckpt.bin", _ body: (String) throws -> T) throws -> T {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("torchckpt-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let path = dir.appendingPathComponent(name).path
    try bytes.write(to: URL(fileURLWithPath: path))
    return try body(path)
}

/// The error `TorchCheckpoint(path:)` throws for the file, or nil if it loads.
private func loadError(_ path: String) -> TorchCheckpointError? {
    do {
        _ = try TorchCheckpoint(path: path)
        return nil
    } catch {
        return error as? TorchCheckpointError
    }
}

private func loadError(bytes: Data) throws -> TorchCheckpointError? {
    try withTempFile(bytes) { loadError($0) }
}

/// The temporary path a checkpoint with these bytes was loaded from, and its error.
private func loadFailure(bytes: Data) throws -> (path: String, error: TorchCheckpointError?) {
    try withTempFile(bytes) { ($0, loadError($0)) }
}

private struct Expected {
    let dtype: String
    let shape: [Int]
    let values: [Double]
}

private func expectedTensors(_ file: String) throws -> (prefix: String, tied: [[String]], tensors: [String: Expected]) {
    let data = try Data(contentsOf: URL(fileURLWithPath: fixturePath("torch/expected.json")))
    let all = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    let entry = try #require(all[file] as? [String: Any])
    let tensors = try #require(entry["tensors"] as? [String: [String: Any]])
    var out: [String: Expected] = [:]
    for (name, t) in tensors {
        let values = try #require(t["values"] as? [NSNumber]).map(\.doubleValue)
        out[name] = Expected(dtype: try #require(t["dtype"] as? String), shape: try #require(t["shape"] as? [Int]), values: values)
    }
    return (try #require(entry["prefix"] as? String), try #require(entry["tied"] as? [[String]]), out)
}

@Suite struct TorchCheckpointTests {
    @Test(arguments: ["state_dict.bin", "pytorch_model.bin", "training_ckpt.pt", "many_slices.bin", "protocol4.bin"])
    func readsRealTorchSaveFilesWithExactValues(file: String) throws {
        let expected = try expectedTensors(file)
        let ckpt = try TorchCheckpoint(path: fixturePath("torch/\(file)"))
        #expect(ckpt.archivePrefix == expected.prefix)
        #expect(Set(ckpt.tensors.map(\.name)) == Set(expected.tensors.keys))
        #expect(ckpt.tensors.count == expected.tensors.count)
        for (name, want) in expected.tensors {
            let info = try #require(ckpt.info(name), "\(name)")
            #expect(info.dtype.rawValue == want.dtype, "\(name)")
            #expect(info.shape == want.shape, "\(name)")
            #expect(info.byteRange.count == info.elementCount * info.dtype.byteSize, "\(name)")
            if info.dtype == .i64 {
                let raw = ckpt.bytes(of: info)
                let got = (0..<info.elementCount).map { Double(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self))) }
                #expect(got == want.values, "\(name)")
            } else {
                // Values are exactly representable in f32 (bf16/f16 inputs, f32 inputs, 3.5 in f64).
                let got = try ckpt.floats(name)
                #expect(got == want.values.map { Float($0) }, "\(name)")
            }
        }
    }

    @Test func tiedWeightsAndSlicesShareTheirStorage() throws {
        let ckpt = try TorchCheckpoint(path: fixturePath("torch/state_dict.bin"))
        let emb = try #require(ckpt.info("backbone.embedding.weight"))
        let head = try #require(ckpt.info("lm_head.weight"))
        #expect(emb.byteRange == head.byteRange)
        // big_tail = big[6:9]: storage_offset 6 inside big's storage.
        let big = try #require(ckpt.info("big")), tail = try #require(ckpt.info("big_tail"))
        #expect(tail.byteRange.lowerBound == big.byteRange.lowerBound + 6 * 4)
        #expect(try ckpt.floats("big_tail") == [1.5, 1.75, 2.0])
        #expect(try ckpt.floats("grid_row") == [4, 5, 6, 7])
    }

    @Test func readerReadsWhatTheWriterWrote() throws {
        for zip64 in [false, true] {
            let bytes = try TorchSave.serialize(torchSaveSample(), archiveName: "archive", forceZip64: zip64)
            try withTempFile(bytes) { (path: String) throws in
                let ckpt = try TorchCheckpoint(path: path)
                #expect(ckpt.tensors.map(\.name) == [
                    "backbone.layers.0.mixer.A_log", "half", "bfloat", "double", "tokens", "scalar", "empty", "mask", "bytes",
                    "meta.layer.0.delta", "meta.größe ✓",
                ])
                #expect(try ckpt.floats("backbone.layers.0.mixer.A_log") == (0..<12).map { Float($0) * 0.5 - 1 })
                #expect(try ckpt.floats("half") == [1.5, -2, 0.25])
                #expect(try ckpt.floats("bfloat") == [3, -0.5, HalfConversion.bf16ToFloat(HalfConversion.floatToBF16(1e-3)), 7])
                #expect(try ckpt.floats("double") == [Float(Double.pi), -.infinity])
                #expect(try ckpt.floats("scalar") == [42])
                #expect(ckpt.info("scalar")?.shape == [])
                #expect(ckpt.info("empty")?.shape == [0, 3])
                #expect(ckpt.info("empty")?.byteRange.isEmpty == true)
                let tokens = try #require(ckpt.info("tokens"))
                let raw = ckpt.bytes(of: tokens)
                #expect((0..<4).map { raw.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self) } == [0, -1, 50_276, 1 << 40])
                #expect(Array(ckpt.bytes(of: try #require(ckpt.info("bytes")))) == (0..<300).map { UInt8($0 % 256) })
                #expect(Array(ckpt.bytes(of: try #require(ckpt.info("mask")))) == [1, 0, 1])
                // Every storage starts on torch's 64-byte boundary.
                for t in ckpt.tensors where !t.byteRange.isEmpty { #expect(t.byteRange.lowerBound % 64 == 0, "\(t.name)") }
            }
        }
        // The committed zip64 golden file takes the zip64 locator/record path of the reader.
        let golden = try TorchCheckpoint(path: fixturePath("torch/swift_written_zip64.bin"))
        #expect(golden.tensors.count == 11)
    }

    @Test func maliciousGlobalIsRefusedWithItsOffset() throws {
        let path = fixturePath("torch/malicious_os_system.bin")
        let error = try #require(loadError(path))
        guard case .pickle(path, "archive/data.pkl", .forbiddenGlobal(let offset, let module, let name)) = error else {
            Issue.record("expected a forbidden global, got \(error)")
            return
        }
        #expect(["posix", "os"].contains(module) && name == "system", "\(error)")
        #expect(error.description.contains("global '\(module).system' is not allowed"))
        #expect(error.entry == "archive/data.pkl")
        #expect(error.offset == offset)
        #expect(error.description.hasPrefix("\(path) [archive/data.pkl byte \(offset)]: "))
        // The offset points at the GLOBAL opcode ('c') in data.pkl.
        let file = try MappedFile(path: path)
        let zip = try ZipDirectory(bytes: file.bytes)
        let pickle = file.slice(try #require(zip.entry("archive/data.pkl")).dataRange)
        #expect(pickle[offset] == 0x63)
    }

    @Test func builtinsEvalIsRefused() throws {
        let pkl = Data([0x80, 2, 0x63] + Array("builtins\neval\n".utf8) + [0x58, 3, 0, 0, 0] + Array("1+1".utf8) + [0x85, 0x52, 0x2E])
        let (path, error) = try loadFailure(bytes: zipFile([("archive/data.pkl", pkl)]))
        #expect(error == .pickle(path: path, entry: "archive/data.pkl", .forbiddenGlobal(offset: 2, module: "builtins", name: "eval")))
        #expect(error?.offset == 2)
        #expect(error?.description == "\(path) [archive/data.pkl byte 2]: global 'builtins.eval' is not allowed (only collections.OrderedDict, torch._utils._rebuild_tensor_v2/_rebuild_parameter and torch storage/dtype classes); nothing was executed")
    }

    @Test func unsupportedOpcodeNamesOpcodeAndOffset() throws {
        // 'i' (INST) runs arbitrary constructors in Python; it is not in the state-dict set.
        let pkl = handPickle(numel: 1, shape: [1], stride: [1], prelude: [0x69] + Array("os\nsystem\n".utf8))
        let (path, error) = try loadFailure(bytes: zipFile([("archive/data.pkl", pkl), ("archive/data/0", Data(count: 4))]))
        #expect(error == .pickle(path: path, entry: "archive/data.pkl", .unsupportedOpcode(offset: 2, opcode: 0x69)))
        #expect(error?.offset == 2)
        #expect(error?.description.hasPrefix("\(path) [archive/data.pkl byte 2]: unsupported pickle opcode 0x69 ('i') ") == true, "\(String(describing: error))")
    }

    @Test func compressedEntryIsRefused() throws {
        let path = fixturePath("torch/compressed.bin")
        let error = try #require(loadError(path))
        guard case .zip(path, .compressedEntry(let offset, "archive/data.pkl", 8)) = error else {
            Issue.record("expected a compressed entry, got \(error)")
            return
        }
        #expect(error.offset == offset)
        #expect(error.description.hasPrefix("\(path) [byte \(offset)]: entry 'archive/data.pkl' is compressed (method 8); "))
        // The offset is the entry's central directory header.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(Array(bytes[offset..<(offset + 4)]) == [0x50, 0x4B, 0x01, 0x02])
    }

    @Test func transposedTensorIsRefusedAsNonContiguous() throws {
        let path = fixturePath("torch/transposed.bin")
        let error = try #require(loadError(path))
        // w = torch.zeros(2, 3).t(): shape [3, 2], stride [1, 3], built by the REDUCE at byte 161 of data.pkl.
        #expect(error == .nonContiguous(path: path, entry: "archive/data.pkl", offset: 161, tensor: "w", shape: [3, 2], stride: [1, 3]))
        #expect(error.tensor == "w")
        #expect(error.description.hasPrefix("\(path) [archive/data.pkl byte 161]: tensor 'w': stride [1, 3] for shape [3, 2] is not contiguous row-major"))
    }

    @Test func sizeOneDimensionsMayHaveAnyStride() throws {
        let pkl = handPickle(numel: 6, shape: [1, 2, 3, 1], stride: [99, 3, 1, 7])
        try withTempFile(zipFile([("archive/data.pkl", pkl), ("archive/data/0", Data(count: 24))])) { (path: String) throws in
            let ckpt = try TorchCheckpoint(path: path)
            #expect(ckpt.info("t")?.shape == [1, 2, 3, 1])
        }
    }

    @Test(arguments: [1, 22, 100, 1000, 2000])
    func truncatedZipIsRefused(dropping: Int) throws {
        let whole = try Data(contentsOf: URL(fileURLWithPath: fixturePath("torch/state_dict.bin")))
        let (path, error) = try loadFailure(bytes: whole.prefix(whole.count - dropping))
        // The end-of-central-directory record is gone; the file is shorter than 64 KiB, so all of it was searched.
        #expect(error == .zip(path: path, .noEndRecord(searched: whole.count - dropping)))
        #expect(error?.description.contains("truncated") == true)
    }

    @Test func emptyAndNonZipFilesAreRefused() throws {
        let (emptyPath, empty) = try loadFailure(bytes: Data())
        #expect(empty == .zip(path: emptyPath, .tooShort(size: 0)))
        #expect(empty?.description == "\(emptyPath): file is 0 bytes, too short for a zip end-of-central-directory record (truncated?)")
        let (textPath, text) = try loadFailure(bytes: Data(repeating: 0x41, count: 500))
        #expect(text == .zip(path: textPath, .noEndRecord(searched: 500)))
        #expect(text?.description.hasPrefix("\(textPath): no zip end-of-central-directory record in the last 500 bytes (truncated file, ") == true)
    }

    @Test func missingDataPklIsRefused() throws {
        let (path, error) = try loadFailure(bytes: zipFile([("archive/byteorder", Data("little".utf8)), ("archive/data/0", Data(count: 4))]))
        #expect(error == .missingPickle(path: path, entries: ["archive/byteorder", "archive/data/0"]))
        #expect(error?.description == "\(path): no '<folder>/data.pkl' entry in the zip (entries: archive/byteorder, archive/data/0); not a torch.save checkpoint")
    }

    @Test func bigEndianCheckpointIsRefused() throws {
        let pkl = handPickle(numel: 1, shape: [1], stride: [1])
        let bytes = zipFile([("archive/data.pkl", pkl), ("archive/byteorder", Data("big".utf8)), ("archive/data/0", Data(count: 4))])
        let (path, error) = try loadFailure(bytes: bytes)
        #expect(error == .bigEndian(path: path, entry: "archive/byteorder", byteOrder: "big"))
        #expect(error?.description.hasPrefix("\(path) [archive/byteorder]: byte order is 'big', ") == true)
        let little = zipFile([("archive/data.pkl", pkl), ("archive/byteorder", Data("little".utf8)), ("archive/data/0", Data(count: 4))])
        #expect(try loadError(bytes: little) == nil)
    }

    @Test func missingStorageNamesTensorAndKey() throws {
        let pkl = handPickle(name: "w", key: "7", numel: 2, shape: [2], stride: [1])
        let (path, error) = try loadFailure(bytes: zipFile([("archive/data.pkl", pkl), ("archive/data/0", Data(count: 8))]))
        // The tensor's REDUCE is the third-last byte of the hand-made pickle.
        #expect(error == .missingStorage(path: path, entry: "archive/data.pkl", offset: pkl.count - 3, tensor: "w", storage: "archive/data/7"))
        #expect(error?.tensor == "w")
        #expect(error?.description.contains("tensor 'w': storage 'archive/data/7' is not in the zip") == true)
    }

    @Test func tensorPastStorageEndIsRefused() throws {
        // 2×3 elements from offset 2 need 8 elements; the storage has 6.
        let pkl = handPickle(name: "w", numel: 6, offset: 2, shape: [2, 3], stride: [3, 1])
        let (path, error) = try loadFailure(bytes: zipFile([("archive/data.pkl", pkl), ("archive/data/0", Data(count: 24))]))
        #expect(error == .pastStorageEnd(path: path, entry: "archive/data.pkl", offset: pkl.count - 3, tensor: "w",
                                         storageOffset: 2, count: 6, storage: "archive/data/0", storageElements: 6))
        #expect(error?.tensor == "w")
        #expect(error?.description.hasSuffix("tensor 'w': elements [2, 2 + 6) run past the end of storage 'archive/data/0' (6 elements)") == true)
        // A storage entry shorter than its declared element count is refused as well.
        let short = handPickle(name: "w", numel: 6, shape: [6], stride: [1])
        let (path2, error2) = try loadFailure(bytes: zipFile([("archive/data.pkl", short), ("archive/data/0", Data(count: 20))]))
        #expect(error2 == .storageTooSmall(path: path2, entry: "archive/data.pkl", offset: short.count - 3, tensor: "w",
                                           storage: "archive/data/0", elements: 6, dtype: .f32, bytes: 20))
        #expect(error2?.description.hasSuffix("tensor 'w': storage 'archive/data/0' should hold 6 F32 elements but the entry has 20 bytes") == true)
    }

    @Test func pickleWithoutStopIsRefused() throws {
        let pkl = handPickle(numel: 1, shape: [1], stride: [1]).dropLast()
        let (path, error) = try loadFailure(bytes: zipFile([("archive/data.pkl", Data(pkl)), ("archive/data/0", Data(count: 4))]))
        #expect(error == .pickle(path: path, entry: "archive/data.pkl", .missingStop(offset: pkl.count)))
        #expect(error?.entry == "archive/data.pkl")
        #expect(error?.description == "\(path) [archive/data.pkl byte \(pkl.count)]: data.pkl ends without STOP (truncated)")
    }

    @Test func nonDictPickleIsRefused() throws {
        let (path, error) = try loadFailure(bytes: zipFile([("archive/data.pkl", Data([0x80, 2, 0x4B, 5, 0x2E]))]))
        #expect(error == .notAStateDict(path: path, entry: "archive/data.pkl", typeName: "int"))
        #expect(error?.description == "\(path) [archive/data.pkl]: the pickled object is a int, not a state dict (expected a dict of tensors)")
    }

    @Test func worksAsATensorSource() throws {
        let source: any TensorSource = try TorchCheckpoint(path: fixturePath("torch/state_dict.bin"))
        let info = try #require(source.tensors.first { $0.name == "backbone.layers.0.norm.weight" })
        let raw = source.bytes(of: info)
        #expect((0..<3).map { HalfConversion.bf16ToFloat(raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self)) } == [1, 2.5, -3])
    }

    @Test func cyclicDictIsRefused() throws {
        // d = {}; d['a'] = d
        let pkl = Data([0x80, 2, 0x7D, 0x71, 0, 0x58, 1, 0, 0, 0, 0x61, 0x68, 0, 0x73, 0x2E])
        let (path, error) = try loadFailure(bytes: zipFile([("archive/data.pkl", pkl)]))
        #expect(error == .pickle(path: path, entry: "archive/data.pkl", .modifiedAfterNesting(offset: 13)))
        #expect(error?.offset == 13)
    }

    @Test func deepNestingIsRefusedWithoutExhaustingTheStack() throws {
        let pkl = Data([0x80, 2, 0x4E] + [UInt8](repeating: 0x85, count: 200_000) + [0x2E])
        let (path, error) = try loadFailure(bytes: zipFile([("archive/data.pkl", pkl)]))
        #expect(error == .pickle(path: path, entry: "archive/data.pkl", .nestedTooDeep(offset: 3 + PickleReader.maxDepth, limit: PickleReader.maxDepth)))
        #expect(error?.offset == 3 + PickleReader.maxDepth)
        #expect(error?.description.hasSuffix(": values nested deeper than \(PickleReader.maxDepth) levels (not a state dict)") == true)
    }

    @Test func everyTruncationOfARealCheckpointIsATypedError() throws {
        let whole = try Data(contentsOf: URL(fileURLWithPath: fixturePath("torch/state_dict.bin")))
        for n in 0..<whole.count {
            do {
                _ = try whole.prefix(n).withUnsafeBytes { try TorchCheckpoint.parse($0, path: "cut") }
                Issue.record("\(n) of \(whole.count) bytes loaded")
            } catch is TorchCheckpointError {
            } catch {
                Issue.record("\(n) bytes: untyped error \(error)")
            }
        }
    }

    @Test func corruptedBytesGiveTypedErrorsNeverCrashes() throws {
        let whole = try Data(contentsOf: URL(fileURLWithPath: fixturePath("torch/state_dict.bin")))
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next(_ n: Int) -> Int {
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((seed >> 33) % UInt64(n))
        }
        var refused = 0
        for _ in 0..<3000 {
            var bytes = [UInt8](whole)
            for _ in 0..<(1 + next(4)) {
                // Half the hits in data.pkl (bytes 64..<~400), half anywhere.
                let at = next(2) == 0 ? 64 + next(340) : next(bytes.count)
                bytes[at] = UInt8(next(256))
            }
            do {
                _ = try bytes.withUnsafeBytes { try TorchCheckpoint.parse($0, path: "fuzz") }
            } catch is TorchCheckpointError {
                refused += 1
            } catch {
                Issue.record("untyped error \(error)")
            }
        }
        #expect(refused > 100)
    }
}
