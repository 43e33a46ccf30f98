// libFuzzer harnesses for every parser of untrusted input. One binary, the harness chosen by
// LONGMAMBA_FUZZ_TARGET (see Fuzz/README.md and `make fuzz`). Built only with LONGMAMBA_FUZZ=1
// and `--sanitize=fuzzer --sanitize=address`: libFuzzer provides `main`.
//
// A harness may throw any typed error (that is the contract: a clear error); it must not trap,
// read out of bounds, leak, or hang. Where a property is cheap to check it is checked too
// (a trap then marks a wrong answer, not only a crash).
import Foundation
@testable import LongMamba

/// Inputs that file-based parsers read are written to one file per process on /dev/shm.
nonisolated(unsafe) var scratchDirectory = ""
nonisolated(unsafe) var harness: (UnsafeRawBufferPointer) -> Void = { _ in }
nonisolated(unsafe) var fixtureTokenizer: BPETokenizer?

func scratchFile(_ name: String, _ bytes: UnsafeRawBufferPointer) -> String {
    let path = scratchDirectory + "/" + name
    FileManager.default.createFile(atPath: path, contents: Data(bytes))
    return path
}

nonisolated(unsafe) let harnesses: [String: (UnsafeRawBufferPointer) -> Void] = [
    // The safetensors header (JSON) and tensor table, then every tensor's floats.
    "safetensors": { bytes in
        guard let file = try? SafetensorsFile(path: scratchFile("model.safetensors", bytes)) else { return }
        for info in file.tensors where info.byteRange.count <= 1 << 20 { _ = try? file.floats(info) }
    },
    // pytorch_model.bin: the zip reader, the pickle, the storages.
    "torch-zip": { bytes in
        guard let file = try? TorchCheckpoint(path: scratchFile("pytorch_model.bin", bytes)) else { return }
        for info in file.tensors where info.byteRange.count <= 1 << 20 { _ = try? file.floats(info.name) }
    },
    // The pickle machine alone (most mutations of a zip never reach it).
    "pickle": { bytes in
        _ = try? PickleReader.load(bytes)
    },
    // tokenizer.json loading, then encoding and decoding a probe.
    "tokenizer-json": { bytes in
        guard let tokenizer = try? BPETokenizer(data: Data(bytes), source: "fuzz/tokenizer.json") else { return }
        if let ids = try? tokenizer.encode(utf8: Array("The pass key is 12345.".utf8)) { _ = try? tokenizer.decode(ids) }
    },
    // Encoding arbitrary bytes with a real tokenizer: invalid UTF-8 is an error; valid,
    // NFC-stable text must round-trip exactly (byte-level BPE is lossless).
    "tokenizer-encode": { bytes in
        guard let tokenizer = fixtureTokenizer else { return }
        let utf8 = Array(bytes)
        guard let ids = try? tokenizer.encode(utf8: utf8) else { return }
        let text = String(decoding: utf8, as: UTF8.self)
        if text.precomposedStringWithCanonicalMapping == text, let back = try? tokenizer.decode(ids, skipSpecialTokens: false) {
            precondition(back == text, "round trip changed the text")
        }
    },
    // config.json, both layouts (transformers and mamba_ssm), any architecture.
    "config": { bytes in
        _ = try? ModelConfig.parse(Data(bytes), path: "fuzz/config.json")
    },
    // Pile lines: the line splitter, the subset and text-key probes and the JSON decoder.
    "pile-line": { bytes in
        let path = scratchFile("corpus.jsonl", bytes)
        let file = CorpusFile(path: path, format: .jsonl, sizeBytes: Int64(bytes.count))
        try? CorpusDocuments.forEach(file, maxLineBytes: 1 << 16) { _, _ in true }
        let line = UnsafeBufferPointer(start: bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), count: bytes.count)
        _ = PileLine.subset(line)
        _ = PileLine.hasTextKey(line)
    },
    // The zstd stream reader under the line splitter (multi-frame, truncated, garbage frames).
    "zstd": { bytes in
        let path = scratchFile("corpus.jsonl.zst", bytes)
        let file = CorpusFile(path: path, format: .jsonlZstd, sizeBytes: Int64(bytes.count))
        try? CorpusDocuments.forEach(file, maxLineBytes: 1 << 16) { _, _ in true }
    },
    // A stored Δ blob: the first two bytes choose L (1...64) and C (1...16), the third the
    // encoding; a decoded row must be finite, ≥ 0 and sorted descending (or the blob refused).
    "delta-blob": { bytes in
        guard bytes.count >= 3 else { return }
        let L = Int(bytes[0] % 64) + 1, C = Int(bytes[1] % 16) + 1
        let encoding = bytes[2] % 2 == 0 ? DeltaRepresentation.exactEncoding : DeltaRepresentation.sketchEncoding
        let blob = Data(bytes[3...])
        guard let layer = try? DeltaBlob.decode(blob, encoding: encoding, layer: 0, length: L, channels: C,
                                                A: [Float](repeating: -1, count: C), aShape: [C]) else { return }
        precondition(layer.sortedDelta.count == L * C)
        for c in 0..<C {
            let row = layer.sortedDelta[(c * L)..<((c + 1) * L)]
            precondition(row.allSatisfy { $0 >= 0 && $0.isFinite }, "decoded Δ outside [0, ∞)")
            precondition(zip(row, row.dropFirst()).allSatisfy { $0 >= $1 }, "decoded row not descending")
        }
    },
    // The token-id file reader (.tokens: header + int32 ids).
    "token-file": { bytes in
        _ = try? TokenFile.read(scratchFile("sample.tokens", bytes))
    },
    // A damaged SQLite store: open read-only and read everything the CLI reads; then open for
    // writing (migrations) on the same bytes.
    "store": { bytes in
        let path = scratchFile("store.sqlite", bytes)
        for suffix in ["-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        if let store = try? CalibrationStore(path: path, readOnly: true, busyTimeout: 0) {
            for run in (try? store.runs()) ?? [] {
                guard let id = run.id else { continue }
                _ = try? store.sequences(run: id)
                _ = try? store.recordedSamples(run: id)
                _ = try? store.layerSamples(run: id, layer: 0)
            }
            for table in (try? store.tables()) ?? [] { _ = try? store.tableLayer(table: table.id, layer: 0) }
            _ = try? store.evaluations()
        }
        _ = try? CalibrationStore(path: path, readOnly: false, busyTimeout: 0)
    },
    // A valid store with its rows altered (StoreRows.swift), read by every path.
    "store-rows": { bytes in
        guard let template = rowTemplate else { return }
        let path = scratchDirectory + "/rows.sqlite"
        for suffix in ["", "-wal", "-shm", "-journal"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        guard (try? FileManager.default.copyItem(atPath: template, toPath: path)) != nil else { return }
        guard (try? mutateRows(path, bytes)) != nil else { return }
        readEverything(path)
    },
]

/// Seeds for delta-blob from the Swift encoder: [L − 1, C − 1, encoding] + blob, exact and
/// sketch, for a few shapes of softplus-like Δ (with zeros and ties).
func writeDeltaBlobSeeds(to directory: String) throws {
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    var rng = SplitMix64(seed: 7)
    for (L, C) in [(8, 2), (33, 3), (64, 16)] {
        var tokenOrder = [Float](repeating: 0, count: L * C)
        for i in tokenOrder.indices { tokenOrder[i] = i % 7 == 0 ? 0 : Float(rng.next() % 1000) / 997 }
        var sorted = tokenOrder
        for c in 0..<C {
            var row = Array(sorted[(c * L)..<((c + 1) * L)])
            row.sort(by: >)
            sorted.replaceSubrange((c * L)..<((c + 1) * L), with: row)
        }
        let layer = SortedDeltaLayer(layer: 0, length: L, channels: C, sortedDelta: sorted, A: [Float](repeating: -1, count: C), aShape: [C], tokenOrderDelta: tokenOrder)
        for (tag, representation) in [(UInt8(0), DeltaRepresentation.exact), (UInt8(1), .sketch(bytesPerChannel: 40))] {
            let blob = try DeltaBlob.encode(layer, as: representation)
            let seed = Data([UInt8(L - 1), UInt8(C - 1), tag]) + blob
            FileManager.default.createFile(atPath: "\(directory)/L\(L)-C\(C)-\(representation.encodingName).bin", contents: seed)
        }
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func fuzzerInitialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>) -> CInt {
    if let directory = ProcessInfo.processInfo.environment["LONGMAMBA_FUZZ_MAKE_SEEDS"] {
        do { try writeDeltaBlobSeeds(to: directory); exit(0) } catch { FileHandle.standardError.write(Data("\(error)\n".utf8)); exit(1) }
    }
    let name = ProcessInfo.processInfo.environment["LONGMAMBA_FUZZ_TARGET"] ?? ""
    guard let chosen = harnesses[name] else {
        FileHandle.standardError.write(Data("set LONGMAMBA_FUZZ_TARGET to one of: \(harnesses.keys.sorted().joined(separator: ", "))\n".utf8))
        exit(2)   // libFuzzer ignores this function's return value
    }
    harness = chosen
    scratchDirectory = "/dev/shm/longmamba-fuzz-\(getpid())"
    if !FileManager.default.fileExists(atPath: "/dev/shm") { scratchDirectory = NSTemporaryDirectory() + "longmamba-fuzz-\(getpid())" }
    try? FileManager.default.createDirectory(atPath: scratchDirectory, withIntermediateDirectories: true)
    if name == "store-rows" {
        do { rowTemplate = try makeRowTemplate(in: scratchDirectory) } catch {
            FileHandle.standardError.write(Data("store-rows: cannot make the template store: \(error)\n".utf8))
            exit(2)
        }
    }
    if name == "tokenizer-encode" {
        let path = ProcessInfo.processInfo.environment["LONGMAMBA_FUZZ_TOKENIZER"] ?? "Fixtures/tokenizer/fixture-tokenizer.json"
        fixtureTokenizer = try? BPETokenizer(contentsOf: path)
        guard fixtureTokenizer != nil else {
            FileHandle.standardError.write(Data("tokenizer-encode: cannot load \(path) (LONGMAMBA_FUZZ_TOKENIZER)\n".utf8))
            exit(2)
        }
    }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    harness(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
