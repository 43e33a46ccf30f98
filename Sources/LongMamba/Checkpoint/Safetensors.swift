// safetensors: 8-byte little-endian header length n, n bytes of JSON header, then raw data.
// Header: { name: {dtype, shape, data_offsets: [begin, end)}, "__metadata__": {str: str} },
// offsets relative to the first byte after the header.
import Foundation

/// Why a safetensors file was refused.
public struct SafetensorsError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let tensor: String?
    public let reason: String
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
        func fail(_ reason: String, _ tensor: String? = nil) -> SafetensorsError {
            SafetensorsError(path: path, tensor: tensor, reason: reason)
        }
        let bytes = file.bytes
        guard bytes.count >= 8 else {
            throw fail("file is \(bytes.count) bytes, too short for the 8-byte header length (truncated?)")
        }
        let headerLength = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        guard headerLength <= UInt64(bytes.count - 8) else {
            throw fail("header length \(headerLength) runs past the end of the file (\(bytes.count) bytes; truncated?)")
        }
        let dataStart = 8 + Int(headerLength)
        let headerData = Data(bytes[8..<dataStart])
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: headerData)
        } catch {
            throw fail("header is not valid JSON (bytes 8..<\(dataStart)): \(error.localizedDescription)")
        }
        guard let header = json as? [String: Any] else { throw fail("header is not a JSON object") }
        var metadata: [String: String] = [:]
        var infos: [TensorInfo] = []
        for (name, value) in header {
            if name == "__metadata__" {
                guard let dict = value as? [String: Any] else { throw fail("__metadata__ is not an object") }
                for (k, v) in dict {
                    guard let s = v as? String else { throw fail("__metadata__ value for '\(k)' is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard let entry = value as? [String: Any] else { throw fail("entry is not an object", name) }
            guard let dtypeName = entry["dtype"] as? String else { throw fail("missing dtype", name) }
            guard let dtype = DType(rawValue: dtypeName) else {
                throw fail("unknown dtype '\(dtypeName)' (supported: \(DType.allCases.map(\.rawValue).joined(separator: ", ")))", name)
            }
            guard let shapeAny = entry["shape"] as? [Any] else { throw fail("missing shape", name) }
            var shape: [Int] = []
            for d in shapeAny {
                guard let n = (d as? NSNumber)?.intValue, n >= 0 else { throw fail("shape \(shapeAny) is not a list of non-negative integers", name) }
                shape.append(n)
            }
            guard let offsets = entry["data_offsets"] as? [Any], offsets.count == 2,
                  let begin = (offsets[0] as? NSNumber)?.intValue, let end = (offsets[1] as? NSNumber)?.intValue,
                  begin >= 0, end >= begin
            else { throw fail("data_offsets missing or not [begin, end] with 0 ≤ begin ≤ end", name) }
            var count = 1
            for d in shape {
                let (m, overflow) = count.multipliedReportingOverflow(by: d)
                guard !overflow else { throw fail("shape \(shape) overflows", name) }
                count = m
            }
            guard count * dtype.byteSize == end - begin else {
                throw fail("shape \(shape) of \(dtype.rawValue) needs \(count * dtype.byteSize) bytes but data_offsets give \(end - begin)", name)
            }
            guard dataStart + end <= bytes.count else {
                throw fail("data_offsets [\(begin), \(end)) run past the end of the file (data area is \(bytes.count - dataStart) bytes; truncated?)", name)
            }
            infos.append(TensorInfo(name: name, dtype: dtype, shape: shape, byteRange: (dataStart + begin)..<(dataStart + end)))
        }
        infos.sort { ($0.byteRange.lowerBound, $0.name) < ($1.byteRange.lowerBound, $1.name) }
        for i in infos.indices.dropFirst() where !infos[i].byteRange.isEmpty && !infos[i - 1].byteRange.isEmpty {
            if infos[i].byteRange.lowerBound < infos[i - 1].byteRange.upperBound {
                throw fail("byte range overlaps tensor '\(infos[i - 1].name)'", infos[i].name)
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
            throw SafetensorsError(path: path, tensor: name, reason: "not found in file")
        }
        return try floats(info)
    }

    public func floats(_ info: TensorInfo) throws -> [Float] {
        var out = [Float](repeating: 0, count: info.elementCount)
        let ok = out.withUnsafeMutableBufferPointer { convertToFloat32(bytes(of: info), dtype: info.dtype, into: $0) }
        guard ok else {
            throw SafetensorsError(path: path, tensor: info.name, reason: "dtype \(info.dtype.rawValue) is not a floating-point type")
        }
        return out
    }

    /// An integer tensor (i64, i32) as Int.
    public func integers(_ name: String) throws -> [Int] {
        guard let info = info(name) else {
            throw SafetensorsError(path: path, tensor: name, reason: "not found in file")
        }
        let raw = bytes(of: info)
        switch info.dtype {
        case .i64: return (0..<info.elementCount).map { Int(raw.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self)) }
        case .i32: return (0..<info.elementCount).map { Int(raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self)) }
        default: throw SafetensorsError(path: path, tensor: name, reason: "dtype \(info.dtype.rawValue) is not an integer type")
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
