// safetensors: 8-byte little-endian header length n, n bytes of JSON header, then raw data.
// Header: { name: {dtype, shape, data_offsets: [begin, end)}, "__metadata__": {str: str} },
// offsets relative to the first byte after the header.
import Foundation

/// Why a safetensors file was refused; every case names the file, and the tensor where one is at fault.
public enum SafetensorsError: Error, CustomStringConvertible, Sendable, Equatable {
    /// Fewer than the 8 bytes of the header length.
    case fileTooShort(path: String, size: Int)
    /// The header length points past the end of the file.
    case headerTooLarge(path: String, headerLength: UInt64, fileSize: Int)
    /// The header (bytes 8..<headerEnd) is not JSON (`reason`: the parser's message).
    case headerNotJSON(path: String, headerEnd: Int, reason: String)
    case headerNotObject(path: String)
    case metadataNotObject(path: String)
    case metadataValueNotString(path: String, key: String)
    case entryNotObject(path: String, tensor: String)
    case missingDType(path: String, tensor: String)
    case unknownDType(path: String, tensor: String, dtype: String)
    case missingShape(path: String, tensor: String)
    /// `shape`: the shape as written in the header.
    case invalidShape(path: String, tensor: String, shape: String)
    case invalidDataOffsets(path: String, tensor: String)
    case shapeOverflow(path: String, tensor: String, shape: [Int])
    /// The shape needs `expectedBytes` but data_offsets give `bytes`.
    case sizeMismatch(path: String, tensor: String, shape: [Int], dtype: DType, expectedBytes: Int, bytes: Int)
    /// data_offsets [begin, end) past the data area of `dataArea` bytes.
    case dataPastEnd(path: String, tensor: String, begin: Int, end: Int, dataArea: Int)
    /// `tensor`'s bytes overlap those of `other`.
    case overlap(path: String, tensor: String, other: String)
    case missingTensor(path: String, tensor: String)
    case notFloatingPoint(path: String, tensor: String, dtype: DType)
    case notInteger(path: String, tensor: String, dtype: DType)
    // Table exports (`longmamba export --format safetensors`).
    /// No layer.0.threshold: not a longmamba table export.
    case notATableExport(path: String)
    /// A tensor with no values where some are needed.
    case emptyTensor(path: String, tensor: String)
    /// A [T, C] tensor with `count` values instead of rows × columns.
    case valueCountMismatch(path: String, tensor: String, count: Int, rows: Int, columns: Int)

    public var path: String {
        switch self {
        case let .fileTooShort(path, _), let .headerTooLarge(path, _, _), let .headerNotJSON(path, _, _),
             let .headerNotObject(path), let .metadataNotObject(path), let .metadataValueNotString(path, _),
             let .entryNotObject(path, _), let .missingDType(path, _), let .unknownDType(path, _, _), let .missingShape(path, _),
             let .invalidShape(path, _, _), let .invalidDataOffsets(path, _), let .shapeOverflow(path, _, _),
             let .sizeMismatch(path, _, _, _, _, _), let .dataPastEnd(path, _, _, _, _), let .overlap(path, _, _),
             let .missingTensor(path, _), let .notFloatingPoint(path, _, _), let .notInteger(path, _, _),
             let .notATableExport(path), let .emptyTensor(path, _), let .valueCountMismatch(path, _, _, _, _):
            return path
        }
    }

    /// The tensor at fault, if the failure is about one.
    public var tensor: String? {
        switch self {
        case .fileTooShort, .headerTooLarge, .headerNotJSON, .headerNotObject, .metadataNotObject, .metadataValueNotString:
            return nil
        case .notATableExport:
            return "layer.0.threshold"
        case let .entryNotObject(_, tensor), let .missingDType(_, tensor), let .unknownDType(_, tensor, _), let .missingShape(_, tensor),
             let .invalidShape(_, tensor, _), let .invalidDataOffsets(_, tensor), let .shapeOverflow(_, tensor, _),
             let .sizeMismatch(_, tensor, _, _, _, _), let .dataPastEnd(_, tensor, _, _, _), let .overlap(_, tensor, _),
             let .missingTensor(_, tensor), let .notFloatingPoint(_, tensor, _), let .notInteger(_, tensor, _),
             let .emptyTensor(_, tensor), let .valueCountMismatch(_, tensor, _, _, _):
            return tensor
        }
    }

    /// What is wrong, without the file and tensor names.
    private var reason: String {
        switch self {
        case let .fileTooShort(_, size):
            return "file is \(size) bytes, too short for the 8-byte header length (truncated?)"
        case let .headerTooLarge(_, headerLength, fileSize):
            return "header length \(headerLength) runs past the end of the file (\(fileSize) bytes; truncated?)"
        case let .headerNotJSON(_, headerEnd, reason):
            return "header is not valid JSON (bytes 8 to \(headerEnd - 1)): \(reason)"
        case .headerNotObject:
            return "header is not a JSON object"
        case .metadataNotObject:
            return "__metadata__ is not an object"
        case let .metadataValueNotString(_, key):
            return "__metadata__ value for '\(key)' is not a string"
        case .entryNotObject:
            return "entry is not an object"
        case .missingDType:
            return "missing dtype"
        case let .unknownDType(_, _, dtype):
            return "unknown dtype '\(dtype)' (supported: \(DType.allCases.map(\.rawValue).joined(separator: ", ")))"
        case .missingShape:
            return "missing shape"
        case let .invalidShape(_, _, shape):
            return "shape \(shape) is not a list of non-negative integers"
        case .invalidDataOffsets:
            return "data_offsets missing or not [begin, end] with 0 ≤ begin ≤ end"
        case let .shapeOverflow(_, _, shape):
            return "shape \(shape) overflows"
        case let .sizeMismatch(_, _, shape, dtype, expectedBytes, bytes):
            return "shape \(shape) of \(dtype.rawValue) needs \(expectedBytes) bytes but data_offsets give \(bytes)"
        case let .dataPastEnd(_, _, begin, end, dataArea):
            return "data_offsets [\(begin), \(end)) run past the end of the file (data area is \(dataArea) bytes; truncated?)"
        case let .overlap(_, _, other):
            return "byte range overlaps tensor '\(other)'"
        case .missingTensor:
            return "not found in file"
        case let .notFloatingPoint(_, _, dtype):
            return "dtype \(dtype.rawValue) is not a floating-point type"
        case let .notInteger(_, _, dtype):
            return "dtype \(dtype.rawValue) is not an integer type"
        case .notATableExport:
            return "not found: not a longmamba table export"
        case .emptyTensor:
            return "empty"
        case let .valueCountMismatch(_, _, count, rows, columns):
            return "has \(count) values, expected \(rows) × \(columns)"
        }
    }

    public var description: String {
        if let tensor { return "\(path): tensor '\(tensor)': \(reason)" }
        return "\(path): \(reason)"
    }
}

/// Location and type of one tensor inside a file.
public struct TensorInfo: Sendable, Equatable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// Absolute byte range in the file.
    public let byteRange: Range<Int>
    public var elementCount: Int { shape.reduce(1, *) }
}

/// A memory-mapped safetensors file with a validated header.
public struct SafetensorsFile: Sendable {
    public let path: String
    public let file: MappedFile
    public let metadata: [String: String]
    /// Tensors in file order (by offset).
    public let tensors: [TensorInfo]
    private let index: [String: Int]

    public init(path: String) throws {
        let file = try MappedFile(path: path)
        try self.init(file: file)
    }

    public init(file: MappedFile) throws {
        let path = file.path
        self.path = path
        self.file = file
        let bytes = file.bytes
        guard bytes.count >= 8 else {
            throw SafetensorsError.fileTooShort(path: path, size: bytes.count)
        }
        let headerLength = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        guard headerLength <= UInt64(bytes.count - 8) else {
            throw SafetensorsError.headerTooLarge(path: path, headerLength: headerLength, fileSize: bytes.count)
        }
        let dataStart = 8 + Int(headerLength)
        let headerData = Data(bytes[8..<dataStart])
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: headerData)
        } catch {
            throw SafetensorsError.headerNotJSON(path: path, headerEnd: dataStart, reason: error.localizedDescription)
        }
        guard let header = json as? [String: Any] else { throw SafetensorsError.headerNotObject(path: path) }
        var metadata: [String: String] = [:]
        var infos: [TensorInfo] = []
        for (name, value) in header {
            if name == "__metadata__" {
                guard let dict = value as? [String: Any] else { throw SafetensorsError.metadataNotObject(path: path) }
                for (k, v) in dict {
                    guard let s = v as? String else { throw SafetensorsError.metadataValueNotString(path: path, key: k) }
                    metadata[k] = s
                }
                continue
            }
            guard let entry = value as? [String: Any] else { throw SafetensorsError.entryNotObject(path: path, tensor: name) }
            guard let dtypeName = entry["dtype"] as? String else { throw SafetensorsError.missingDType(path: path, tensor: name) }
            guard let dtype = DType(rawValue: dtypeName) else {
                throw SafetensorsError.unknownDType(path: path, tensor: name, dtype: dtypeName)
            }
            guard let shapeAny = entry["shape"] as? [Any] else { throw SafetensorsError.missingShape(path: path, tensor: name) }
            var shape: [Int] = []
            for d in shapeAny {
                guard let n = (d as? NSNumber)?.intValue, n >= 0 else { throw SafetensorsError.invalidShape(path: path, tensor: name, shape: "\(shapeAny)") }
                shape.append(n)
            }
            guard let offsets = entry["data_offsets"] as? [Any], offsets.count == 2,
                  let begin = (offsets[0] as? NSNumber)?.intValue, let end = (offsets[1] as? NSNumber)?.intValue,
                  begin >= 0, end >= begin
            else { throw SafetensorsError.invalidDataOffsets(path: path, tensor: name) }
            var count = 1
            for d in shape {
                let (m, overflow) = count.multipliedReportingOverflow(by: d)
                guard !overflow else { throw SafetensorsError.shapeOverflow(path: path, tensor: name, shape: shape) }
                count = m
            }
            guard count * dtype.byteSize == end - begin else {
                throw SafetensorsError.sizeMismatch(path: path, tensor: name, shape: shape, dtype: dtype, expectedBytes: count * dtype.byteSize, bytes: end - begin)
            }
            guard dataStart + end <= bytes.count else {
                throw SafetensorsError.dataPastEnd(path: path, tensor: name, begin: begin, end: end, dataArea: bytes.count - dataStart)
            }
            infos.append(TensorInfo(name: name, dtype: dtype, shape: shape, byteRange: (dataStart + begin)..<(dataStart + end)))
        }
        infos.sort { ($0.byteRange.lowerBound, $0.name) < ($1.byteRange.lowerBound, $1.name) }
        for i in infos.indices.dropFirst() where !infos[i].byteRange.isEmpty && !infos[i - 1].byteRange.isEmpty {
            if infos[i].byteRange.lowerBound < infos[i - 1].byteRange.upperBound {
                throw SafetensorsError.overlap(path: path, tensor: infos[i].name, other: infos[i - 1].name)
            }
        }
        self.metadata = metadata
        self.tensors = infos
        var index: [String: Int] = [:]
        for (i, t) in infos.enumerated() { index[t.name] = i }
        self.index = index
    }

    public func info(_ name: String) -> TensorInfo? { index[name].map { tensors[$0] } }

    /// Raw bytes of a tensor (a view into the mapping).
    public func bytes(of info: TensorInfo) -> UnsafeRawBufferPointer { file.slice(info.byteRange) }

    /// A tensor converted to f32 (f32, f16, bf16, f64 accepted).
    public func floats(_ name: String) throws -> [Float] {
        guard let info = info(name) else {
            throw SafetensorsError.missingTensor(path: path, tensor: name)
        }
        return try floats(info)
    }

    public func floats(_ info: TensorInfo) throws -> [Float] {
        var out = [Float](repeating: 0, count: info.elementCount)
        let ok = out.withUnsafeMutableBufferPointer { convertToFloat32(bytes(of: info), dtype: info.dtype, into: $0) }
        guard ok else {
            throw SafetensorsError.notFloatingPoint(path: path, tensor: info.name, dtype: info.dtype)
        }
        return out
    }

    /// An integer tensor (i64, i32) as Int.
    public func integers(_ name: String) throws -> [Int] {
        guard let info = info(name) else {
            throw SafetensorsError.missingTensor(path: path, tensor: name)
        }
        let raw = bytes(of: info)
        switch info.dtype {
        case .i64: return (0..<info.elementCount).map { Int(raw.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self)) }
        case .i32: return (0..<info.elementCount).map { Int(raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self)) }
        default: throw SafetensorsError.notInteger(path: path, tensor: name, dtype: info.dtype)
        }
    }
}

/// Builds a safetensors file in memory and writes it atomically.
public struct SafetensorsWriter {
    private struct Entry { let name: String; let dtype: DType; let shape: [Int]; let data: Data }
    private var entries: [Entry] = []
    public var metadata: [String: String] = [:]

    public init(metadata: [String: String] = [:]) { self.metadata = metadata }

    public mutating func add(_ name: String, dtype: DType, shape: [Int], data: Data) {
        precondition(shape.reduce(1, *) * dtype.byteSize == data.count, "\(name): shape \(shape) does not match \(data.count) bytes")
        entries.append(Entry(name: name, dtype: dtype, shape: shape, data: data))
    }

    public mutating func add(_ name: String, shape: [Int], floats: [Float]) {
        add(name, dtype: .f32, shape: shape, data: floats.withUnsafeBytes { Data($0) })
    }

    public mutating func add(_ name: String, shape: [Int], int64s: [Int64]) {
        add(name, dtype: .i64, shape: shape, data: int64s.withUnsafeBytes { Data($0) })
    }

    /// The serialized file: header (JSON with sorted keys, space-padded to 8 bytes) + data.
    public func serialized() throws -> Data {
        var header: [String: Any] = [:]
        var offset = 0
        for e in entries {
            header[e.name] = ["dtype": e.dtype.rawValue, "shape": e.shape, "data_offsets": [offset, offset + e.data.count]] as [String: Any]
            offset += e.data.count
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys, .withoutEscapingSlashes])
        while json.count % 8 != 0 { json.append(0x20) }
        var out = Data(capacity: 8 + json.count + offset)
        var n = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
        out.append(json)
        for e in entries { out.append(e.data) }
        return out
    }

    public func write(to path: String) throws {
        try serialized().write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}

/// Writes a safetensors file whose tensors are known up front but produced one at a time
/// (multi-GB checkpoints without holding them in memory). The header is written first; `append`
/// must follow the declared order and sizes; `finish` closes the file.
public struct SafetensorsStreamWriter {
    private let handle: FileHandle
    private let path: String
    private let tensors: [(name: String, dtype: DType, shape: [Int])]
    private var next = 0

    public init(path: String, tensors: [(name: String, dtype: DType, shape: [Int])], metadata: [String: String] = [:]) throws {
        self.path = path; self.tensors = tensors
        var header: [String: Any] = [:]
        var offset = 0
        for t in tensors {
            let bytes = t.shape.reduce(1, *) * t.dtype.byteSize
            header[t.name] = ["dtype": t.dtype.rawValue, "shape": t.shape, "data_offsets": [offset, offset + bytes]] as [String: Any]
            offset += bytes
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys, .withoutEscapingSlashes])
        while json.count % 8 != 0 { json.append(0x20) }
        guard FileManager.default.createFile(atPath: path, contents: nil) else {
            throw FileAccessError.cannotOpen(path: path, reason: "cannot create")
        }
        handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        var n = UInt64(json.count).littleEndian
        try handle.write(contentsOf: withUnsafeBytes(of: &n) { Data($0) })
        try handle.write(contentsOf: json)
    }

    /// The next tensor's bytes, in the declared order.
    public mutating func append(_ name: String, data: Data) throws {
        precondition(next < tensors.count && tensors[next].name == name, "\(path): tensor \(name) out of the declared order")
        let t = tensors[next]
        precondition(t.shape.reduce(1, *) * t.dtype.byteSize == data.count, "\(name): shape \(t.shape) does not match \(data.count) bytes")
        try handle.write(contentsOf: data)
        next += 1
    }

    public func finish() throws {
        precondition(next == tensors.count, "\(path): \(tensors.count - next) declared tensors were not written")
        try handle.close()
    }
}
