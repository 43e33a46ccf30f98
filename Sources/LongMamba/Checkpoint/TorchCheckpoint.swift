// PyTorch `.bin`/`.pt` checkpoints (torch ≥ 1.6 zip format), read without executing pickle.
//
// Layout: a STORED zip whose entries share one top-level folder (`archive/`, or the file stem
// such as `pytorch_model/` for older torch): `<prefix>/data.pkl` holds the pickled state dict and
// `<prefix>/data/<key>` one raw little-endian storage per key. Tensors in the pickle name their
// storage by persistent id and give offset/size/stride in elements, so every tensor becomes a
// byte range of the mapped file; nothing is copied.
import Foundation

/// Why a PyTorch checkpoint was refused. Each case names the file; `entry` and `offset` say where
/// in it (a zip entry such as `archive/data.pkl` and a byte offset in that entry, or a byte offset
/// in the file when there is no entry).
public enum TorchCheckpointError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The zip container cannot be read (truncated, corrupt, encrypted or compressed entries).
    case zip(path: String, ZipArchiveError)
    /// No `<folder>/data.pkl` (`entries`: the names in the zip).
    case missingPickle(path: String, entries: [String])
    /// More than one `<folder>/data.pkl` (`entries`: those found).
    case multiplePickles(path: String, entries: [String])
    /// `<prefix>/byteorder` (`entry`) says the storages are not little-endian (`byteOrder`: its first 16 characters).
    case bigEndian(path: String, entry: String, byteOrder: String)
    /// data.pkl (`entry`) is not a pickle this reader accepts.
    case pickle(path: String, entry: String, PickleError)
    /// The pickled object is not a dict (`typeName`: what it is).
    case notAStateDict(path: String, entry: String, typeName: String)
    /// A key under `prefix` ("" at the top) that is not a string.
    case nonStringKey(path: String, entry: String, prefix: String, typeName: String)
    /// A value `name` that is neither a tensor nor a dict.
    case nonTensorValue(path: String, entry: String, name: String, typeName: String)
    // A tensor of the state dict; `offset`: the REDUCE in data.pkl that built it.
    case duplicateTensor(path: String, entry: String, offset: Int, tensor: String)
    /// The tensor's storage entry is not in the zip.
    case missingStorage(path: String, entry: String, offset: Int, tensor: String, storage: String)
    /// A storage entry of `bytes` bytes, too small for its `elements` elements of `dtype`.
    case storageTooSmall(path: String, entry: String, offset: Int, tensor: String, storage: String, elements: Int, dtype: DType, bytes: Int)
    case shapeOverflow(path: String, entry: String, offset: Int, tensor: String, shape: [Int])
    /// Not row-major contiguous (a transposed or sliced view).
    case nonContiguous(path: String, entry: String, offset: Int, tensor: String, shape: [Int], stride: [Int])
    /// Elements [storageOffset, storageOffset + count) past the end of a storage of `storageElements`.
    case pastStorageEnd(path: String, entry: String, offset: Int, tensor: String, storageOffset: Int, count: Int, storage: String, storageElements: Int)
    /// A name asked for is not in the checkpoint.
    case missingTensor(path: String, tensor: String)
    /// A float conversion was asked of an integer tensor.
    case notFloatingPoint(path: String, tensor: String, dtype: DType)

    public var path: String {
        switch self {
        case let .zip(path, _), let .missingPickle(path, _), let .multiplePickles(path, _), let .bigEndian(path, _, _),
             let .pickle(path, _, _), let .notAStateDict(path, _, _), let .nonStringKey(path, _, _, _), let .nonTensorValue(path, _, _, _),
             let .duplicateTensor(path, _, _, _), let .missingStorage(path, _, _, _, _), let .storageTooSmall(path, _, _, _, _, _, _, _),
             let .shapeOverflow(path, _, _, _, _), let .nonContiguous(path, _, _, _, _, _), let .pastStorageEnd(path, _, _, _, _, _, _, _),
             let .missingTensor(path, _), let .notFloatingPoint(path, _, _):
            return path
        }
    }

    /// Zip entry that `offset` is relative to (e.g. `archive/data.pkl`); nil: offset in the file.
    public var entry: String? {
        switch self {
        case .zip, .missingPickle, .multiplePickles, .missingTensor, .notFloatingPoint:
            return nil
        case let .bigEndian(_, entry, _), let .pickle(_, entry, _), let .notAStateDict(_, entry, _), let .nonStringKey(_, entry, _, _),
             let .nonTensorValue(_, entry, _, _), let .duplicateTensor(_, entry, _, _), let .missingStorage(_, entry, _, _, _),
             let .storageTooSmall(_, entry, _, _, _, _, _, _), let .shapeOverflow(_, entry, _, _, _), let .nonContiguous(_, entry, _, _, _, _),
             let .pastStorageEnd(_, entry, _, _, _, _, _, _):
            return entry
        }
    }

    public var offset: Int? {
        switch self {
        case let .zip(_, error): return error.offset
        case let .pickle(_, _, error): return error.offset
        case .missingPickle, .multiplePickles, .bigEndian, .notAStateDict, .nonStringKey, .nonTensorValue, .missingTensor, .notFloatingPoint:
            return nil
        case let .duplicateTensor(_, _, offset, _), let .missingStorage(_, _, offset, _, _), let .storageTooSmall(_, _, offset, _, _, _, _, _),
             let .shapeOverflow(_, _, offset, _, _), let .nonContiguous(_, _, offset, _, _, _), let .pastStorageEnd(_, _, offset, _, _, _, _, _):
            return offset
        }
    }

    /// The tensor at fault, if the failure is about one.
    public var tensor: String? {
        switch self {
        case .zip, .missingPickle, .multiplePickles, .bigEndian, .pickle, .notAStateDict, .nonStringKey, .nonTensorValue:
            return nil
        case let .duplicateTensor(_, _, _, tensor), let .missingStorage(_, _, _, tensor, _), let .storageTooSmall(_, _, _, tensor, _, _, _, _),
             let .shapeOverflow(_, _, _, tensor, _), let .nonContiguous(_, _, _, tensor, _, _), let .pastStorageEnd(_, _, _, tensor, _, _, _, _),
             let .missingTensor(_, tensor), let .notFloatingPoint(_, tensor, _):
            return tensor
        }
    }

    /// What is wrong, without the file, location and tensor.
    private var reason: String {
        switch self {
        case let .zip(_, error):
            return error.description
        case let .missingPickle(_, entries):
            let names = entries.prefix(5).joined(separator: ", ")
            return "no '<folder>/data.pkl' entry in the zip (entries: \(names.isEmpty ? "none" : names)\(entries.count > 5 ? ", ..." : "")); not a torch.save checkpoint"
        case let .multiplePickles(_, entries):
            return "\(entries.count) data.pkl entries (\(entries.joined(separator: ", "))); expected one archive per file"
        case let .bigEndian(_, _, byteOrder):
            return "byte order is '\(byteOrder)', only little-endian checkpoints are supported (hint: re-save on a little-endian machine)"
        case let .pickle(_, _, error):
            return error.description
        case let .notAStateDict(_, _, typeName):
            return "the pickled object is a \(typeName), not a state dict (expected a dict of tensors)"
        case let .nonStringKey(_, _, prefix, typeName):
            return "state dict key under '\(prefix)' is a \(typeName), not a string"
        case let .nonTensorValue(_, _, name, typeName):
            return "value of '\(name)' is a \(typeName); expected a flat state dict of tensors (or {'state_dict'|'model': state dict})"
        case .duplicateTensor:
            return "the name occurs twice"
        case let .missingStorage(_, _, _, _, storage):
            return "storage '\(storage)' is not in the zip (file truncated or repacked without it?)"
        case let .storageTooSmall(_, _, _, _, storage, elements, dtype, bytes):
            return "storage '\(storage)' should hold \(elements) \(dtype.rawValue) elements but the entry has \(bytes) bytes"
        case let .shapeOverflow(_, _, _, _, shape):
            return "shape \(shape) overflows"
        case let .nonContiguous(_, _, _, _, shape, stride):
            return "stride \(stride) for shape \(shape) is not contiguous row-major (a transposed or sliced view); hint: save `tensor.contiguous()` or `.clone()`"
        case let .pastStorageEnd(_, _, _, _, storageOffset, count, storage, storageElements):
            return "elements [\(storageOffset), \(storageOffset) + \(count)) run past the end of storage '\(storage)' (\(storageElements) elements)"
        case .missingTensor:
            return "not found in the checkpoint"
        case let .notFloatingPoint(_, _, dtype):
            return "dtype \(dtype.rawValue) is not a floating-point type"
        }
    }

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
        let zip: ZipDirectory
        do { zip = try ZipDirectory(bytes: bytes) } catch { throw TorchCheckpointError.zip(path: path, error) }

        // The pickle is `<prefix>/data.pkl` for a single top-level folder of any name.
        let pickles = zip.entries.filter { e in
            let parts = e.name.split(separator: "/", omittingEmptySubsequences: false)
            return parts.count == 2 && parts[1] == "data.pkl" && !parts[0].isEmpty
        }
        guard let pickleEntry = pickles.first else {
            throw TorchCheckpointError.missingPickle(path: path, entries: zip.entries.map(\.name))
        }
        guard pickles.count == 1 else {
            throw TorchCheckpointError.multiplePickles(path: path, entries: pickles.map(\.name))
        }
        let prefix = String(pickleEntry.name.dropLast("/data.pkl".count))
        // Storages are raw machine-order bytes; files from big-endian machines say so here.
        if let order = zip.entry("\(prefix)/byteorder") {
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[order.dataRange]), as: UTF8.self)
            guard text.trimmingCharacters(in: .whitespacesAndNewlines) == "little" else {
                throw TorchCheckpointError.bigEndian(path: path, entry: order.name, byteOrder: String(text.prefix(16)))
            }
        }

        let root: PickleValue
        do {
            root = try PickleReader.load(UnsafeRawBufferPointer(rebasing: bytes[pickleEntry.dataRange]))
        } catch {
            throw TorchCheckpointError.pickle(path: path, entry: pickleEntry.name, error)
        }
        let named = try Self.stateDict(root, path: path, pickle: pickleEntry.name)

        var infos: [TensorInfo] = []
        var index: [String: Int] = [:]
        for (name, t) in named {
            let entry = pickleEntry.name, at = t.position
            guard index[name] == nil else { throw TorchCheckpointError.duplicateTensor(path: path, entry: entry, offset: at, tensor: name) }
            let storageName = "\(prefix)/data/\(t.storage.key)"
            guard let storage = zip.entry(storageName) else {
                throw TorchCheckpointError.missingStorage(path: path, entry: entry, offset: at, tensor: name, storage: storageName)
            }
            let elementSize = t.storage.dtype.byteSize
            let (storageBytes, o1) = t.storage.numel.multipliedReportingOverflow(by: elementSize)
            guard !o1, storageBytes <= storage.dataRange.count else {
                throw TorchCheckpointError.storageTooSmall(path: path, entry: entry, offset: at, tensor: name, storage: storageName,
                                                           elements: t.storage.numel, dtype: t.storage.dtype, bytes: storage.dataRange.count)
            }
            var count = 1
            for d in t.shape {
                let (m, overflow) = count.multipliedReportingOverflow(by: d)
                guard !overflow else { throw TorchCheckpointError.shapeOverflow(path: path, entry: entry, offset: at, tensor: name, shape: t.shape) }
                count = m
            }
            var range = storage.dataRange.lowerBound..<storage.dataRange.lowerBound
            if count > 0 {
                // Row-major contiguous only; the stride of a size-1 dimension is irrelevant.
                var expected = 1
                for i in t.shape.indices.reversed() {
                    if t.shape[i] != 1 && t.stride[i] != expected {
                        throw TorchCheckpointError.nonContiguous(path: path, entry: entry, offset: at, tensor: name, shape: t.shape, stride: t.stride)
                    }
                    expected *= t.shape[i]
                }
                let (end, o2) = t.storageOffset.addingReportingOverflow(count)
                guard !o2, end <= t.storage.numel else {
                    throw TorchCheckpointError.pastStorageEnd(path: path, entry: entry, offset: at, tensor: name, storageOffset: t.storageOffset,
                                                              count: count, storage: storageName, storageElements: t.storage.numel)
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
        guard case .dict(var dict) = root else {
            throw TorchCheckpointError.notAStateDict(path: path, entry: pickle, typeName: root.typeName)
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
                    throw TorchCheckpointError.nonStringKey(path: path, entry: pickle, prefix: prefix, typeName: key.typeName)
                }
                let name = prefix.isEmpty ? k : "\(prefix).\(k)"
                switch value {
                case .tensor(let t): out.append((name, t))
                case .dict(let inner): try walk(inner, name)
                default:
                    throw TorchCheckpointError.nonTensorValue(path: path, entry: pickle, name: name, typeName: value.typeName)
                }
            }
        }
        try walk(dict, "")
        return out
    }

    public func info(_ name: String) -> TensorInfo? { index[name].map { tensors[$0] } }

    /// Raw bytes of a tensor (a view into the mapping).
    public func bytes(of info: TensorInfo) -> UnsafeRawBufferPointer { file.slice(info.byteRange) }
    public func release(_ info: TensorInfo) { file.release(info.byteRange) }

    /// A tensor converted to f32 (f32, f16, bf16, f64 accepted).
    public func floats(_ name: String) throws -> [Float] {
        guard let info = info(name) else {
            throw TorchCheckpointError.missingTensor(path: path, tensor: name)
        }
        var out = [Float](repeating: 0, count: info.elementCount)
        let ok = out.withUnsafeMutableBufferPointer { convertToFloat32(bytes(of: info), dtype: info.dtype, into: $0) }
        guard ok else {
            throw TorchCheckpointError.notFloatingPoint(path: path, tensor: name, dtype: info.dtype)
        }
        return out
    }
}
