// A pickle *reader* for PyTorch state dicts that never executes anything. It models the
// unpickler's stack with plain values and understands only the opcodes and globals a state
// dict needs (the same set torch's weights-only unpickler accepts). Anything else is an error
// naming the opcode or global and its byte offset in data.pkl.

/// A storage named by a persistent id `('storage', torch.<X>Storage, key, location, numel)`.
struct PickleStorage: Equatable {
    let dtype: DType
    let key: String
    let numel: Int
}

/// A tensor from `torch._utils._rebuild_tensor_v2`.
struct PickleTensor: Equatable {
    let storage: PickleStorage
    let storageOffset: Int
    let shape: [Int]
    let stride: [Int]
    /// Byte offset in data.pkl of the REDUCE that built it (for error messages).
    let position: Int
}

/// Mutable containers are references so SETITEMS/APPENDS after BINPUT update the memoized object,
/// as in Python. A container is frozen once it is placed inside another one (a real pickler fills
/// each container before nesting it): that keeps `depth` exact and rules out cycles, so walking
/// and freeing the values can never recurse without bound.
final class PickleDict {
    var items: [(key: PickleValue, value: PickleValue)] = []
    var depth = 1
    var frozen = false
}

final class PickleList {
    var items: [PickleValue] = []
    var depth = 1
    var frozen = false
}

indirect enum PickleValue {
    case none
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)
    case tuple([PickleValue], depth: Int)
    case list(PickleList)
    case dict(PickleDict)
    case global(module: String, name: String)
    case storage(PickleStorage)
    case tensor(PickleTensor)

    /// Nesting depth: 0 for scalars, 1 + the deepest element for containers.
    var depth: Int {
        switch self {
        case .tuple(_, let d): return d
        case .list(let l): return l.depth
        case .dict(let d): return d.depth
        default: return 0
        }
    }

    var typeName: String {
        switch self {
        case .none: return "None"
        case .bool: return "bool"
        case .int: return "int"
        case .float: return "float"
        case .string: return "str"
        case .tuple: return "tuple"
        case .list: return "list"
        case .dict: return "dict"
        case .global(let m, let n): return "\(m).\(n)"
        case .storage: return "storage"
        case .tensor: return "tensor"
        }
    }
}

/// Globals a state dict may reference; everything else is refused before it is looked at.
enum PickleGlobals {
    static let storageTypes: [String: DType] = [
        "FloatStorage": .f32, "HalfStorage": .f16, "BFloat16Storage": .bf16, "DoubleStorage": .f64,
        "LongStorage": .i64, "IntStorage": .i32, "ShortStorage": .i16, "CharStorage": .i8,
        "ByteStorage": .u8, "BoolStorage": .bool,
    ]
    static let dtypes: [String: DType] = [
        "float32": .f32, "float": .f32, "float16": .f16, "half": .f16, "bfloat16": .bf16,
        "float64": .f64, "double": .f64, "int64": .i64, "long": .i64, "int32": .i32, "int": .i32,
        "int16": .i16, "short": .i16, "int8": .i8, "uint8": .u8, "bool": .bool,
    ]

    static func isAllowed(module: String, name: String) -> Bool {
        switch module {
        case "collections": return name == "OrderedDict"
        case "torch._utils": return name == "_rebuild_tensor_v2" || name == "_rebuild_parameter"
        case "torch": return storageTypes[name] != nil || dtypes[name] != nil
        default: return false
        }
    }

    /// Element type of a storage class (`torch.FloatStorage`) or dtype (`torch.float32`) global.
    static func dtype(of value: PickleValue) -> DType? {
        guard case .global("torch", let name) = value else { return nil }
        return storageTypes[name] ?? dtypes[name]
    }
}

/// Why data.pkl could not be read; the caller adds the file and entry names.
struct PickleError: Error {
    let offset: Int
    let kind: TorchCheckpointError.Kind
    let reason: String
}

struct PickleReader {
    private let bytes: UnsafeRawBufferPointer
    private var pos = 0
    private var stack: [PickleValue] = []
    private var marks: [Int] = []
    private var memo: [Int: PickleValue] = [:]

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    /// Runs the pickle to STOP and returns the top of the stack.
    static func load(_ bytes: UnsafeRawBufferPointer) throws(PickleError) -> PickleValue {
        var reader = PickleReader(bytes)
        return try reader.run()
    }

    private mutating func run() throws(PickleError) -> PickleValue {
        while true {
            let at = pos
            let op = try byte()
            switch op {
            case 0x80:  // PROTO
                let version = try byte()
                guard version <= 5 else { throw fail(at, .badPickle, "pickle protocol \(version) is newer than 5") }
            case 0x95:  // FRAME: a length hint only
                _ = try take(8)
            case 0x2E:  // STOP
                guard marks.isEmpty, stack.count == 1, let result = stack.last else {
                    throw fail(at, .badPickle, "STOP with \(stack.count) values and \(marks.count) open marks on the stack (expected exactly one value)")
                }
                return result
            case 0x28:  // MARK
                marks.append(stack.count)
            case 0x4E: stack.append(.none)  // NONE
            case 0x88: stack.append(.bool(true))  // NEWTRUE
            case 0x89: stack.append(.bool(false))  // NEWFALSE
            case 0x4B: stack.append(.int(Int(try byte())))  // BININT1
            case 0x4D: stack.append(.int(Int(try uint(2))))  // BININT2
            case 0x4A: stack.append(.int(Int(Int32(bitPattern: UInt32(try uint(4))))))  // BININT
            case 0x8A:  // LONG1: n-byte little-endian two's complement
                let n = Int(try byte())
                let raw = try take(n)
                guard n <= 8 else { throw fail(at, .badPickle, "LONG1 of \(n) bytes does not fit in 64 bits") }
                var v: UInt64 = 0
                for (i, b) in raw.enumerated() { v |= UInt64(b) << (8 * UInt64(i)) }
                if n > 0 && n < 8 && raw[n - 1] & 0x80 != 0 { v |= ~0 << (8 * UInt64(n)) }  // sign-extend
                stack.append(.int(Int(Int64(bitPattern: v))))
            case 0x47:  // BINFLOAT: big-endian IEEE double
                stack.append(.float(Double(bitPattern: try uint(8).byteSwapped)))
            case 0x58: stack.append(.string(try utf8(Int(try uint(4)), at: at)))  // BINUNICODE
            case 0x8C: stack.append(.string(try utf8(Int(try byte()), at: at)))  // SHORT_BINUNICODE
            case 0x55:  // SHORT_BINSTRING: Python 2 str, decoded as Latin-1 like torch's loader
                let raw = try take(Int(try byte()))
                stack.append(.string(String(decoding: raw.map { UInt16($0) }, as: UTF16.self)))
            case 0x29: stack.append(.tuple([], depth: 1))  // EMPTY_TUPLE
            case 0x85: stack.append(try tuple(try pop(1, at), at))  // TUPLE1
            case 0x86: stack.append(try tuple(try pop(2, at), at))  // TUPLE2
            case 0x87: stack.append(try tuple(try pop(3, at), at))  // TUPLE3
            case 0x74: stack.append(try tuple(try popMark(at), at))  // TUPLE
            case 0x7D: stack.append(.dict(PickleDict()))  // EMPTY_DICT
            case 0x5D: stack.append(.list(PickleList()))  // EMPTY_LIST
            case 0x73:  // SETITEM
                let kv = try pop(2, at)
                let d = try dict(at)
                try nest(kv, into: &d.depth, frozen: { d.frozen }, at)
                d.items.append((kv[0], kv[1]))
            case 0x75:  // SETITEMS
                let kv = try popMark(at)
                guard kv.count % 2 == 0 else { throw fail(at, .badPickle, "SETITEMS with an odd number (\(kv.count)) of keys and values") }
                let d = try dict(at)
                try nest(kv, into: &d.depth, frozen: { d.frozen }, at)
                for i in stride(from: 0, to: kv.count, by: 2) { d.items.append((kv[i], kv[i + 1])) }
            case 0x61:  // APPEND
                let v = try pop(1, at)
                let l = try list(at)
                try nest(v, into: &l.depth, frozen: { l.frozen }, at)
                l.items.append(contentsOf: v)
            case 0x65:  // APPENDS
                let vs = try popMark(at)
                let l = try list(at)
                try nest(vs, into: &l.depth, frozen: { l.frozen }, at)
                l.items.append(contentsOf: vs)
            case 0x71: try put(Int(try byte()), at)  // BINPUT
            case 0x72: try put(Int(try uint(4)), at)  // LONG_BINPUT
            case 0x94: try put(memo.count, at)  // MEMOIZE
            case 0x68, 0x6A:  // BINGET, LONG_BINGET
                let index = Int(op == 0x68 ? UInt64(try byte()) : try uint(4))
                guard let v = memo[index] else { throw fail(at, .badPickle, "memo index \(index) was never stored") }
                stack.append(v)
            case 0x63:  // GLOBAL "module\nname\n"
                let module = try line(at), name = try line(at)
                try pushGlobal(module: module, name: name, at)
            case 0x93:  // STACK_GLOBAL
                let mn = try pop(2, at)
                guard case .string(let module) = mn[0], case .string(let name) = mn[1] else {
                    throw fail(at, .badPickle, "STACK_GLOBAL needs two strings, got \(mn[0].typeName) and \(mn[1].typeName)")
                }
                try pushGlobal(module: module, name: name, at)
            case 0x51:  // BINPERSID
                let pid = try pop(1, at)[0]
                stack.append(.storage(try storage(pid, at)))
            case 0x52:  // REDUCE
                let fa = try pop(2, at)
                stack.append(try reduce(fa[0], fa[1], at))
            case 0x62:  // BUILD: state for the object below (OrderedDict._metadata, tensor state): ignored
                let sv = try pop(2, at)
                stack.append(sv[0])
            default:
                throw fail(at, .unsupportedOpcode, "unsupported pickle opcode 0x\(String(op, radix: 16, uppercase: true))\(Self.printable(op)) (a state dict needs only the opcodes torch's weights-only loader accepts)")
            }
        }
    }

    // MARK: torch objects

    /// A global is only a name here; it is checked against the allow-list and never resolved.
    private mutating func pushGlobal(module: String, name: String, _ at: Int) throws(PickleError) {
        guard PickleGlobals.isAllowed(module: module, name: name) else {
            throw fail(at, .forbiddenGlobal, "global '\(module).\(name)' is not allowed (only collections.OrderedDict, torch._utils._rebuild_tensor_v2/_rebuild_parameter and torch storage/dtype classes); nothing was executed")
        }
        stack.append(.global(module: module, name: name))
    }

    /// `('storage', torch.<X>Storage, key, location, numel)`.
    private func storage(_ pid: PickleValue, _ at: Int) throws(PickleError) -> PickleStorage {
        guard case .tuple(let t, _) = pid, t.count == 5, case .string("storage") = t[0] else {
            throw fail(at, .badPickle, "persistent id is not ('storage', type, key, location, numel)")
        }
        guard let dtype = PickleGlobals.dtype(of: t[1]) else {
            throw fail(at, .badPickle, "persistent id names storage type \(t[1].typeName), not a torch storage class")
        }
        guard case .string(let key) = t[2], case .int(let numel) = t[4], numel >= 0 else {
            throw fail(at, .badPickle, "persistent id needs a string key and a non-negative element count")
        }
        return PickleStorage(dtype: dtype, key: key, numel: numel)
    }

    private func reduce(_ callable: PickleValue, _ args: PickleValue, _ at: Int) throws(PickleError) -> PickleValue {
        guard case .tuple(let a, _) = args else {
            throw fail(at, .badPickle, "REDUCE arguments are \(args.typeName), not a tuple")
        }
        switch callable {
        case .global("collections", "OrderedDict"):
            guard a.isEmpty else { throw fail(at, .badPickle, "OrderedDict(...) with \(a.count) arguments; only OrderedDict() is supported") }
            return .dict(PickleDict())
        case .global("torch._utils", "_rebuild_parameter"):
            // (data, requires_grad, backward_hooks): the parameter is its tensor.
            guard a.count >= 1, case .tensor = a[0] else { throw fail(at, .badPickle, "_rebuild_parameter without a tensor") }
            return a[0]
        case .global("torch._utils", "_rebuild_tensor_v2"):
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
            guard a.count == 6 || a.count == 7 else {
                throw fail(at, .badPickle, "_rebuild_tensor_v2 with \(a.count) arguments (expected 6 or 7)")
            }
            guard case .storage(let storage) = a[0] else {
                throw fail(at, .badPickle, "_rebuild_tensor_v2: first argument is \(a[0].typeName), not a storage")
            }
            guard case .int(let offset) = a[1], offset >= 0 else {
                throw fail(at, .badPickle, "_rebuild_tensor_v2: storage offset is not a non-negative int")
            }
            let shape = try ints(a[2], "size", at), stride = try ints(a[3], "stride", at)
            guard shape.count == stride.count, shape.allSatisfy({ $0 >= 0 }) else {
                throw fail(at, .badPickle, "_rebuild_tensor_v2: size \(shape) and stride \(stride) do not match")
            }
            return .tensor(PickleTensor(storage: storage, storageOffset: offset, shape: shape, stride: stride, position: at))
        default:
            throw fail(at, .badPickle, "cannot call \(callable.typeName) (only OrderedDict(), _rebuild_tensor_v2 and _rebuild_parameter)")
        }
    }

    private func ints(_ v: PickleValue, _ what: String, _ at: Int) throws(PickleError) -> [Int] {
        guard case .tuple(let t, _) = v else { throw fail(at, .badPickle, "_rebuild_tensor_v2: \(what) is \(v.typeName), not a tuple") }
        var out: [Int] = []
        for x in t {
            guard case .int(let i) = x else { throw fail(at, .badPickle, "_rebuild_tensor_v2: \(what) holds a \(x.typeName)") }
            out.append(i)
        }
        return out
    }

    // MARK: stack and input

    /// Deepest nesting accepted; a state dict with its wrapper and `_metadata` needs about 4.
    static let maxDepth = 64

    private func tuple(_ items: [PickleValue], _ at: Int) throws(PickleError) -> PickleValue {
        var depth = 1
        try nest(items, into: &depth, frozen: { false }, at)
        return .tuple(items, depth: depth)
    }

    /// Freezes containers that are being placed inside another one and updates its depth.
    private func nest(_ items: [PickleValue], into depth: inout Int, frozen: () -> Bool, _ at: Int) throws(PickleError) {
        for item in items {
            switch item {
            case .dict(let d): d.frozen = true
            case .list(let l): l.frozen = true
            default: break
            }
        }
        // Checked after freezing, so `d[k] = d` is caught as well.
        guard !frozen() else {
            throw fail(at, .badPickle, "a dict or list is modified after being nested in another container (a cycle, or not a state dict)")
        }
        for item in items { depth = max(depth, item.depth + 1) }
        guard depth <= Self.maxDepth else {
            throw fail(at, .badPickle, "values nested deeper than \(Self.maxDepth) levels (not a state dict)")
        }
    }

    private func fail(_ at: Int, _ kind: TorchCheckpointError.Kind, _ reason: String) -> PickleError {
        PickleError(offset: at, kind: kind, reason: reason)
    }

    private static func printable(_ op: UInt8) -> String {
        op >= 0x21 && op < 0x7F ? " ('\(Character(Unicode.Scalar(op)))')" : ""
    }

    private mutating func pop(_ n: Int, _ at: Int) throws(PickleError) -> [PickleValue] {
        let floor = marks.last ?? 0
        guard stack.count - n >= floor else { throw fail(at, .badPickle, "stack underflow (needs \(n) values)") }
        let values = Array(stack.suffix(n))
        stack.removeLast(n)
        return values
    }

    private mutating func popMark(_ at: Int) throws(PickleError) -> [PickleValue] {
        guard let mark = marks.popLast() else { throw fail(at, .badPickle, "no MARK on the stack") }
        let values = Array(stack[mark...])
        stack.removeSubrange(mark...)
        return values
    }

    private func top(_ at: Int) throws(PickleError) -> PickleValue {
        guard stack.count > (marks.last ?? 0), let v = stack.last else { throw fail(at, .badPickle, "stack underflow") }
        return v
    }

    private func dict(_ at: Int) throws(PickleError) -> PickleDict {
        let v = try top(at)
        guard case .dict(let d) = v else { throw fail(at, .badPickle, "SETITEM(S) on a \(v.typeName), not a dict") }
        return d
    }

    private func list(_ at: Int) throws(PickleError) -> PickleList {
        let v = try top(at)
        guard case .list(let l) = v else { throw fail(at, .badPickle, "APPEND(S) on a \(v.typeName), not a list") }
        return l
    }

    private mutating func put(_ index: Int, _ at: Int) throws(PickleError) {
        memo[index] = try top(at)
    }

    private mutating func byte() throws(PickleError) -> UInt8 {
        guard pos < bytes.count else { throw fail(pos, .truncated, "data.pkl ends without STOP (truncated)") }
        defer { pos += 1 }
        return bytes[pos]
    }

    private mutating func take(_ n: Int) throws(PickleError) -> UnsafeRawBufferPointer {
        guard n >= 0, n <= bytes.count - pos else {
            throw fail(pos, .truncated, "needs \(n) more bytes but data.pkl has \(bytes.count - pos) left (truncated)")
        }
        defer { pos += n }
        return UnsafeRawBufferPointer(rebasing: bytes[pos..<(pos + n)])
    }

    /// Little-endian unsigned integer of `n` bytes.
    private mutating func uint(_ n: Int) throws(PickleError) -> UInt64 {
        let raw = try take(n)
        var v: UInt64 = 0
        for (i, b) in raw.enumerated() { v |= UInt64(b) << (8 * UInt64(i)) }
        return v
    }

    private mutating func utf8(_ n: Int, at: Int) throws(PickleError) -> String {
        let raw = try take(n)
        guard let s = String(validating: raw, as: UTF8.self) else { throw fail(at, .badPickle, "string is not valid UTF-8") }
        return s
    }

    /// A newline-terminated ASCII line (GLOBAL operands).
    private mutating func line(_ at: Int) throws(PickleError) -> String {
        var end = pos
        while end < bytes.count && bytes[end] != 0x0A && end - pos < 256 { end += 1 }
        guard end < bytes.count, bytes[end] == 0x0A else { throw fail(at, .badPickle, "GLOBAL operand is not a newline-terminated name") }
        let s = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[pos..<end]), as: UTF8.self)
        pos = end + 1
        return s
    }
}
