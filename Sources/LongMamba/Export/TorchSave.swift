// Writes `torch.save`-compatible files (torch ≥ 1.6 zip format) that `torch.load(weights_only=True)`
// accepts: a STORED zip holding `<archive>/data.pkl` (pickle protocol 2), one raw storage per
// tensor at `<archive>/data/<key>`, `<archive>/byteorder` and `<archive>/version`.
//
// The pickle uses only globals on torch's weights-only allow-list (collections.OrderedDict,
// torch._utils._rebuild_tensor_v2, torch.<X>Storage). Output is deterministic: no timestamps,
// no serialization id, keys in the caller's order.
import Foundation

/// A dense tensor to save: little-endian, contiguous row-major bytes.
public struct TorchTensor: Sendable {
    public var dtype: DType
    public var shape: [Int]
    public var data: Data

    /// The byte count is checked when the tensor is serialized (error names the tensor).
    public init(dtype: DType, shape: [Int], data: Data) {
        self.dtype = dtype
        self.shape = shape
        self.data = data
    }

    public init(floats: [Float], shape: [Int]) {
        self.init(dtype: .f32, shape: shape, data: floats.withUnsafeBytes { Data($0) })
    }

    public init(int64s: [Int64], shape: [Int]) {
        self.init(dtype: .i64, shape: shape, data: int64s.withUnsafeBytes { Data($0) })
    }
}

/// What `torch.save` is given: a tensor or a (nested) dict of them, saved as `OrderedDict`.
public indirect enum TorchValue: Sendable {
    case tensor(TorchTensor)
    case dict([(key: String, value: TorchValue)])
}

/// Why a value could not be saved. `tensor` is the dotted key path of the offending tensor
/// inside the saved dict (`<root>` for a bare tensor).
public indirect enum TorchSaveError: Error, CustomStringConvertible, Sendable, Equatable {
    case invalidArchiveName(String)
    /// A key that occurs twice in one dict (`tensor`: the key path of the second).
    case duplicateKey(tensor: String, key: String)
    case noStorageClass(tensor: String, dtype: DType)
    case negativeDimension(tensor: String, shape: [Int])
    case shapeOverflow(tensor: String, shape: [Int])
    /// `elements` × the dtype's size ≠ the `bytes` of data given.
    case dataSizeMismatch(tensor: String, shape: [Int], dtype: DType, elements: Int, bytes: Int)
    /// Writing the file failed (`reason`: the system's message).
    case cannotWrite(path: String, bytes: Int, reason: String)
    /// A serialization error while writing `path`.
    case inFile(path: String, TorchSaveError)

    /// Output file, when writing to disk.
    public var path: String? {
        switch self {
        case let .cannotWrite(path, _, _), let .inFile(path, _): return path
        default: return nil
        }
    }

    /// Dotted key path of the offending tensor inside the saved dict.
    public var tensor: String? {
        switch self {
        case .invalidArchiveName, .cannotWrite: return nil
        case let .duplicateKey(tensor, _), let .noStorageClass(tensor, _), let .negativeDimension(tensor, _),
             let .shapeOverflow(tensor, _), let .dataSizeMismatch(tensor, _, _, _, _):
            return tensor
        case let .inFile(_, error): return error.tensor
        }
    }

    public var description: String {
        switch self {
        case let .invalidArchiveName(name):
            return "archive name '\(name)' must be non-empty and contain no '/'"
        case let .duplicateKey(tensor, key):
            return "tensor '\(tensor)': duplicate key '\(key)' in one dict"
        case let .noStorageClass(tensor, dtype):
            return "tensor '\(tensor)': dtype \(dtype.rawValue) has no torch storage class (torch.save supports F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)"
        case let .negativeDimension(tensor, shape):
            return "tensor '\(tensor)': shape \(shape) has a negative dimension"
        case let .shapeOverflow(tensor, shape):
            return "tensor '\(tensor)': shape \(shape) overflows"
        case let .dataSizeMismatch(tensor, shape, dtype, elements, bytes):
            return "tensor '\(tensor)': shape \(shape) of \(dtype.rawValue) needs \(elements) × \(dtype.byteSize) bytes but data has \(bytes)"
        case let .cannotWrite(path, bytes, reason):
            return "\(path): cannot write \(bytes) bytes: \(reason)"
        case let .inFile(path, error):
            return "\(path): \(error)"
        }
    }
}

public enum TorchSave {
    /// Serializes `value` and writes it atomically to `path`.
    public static func write(_ value: TorchValue, to path: String) throws {
        let bytes: Data
        do {
            bytes = try serialize(value, archiveName: "archive")
        } catch let e as TorchSaveError {
            throw TorchSaveError.inFile(path: path, e)
        }
        do {
            try bytes.write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw TorchSaveError.cannotWrite(path: path, bytes: bytes.count, reason: SystemMessage.of(error))
        }
    }

    /// The bytes `write` would produce. `archiveName` is the zip's top-level folder.
    public static func serialize(_ value: TorchValue, archiveName: String = "archive") throws -> Data {
        try serialize(value, archiveName: archiveName, forceZip64: false)
    }

    /// `forceZip64` writes zip64 records even for small files so tests can cover the >4 GB layout.
    static func serialize(_ value: TorchValue, archiveName: String, forceZip64: Bool) throws -> Data {
        guard !archiveName.isEmpty, !archiveName.contains("/") else {
            throw TorchSaveError.invalidArchiveName(archiveName)
        }
        var pickler = TorchPickleWriter()
        try pickler.emit(value, keyPath: "")
        let pickle = pickler.finish()

        var zip = TorchZipWriter(forceZip64: forceZip64)
        zip.add(name: "\(archiveName)/data.pkl", data: pickle)
        zip.add(name: "\(archiveName)/byteorder", data: Data("little".utf8))
        for (key, storage) in pickler.storages.enumerated() {
            zip.add(name: "\(archiveName)/data/\(key)", data: storage)
        }
        zip.add(name: "\(archiveName)/version", data: Data("3\n".utf8))
        return zip.finish()
    }
}

// MARK: - Pickle (protocol 2)

/// Emits the pickle of a state dict; collects tensor bytes as storages "0", "1", ... in order.
struct TorchPickleWriter {
    private(set) var out = Data()
    private(set) var storages: [Data] = []

    init() {
        out.append(contentsOf: [0x80, 2])  // PROTO 2
    }

    mutating func finish() -> Data {
        out.append(0x2E)  // STOP
        return out
    }

    mutating func emit(_ value: TorchValue, keyPath: String) throws {
        switch value {
        case .tensor(let t):
            try emitTensor(t, keyPath: keyPath.isEmpty ? "<root>" : keyPath)
        case .dict(let items):
            // OrderedDict() then SETITEMS: keeps the caller's key order, as torch does for state dicts.
            global("collections", "OrderedDict")
            out.append(0x29)  // EMPTY_TUPLE
            out.append(0x52)  // REDUCE
            guard !items.isEmpty else { return }
            var seen = Set<String>()
            out.append(0x28)  // MARK
            for (key, item) in items {
                let path = keyPath.isEmpty ? key : "\(keyPath).\(key)"
                guard seen.insert(key).inserted else {
                    throw TorchSaveError.duplicateKey(tensor: path, key: key)
                }
                string(key)
                try emit(item, keyPath: path)
            }
            out.append(0x75)  // SETITEMS
        }
    }

    private mutating func emitTensor(_ t: TorchTensor, keyPath: String) throws {
        guard let storageClass = Self.storageClass(t.dtype) else {
            throw TorchSaveError.noStorageClass(tensor: keyPath, dtype: t.dtype)
        }
        var count = 1
        for d in t.shape {
            guard d >= 0 else { throw TorchSaveError.negativeDimension(tensor: keyPath, shape: t.shape) }
            let (m, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow else { throw TorchSaveError.shapeOverflow(tensor: keyPath, shape: t.shape) }
            count = m
        }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: t.dtype.byteSize)
        guard !overflow, bytes == t.data.count else {
            throw TorchSaveError.dataSizeMismatch(tensor: keyPath, shape: t.shape, dtype: t.dtype, elements: count, bytes: t.data.count)
        }
        let key = String(storages.count)
        storages.append(t.data)

        // torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())
        global("torch._utils", "_rebuild_tensor_v2")
        out.append(0x28)  // MARK (argument tuple)
        // Persistent id ('storage', torch.<X>Storage, key, 'cpu', numel) → data/<key>.
        out.append(0x28)  // MARK
        string("storage")
        global("torch", storageClass)
        string(key)
        string("cpu")
        int(count)
        out.append(0x74)  // TUPLE
        out.append(0x51)  // BINPERSID
        int(0)  // storage_offset
        tuple(t.shape)
        var strides = [Int](repeating: 1, count: t.shape.count)
        var step = 1
        for i in t.shape.indices.reversed() {
            strides[i] = step
            step *= max(t.shape[i], 1)
        }
        tuple(strides)
        out.append(0x89)  // NEWFALSE (requires_grad)
        global("collections", "OrderedDict")  // backward_hooks = OrderedDict()
        out.append(0x29)  // EMPTY_TUPLE
        out.append(0x52)  // REDUCE
        out.append(0x74)  // TUPLE
        out.append(0x52)  // REDUCE
    }

    /// Legacy storage class torch pickles for each dtype (weights-only loader maps it to a dtype).
    static func storageClass(_ dtype: DType) -> String? {
        switch dtype {
        case .f64: return "DoubleStorage"
        case .f32: return "FloatStorage"
        case .f16: return "HalfStorage"
        case .bf16: return "BFloat16Storage"
        case .i64: return "LongStorage"
        case .i32: return "IntStorage"
        case .i16: return "ShortStorage"
        case .i8: return "CharStorage"
        case .u8: return "ByteStorage"
        case .bool: return "BoolStorage"
        case .u16, .u32, .u64: return nil
        }
    }

    private mutating func global(_ module: String, _ name: String) {
        out.append(0x63)  // GLOBAL
        out.append(contentsOf: Array(module.utf8))
        out.append(0x0A)
        out.append(contentsOf: Array(name.utf8))
        out.append(0x0A)
    }

    private mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        out.append(0x58)  // BINUNICODE
        appendLE(UInt32(utf8.count))
        out.append(contentsOf: utf8)
    }

    private mutating func tuple(_ values: [Int]) {
        if values.isEmpty {
            out.append(0x29)  // EMPTY_TUPLE
            return
        }
        out.append(0x28)  // MARK
        for v in values { int(v) }
        out.append(0x74)  // TUPLE
    }

    private mutating func int(_ v: Int) {
        out.append(contentsOf: Self.encodeInt(v))
    }

    /// The smallest integer opcode for `v`, as Python's pickler chooses.
    static func encodeInt(_ v: Int) -> [UInt8] {
        if v >= 0 && v <= 0xFF { return [0x4B, UInt8(v)] }  // BININT1
        if v >= 0 && v <= 0xFFFF { return [0x4D, UInt8(v & 0xFF), UInt8(v >> 8)] }  // BININT2
        if v >= Int(Int32.min) && v <= Int(Int32.max) {  // BININT
            let u = UInt32(bitPattern: Int32(v))
            return [0x4A, UInt8(u & 0xFF), UInt8((u >> 8) & 0xFF), UInt8((u >> 16) & 0xFF), UInt8(u >> 24)]
        }
        // LONG1: minimal little-endian two's complement (stop once the sign bit is right).
        var bytes: [UInt8] = []
        var x = Int64(v)
        while true {
            let low = UInt8(truncatingIfNeeded: x)
            bytes.append(low)
            x >>= 8
            if (x == 0 && low & 0x80 == 0) || (x == -1 && low & 0x80 != 0) { break }
        }
        return [0x8A, UInt8(bytes.count)] + bytes
    }

    private mutating func appendLE<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) }
    }
}

// MARK: - ZIP (stored, 64-byte aligned)

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320) as zip requires, slicing by 8.
enum TorchCRC32 {
    /// Eight 256-entry tables back to back: table k advances the CRC over k further zero bytes.
    static let table: [UInt32] = {
        var t = [UInt32](repeating: 0, count: 8 * 256)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = (c & 1) != 0 ? (0xEDB8_8320 ^ (c >> 1)) : (c >> 1) }
            t[i] = c
        }
        for k in 1..<8 {
            for i in 0..<256 {
                let prev = t[(k - 1) * 256 + i]
                t[k * 256 + i] = (prev >> 8) ^ t[Int(prev & 0xFF)]
            }
        }
        return t
    }()

    /// CRC of `bytes`, continuing from `initial` (the CRC of the bytes before).
    static func checksum(_ bytes: UnsafeRawBufferPointer, initial: UInt32 = 0) -> UInt32 {
        var crc = ~initial
        let n = bytes.count
        var i = 0
        table.withUnsafeBufferPointer { t in
            while i + 8 <= n {
                let lo = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt32.self)) ^ crc
                let hi = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: i + 4, as: UInt32.self))
                crc = t[7 * 256 + Int(lo & 0xFF)] ^ t[6 * 256 + Int((lo >> 8) & 0xFF)]
                    ^ t[5 * 256 + Int((lo >> 16) & 0xFF)] ^ t[4 * 256 + Int(lo >> 24)]
                    ^ t[3 * 256 + Int(hi & 0xFF)] ^ t[2 * 256 + Int((hi >> 8) & 0xFF)]
                    ^ t[1 * 256 + Int((hi >> 16) & 0xFF)] ^ t[Int(hi >> 24)]
                i += 8
            }
            while i < n {
                crc = t[Int((crc ^ UInt32(bytes[i])) & 0xFF)] ^ (crc >> 8)
                i += 1
            }
        }
        return ~crc
    }

    static func checksum(_ data: Data) -> UInt32 {
        data.withUnsafeBytes { checksum($0) }
    }
}

/// Builds a STORED zip in memory the way torch's writer lays it out: each entry's data starts
/// on a 64-byte boundary, padded through an "FB" extra field in the local header.
struct TorchZipWriter {
    static let alignment = 64
    private struct Entry { let name: [UInt8]; let offset: Int; let size: Int; let crc: UInt32 }
    private var out = Data()
    private var entries: [Entry] = []
    private let forceZip64: Bool

    init(forceZip64: Bool = false) { self.forceZip64 = forceZip64 }

    private static let u32Max = Int(UInt32.max)

    mutating func add(name: String, data: Data) {
        let nameBytes = Array(name.utf8)
        let offset = out.count
        let crc = TorchCRC32.checksum(data)
        let zip64 = forceZip64 || data.count >= Self.u32Max
        // Local header: 30 bytes + name + extra (zip64 sizes if needed, then alignment padding).
        var extra = Data()
        if zip64 {
            appendLE(UInt16(0x0001), to: &extra)
            appendLE(UInt16(16), to: &extra)
            appendLE(UInt64(data.count), to: &extra)  // uncompressed
            appendLE(UInt64(data.count), to: &extra)  // compressed
        }
        let unpadded = offset + 30 + nameBytes.count + extra.count + 4
        let pad = (Self.alignment - unpadded % Self.alignment) % Self.alignment
        extra.append(contentsOf: [0x46, 0x42])  // "FB", torch's padding field id
        appendLE(UInt16(pad), to: &extra)
        extra.append(contentsOf: [UInt8](repeating: 0x5A, count: pad))  // 'Z'

        appendLE(UInt32(0x0403_4B50), to: &out)
        appendLE(UInt16(zip64 ? 45 : 20), to: &out)  // version needed
        appendLE(UInt16(0x0800), to: &out)  // flags: UTF-8 names
        appendLE(UInt16(0), to: &out)  // method: stored
        appendLE(UInt16(0), to: &out)  // time 00:00:00
        appendLE(UInt16(0x0021), to: &out)  // date 1980-01-01 (fixed: deterministic output)
        appendLE(crc, to: &out)
        appendLE(UInt32(zip64 ? Self.u32Max : data.count), to: &out)
        appendLE(UInt32(zip64 ? Self.u32Max : data.count), to: &out)
        appendLE(UInt16(nameBytes.count), to: &out)
        appendLE(UInt16(extra.count), to: &out)
        out.append(contentsOf: nameBytes)
        out.append(extra)
        out.append(data)
        entries.append(Entry(name: nameBytes, offset: offset, size: data.count, crc: crc))
    }

    mutating func finish() -> Data {
        let cdOffset = out.count
        for e in entries {
            let bigSize = forceZip64 || e.size >= Self.u32Max
            let bigOffset = forceZip64 || e.offset >= Self.u32Max
            var extra = Data()
            if bigSize || bigOffset {
                appendLE(UInt16(0x0001), to: &extra)
                appendLE(UInt16((bigSize ? 16 : 0) + (bigOffset ? 8 : 0)), to: &extra)
                if bigSize {
                    appendLE(UInt64(e.size), to: &extra)
                    appendLE(UInt64(e.size), to: &extra)
                }
                if bigOffset { appendLE(UInt64(e.offset), to: &extra) }
            }
            appendLE(UInt32(0x0201_4B50), to: &out)
            appendLE(UInt16(extra.isEmpty ? 20 : 45), to: &out)  // version made by
            appendLE(UInt16(extra.isEmpty ? 20 : 45), to: &out)  // version needed
            appendLE(UInt16(0x0800), to: &out)
            appendLE(UInt16(0), to: &out)
            appendLE(UInt16(0), to: &out)
            appendLE(UInt16(0x0021), to: &out)
            appendLE(e.crc, to: &out)
            appendLE(UInt32(bigSize ? Self.u32Max : e.size), to: &out)
            appendLE(UInt32(bigSize ? Self.u32Max : e.size), to: &out)
            appendLE(UInt16(e.name.count), to: &out)
            appendLE(UInt16(extra.count), to: &out)
            appendLE(UInt16(0), to: &out)  // comment length
            appendLE(UInt16(0), to: &out)  // disk number
            appendLE(UInt16(0), to: &out)  // internal attributes
            appendLE(UInt32(0), to: &out)  // external attributes
            appendLE(UInt32(bigOffset ? Self.u32Max : e.offset), to: &out)
            out.append(contentsOf: e.name)
            out.append(extra)
        }
        let cdSize = out.count - cdOffset
        let zip64 = forceZip64 || cdOffset >= Self.u32Max || cdSize >= Self.u32Max || entries.count >= 0xFFFF
        if zip64 {
            let recordOffset = out.count
            appendLE(UInt32(0x0606_4B50), to: &out)  // zip64 end of central directory record
            appendLE(UInt64(44), to: &out)  // size of the rest of the record
            appendLE(UInt16(45), to: &out)
            appendLE(UInt16(45), to: &out)
            appendLE(UInt32(0), to: &out)
            appendLE(UInt32(0), to: &out)
            appendLE(UInt64(entries.count), to: &out)
            appendLE(UInt64(entries.count), to: &out)
            appendLE(UInt64(cdSize), to: &out)
            appendLE(UInt64(cdOffset), to: &out)
            appendLE(UInt32(0x0706_4B50), to: &out)  // zip64 locator
            appendLE(UInt32(0), to: &out)
            appendLE(UInt64(recordOffset), to: &out)
            appendLE(UInt32(1), to: &out)
        }
        appendLE(UInt32(0x0605_4B50), to: &out)
        appendLE(UInt16(0), to: &out)
        appendLE(UInt16(0), to: &out)
        appendLE(UInt16(zip64 ? 0xFFFF : entries.count), to: &out)
        appendLE(UInt16(zip64 ? 0xFFFF : entries.count), to: &out)
        appendLE(UInt32(zip64 ? Self.u32Max : cdSize), to: &out)
        appendLE(UInt32(zip64 ? Self.u32Max : cdOffset), to: &out)
        appendLE(UInt16(0), to: &out)  // comment length
        return out
    }

    private func appendLE<T: FixedWidthInteger>(_ v: T, to data: inout Data) {
        withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) }
    }
}
