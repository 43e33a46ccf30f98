// PyTorch `.bin`/`.pt` checkpoints (torch ≥ 1.6 zip format), read without executing pickle.
//
// Layout: a STORED zip whose entries share one top-level folder (`archive/`, or the file stem
// such as `pytorch_model/` for older torch): `<prefix>/data.pkl` holds the pickled state dict and
// `<prefix>/data/<key>` one raw little-endian storage per key. Tensors in the pickle name their
// storage by persistent id and give offset/size/stride in elements, so every tensor becomes a
// byte range of the mapped file; nothing is copied.
import Foundation

/// Why a PyTorch checkpoint was refused.
public struct TorchCheckpointError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        /// The file ends early (no zip directory, or an entry runs past it).
        case truncated
        case corruptZip
        /// Encryption or similar zip features.
        case unsupportedZip
        case compressedEntry
        /// No `<prefix>/data.pkl`.
        case missingEntry
        case unsupportedOpcode
        case forbiddenGlobal
        /// A pickle that is well-formed for Python but is not a state dict of tensors.
        case badPickle
        case notAStateDict
        /// A tensor's storage `<prefix>/data/<key>` is not in the zip.
        case missingStorage
        /// A name asked for is not in the checkpoint.
        case missingTensor
        /// A float conversion was asked of an integer tensor.
        case notFloatingPoint
        /// A tensor's elements run past the end of its storage.
        case outOfStorage
        case nonContiguous
        /// `<prefix>/byteorder` says the storages are big-endian.
        case bigEndian
    }

    public let path: String
    public let kind: Kind
    /// Zip entry that `offset` is relative to (e.g. `archive/data.pkl`); nil: offset in the file.
    public let entry: String?
    public let offset: Int?
    public let tensor: String?
    public let reason: String

    public var description: String {
        var s = path
        switch (entry, offset) {
        case let (entry?, offset?): s += " [\(entry) byte \(offset)]"
        case let (entry?, nil): s += " [\(entry)]"
        case let (nil, offset?): s += " [byte \(offset)]"
        case (nil, nil): break
        }
        if let tensor { s += ": tensor '\(tensor)'" }
        return s + ": " + reason
    }
}

/// A memory-mapped PyTorch zip checkpoint holding a state dict of tensors.
public struct TorchCheckpoint: TensorSource {
    public let path: String
    public let file: MappedFile
    /// The zip's top-level folder (`archive`, `pytorch_model`, ...).
    public let archivePrefix: String
    /// Tensors in state-dict order. Tied weights share a byte range.
    public let tensors: [TensorInfo]
    private let index: [String: Int]

    public init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws {
        self.path = file.path
        self.file = file
        let (prefix, infos) = try Self.parse(file.bytes, path: file.path)
        self.archivePrefix = prefix
        self.tensors = infos
        var index: [String: Int] = [:]
        for (i, t) in infos.enumerated() { index[t.name] = i }
        self.index = index
    }

    /// The archive folder and tensors of a checkpoint's bytes (`path` only names the file in errors).
    static func parse(_ bytes: UnsafeRawBufferPointer, path: String) throws -> (prefix: String, tensors: [TensorInfo]) {
        let zip = try ZipDirectory(bytes: bytes) { offset, kind, reason in
            TorchCheckpointError(path: path, kind: kind, entry: nil, offset: offset, tensor: nil, reason: reason)
        }

        // The pickle is `<prefix>/data.pkl` for a single top-level folder of any name.
        let pickles = zip.entries.filter { e in
            let parts = e.name.split(separator: "/", omittingEmptySubsequences: false)
            return parts.count == 2 && parts[1] == "data.pkl" && !parts[0].isEmpty
        }
        guard let pickleEntry = pickles.first else {
            let names = zip.entries.prefix(5).map(\.name).joined(separator: ", ")
            throw TorchCheckpointError(path: path, kind: .missingEntry, entry: nil, offset: nil, tensor: nil,
                reason: "no '<folder>/data.pkl' entry in the zip (entries: \(names.isEmpty ? "none" : names)\(zip.entries.count > 5 ? ", ..." : "")); not a torch.save checkpoint")
        }
        guard pickles.count == 1 else {
            throw TorchCheckpointError(path: path, kind: .corruptZip, entry: nil, offset: nil, tensor: nil,
                reason: "\(pickles.count) data.pkl entries (\(pickles.map(\.name).joined(separator: ", "))); expected one archive per file")
        }
        let prefix = String(pickleEntry.name.dropLast("/data.pkl".count))
        // Storages are raw machine-order bytes; files from big-endian machines say so here.
        if let order = zip.entry("\(prefix)/byteorder") {
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[order.dataRange]), as: UTF8.self)
            guard text.trimmingCharacters(in: .whitespacesAndNewlines) == "little" else {
                throw TorchCheckpointError(path: path, kind: .bigEndian, entry: order.name, offset: nil, tensor: nil,
                    reason: "byte order is '\(text.prefix(16))', only little-endian checkpoints are supported (hint: re-save on a little-endian machine)")
            }
        }

        let root: PickleValue
        do {
            root = try PickleReader.load(UnsafeRawBufferPointer(rebasing: bytes[pickleEntry.dataRange]))
        } catch {
            throw TorchCheckpointError(path: path, kind: error.kind, entry: pickleEntry.name, offset: error.offset, tensor: nil, reason: error.reason)
        }
        let named = try Self.stateDict(root, path: path, pickle: pickleEntry.name)

        var infos: [TensorInfo] = []
        var index: [String: Int] = [:]
        for (name, t) in named {
            func fail(_ kind: TorchCheckpointError.Kind, _ reason: String) -> TorchCheckpointError {
                TorchCheckpointError(path: path, kind: kind, entry: pickleEntry.name, offset: t.position, tensor: name, reason: reason)
            }
            guard index[name] == nil else { throw fail(.notAStateDict, "the name occurs twice") }
            let storageName = "\(prefix)/data/\(t.storage.key)"
            guard let storage = zip.entry(storageName) else {
                throw fail(.missingStorage, "storage '\(storageName)' is not in the zip (file truncated or repacked without it?)")
            }
            let elementSize = t.storage.dtype.byteSize
            let (storageBytes, o1) = t.storage.numel.multipliedReportingOverflow(by: elementSize)
            guard !o1, storageBytes <= storage.dataRange.count else {
                throw fail(.outOfStorage, "storage '\(storageName)' should hold \(t.storage.numel) \(t.storage.dtype.rawValue) elements but the entry has \(storage.dataRange.count) bytes")
            }
            var count = 1
            for d in t.shape {
                let (m, overflow) = count.multipliedReportingOverflow(by: d)
                guard !overflow else { throw fail(.badPickle, "shape \(t.shape) overflows") }
                count = m
            }
            var range = storage.dataRange.lowerBound..<storage.dataRange.lowerBound
            if count > 0 {
                // Row-major contiguous only; the stride of a size-1 dimension is irrelevant.
                var expected = 1
                for i in t.shape.indices.reversed() {
                    if t.shape[i] != 1 && t.stride[i] != expected {
                        throw fail(.nonContiguous, "stride \(t.stride) for shape \(t.shape) is not contiguous row-major (a transposed or sliced view); hint: save `tensor.contiguous()` or `.clone()`")
                    }
                    expected *= t.shape[i]
                }
                let (end, o2) = t.storageOffset.addingReportingOverflow(count)
                guard !o2, end <= t.storage.numel else {
                    throw fail(.outOfStorage, "elements [\(t.storageOffset), \(t.storageOffset) + \(count)) run past the end of storage '\(storageName)' (\(t.storage.numel) elements)")
                }
                let start = storage.dataRange.lowerBound + t.storageOffset * elementSize
                range = start..<(start + count * elementSize)
            }
            index[name] = infos.count
            infos.append(TensorInfo(name: name, dtype: t.storage.dtype, shape: t.shape, byteRange: range))
        }
        return (prefix, infos)
    }

    /// Tensor names and values of the pickled object: a (possibly nested) dict of tensors, or a
    /// training checkpoint `{"state_dict" | "model": {...}, ...}` whose other entries are skipped.
    private static func stateDict(_ root: PickleValue, path: String, pickle: String) throws -> [(String, PickleTensor)] {
        func fail(_ reason: String) -> TorchCheckpointError {
            TorchCheckpointError(path: path, kind: .notAStateDict, entry: pickle, offset: nil, tensor: nil, reason: reason)
        }
        guard case .dict(var dict) = root else {
            throw fail("the pickled object is a \(root.typeName), not a state dict (expected a dict of tensors)")
        }
        let hasTensors = dict.items.contains { if case .tensor = $0.value { return true } else { return false } }
        if !hasTensors {
            for wrapper in ["state_dict", "model"] {
                if let item = dict.items.first(where: { if case .string(wrapper) = $0.key { return true } else { return false } }),
                   case .dict(let inner) = item.value {
                    dict = inner
                    break
                }
            }
        }
        var out: [(String, PickleTensor)] = []
        func walk(_ d: PickleDict, _ prefix: String) throws {
            for (key, value) in d.items {
                guard case .string(let k) = key else {
                    throw fail("state dict key under '\(prefix)' is a \(key.typeName), not a string")
                }
                let name = prefix.isEmpty ? k : "\(prefix).\(k)"
                switch value {
                case .tensor(let t): out.append((name, t))
                case .dict(let inner): try walk(inner, name)
                default:
                    throw fail("value of '\(name)' is a \(value.typeName); expected a flat state dict of tensors (or {'state_dict'|'model': state dict})")
                }
            }
        }
        try walk(dict, "")
        return out
    }

    public func info(_ name: String) -> TensorInfo? { index[name].map { tensors[$0] } }

    /// Raw bytes of a tensor (a view into the mapping).
    public func bytes(of info: TensorInfo) -> UnsafeRawBufferPointer { file.slice(info.byteRange) }

    /// A tensor converted to f32 (f32, f16, bf16, f64 accepted).
    public func floats(_ name: String) throws -> [Float] {
        guard let info = info(name) else {
            throw TorchCheckpointError(path: path, kind: .missingTensor, entry: nil, offset: nil, tensor: name, reason: "not found in the checkpoint")
        }
        var out = [Float](repeating: 0, count: info.elementCount)
        let ok = out.withUnsafeMutableBufferPointer { convertToFloat32(bytes(of: info), dtype: info.dtype, into: $0) }
        guard ok else {
            throw TorchCheckpointError(path: path, kind: .notFloatingPoint, entry: nil, offset: nil, tensor: name, reason: "dtype \(info.dtype.rawValue) is not a floating-point type")
        }
        return out
    }
}
