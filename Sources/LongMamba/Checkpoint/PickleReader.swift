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

/// Why data.pkl could not be read; `offset` is the byte in data.pkl of the opcode at fault (or
/// where the input ran out). `TorchCheckpointError.pickle` adds the file and entry names.
public enum PickleError: Error, CustomStringConvertible, Sendable, Equatable {
    case unsupportedProtocol(offset: Int, version: UInt8)
    /// STOP with other than exactly one value and no open marks.
    case badStop(offset: Int, values: Int, openMarks: Int)
    case longTooWide(offset: Int, bytes: Int)
    case oddSetItems(offset: Int, count: Int)
    case unknownMemo(offset: Int, index: Int)
    case stackGlobalNotStrings(offset: Int, moduleType: String, nameType: String)
    /// An opcode outside the state-dict set (torch's weights-only loader).
    case unsupportedOpcode(offset: Int, opcode: UInt8)
    /// A global outside the allow-list; it was never resolved.
    case forbiddenGlobal(offset: Int, module: String, name: String)
    case badPersistentID(offset: Int)
    case unknownStorageType(offset: Int, typeName: String)
    case badStorageKey(offset: Int)
    case reduceArgumentsNotTuple(offset: Int, typeName: String)
    case orderedDictArguments(offset: Int, count: Int)
    case parameterWithoutTensor(offset: Int)
    case rebuildArgumentCount(offset: Int, count: Int)
    case rebuildWithoutStorage(offset: Int, typeName: String)
    case rebuildBadStorageOffset(offset: Int)
    /// `argument`: size or stride.
    case rebuildArgumentNotTuple(offset: Int, argument: String, typeName: String)
    case rebuildArgumentNotInts(offset: Int, argument: String, typeName: String)
    case rebuildSizeStrideMismatch(offset: Int, size: [Int], stride: [Int])
    case uncallable(offset: Int, typeName: String)
    /// A container changed after being nested (a cycle, or not a state dict).
    case modifiedAfterNesting(offset: Int)
    case nestedTooDeep(offset: Int, limit: Int)
    case stackUnderflow(offset: Int, needed: Int)
    case emptyStack(offset: Int)
    case noMark(offset: Int)
    case setItemOnNonDict(offset: Int, typeName: String)
    case appendOnNonList(offset: Int, typeName: String)
    /// The input ends before STOP.
    case missingStop(offset: Int)
    /// An operand of `needed` bytes with only `left` remaining.
    case truncated(offset: Int, needed: Int, left: Int)
    case invalidUTF8(offset: Int)
    case badGlobalOperand(offset: Int)

    public var offset: Int {
        switch self {
        case let .unsupportedProtocol(o, _), let .badStop(o, _, _), let .longTooWide(o, _), let .oddSetItems(o, _),
             let .unknownMemo(o, _), let .stackGlobalNotStrings(o, _, _), let .unsupportedOpcode(o, _), let .forbiddenGlobal(o, _, _),
             let .badPersistentID(o), let .unknownStorageType(o, _), let .badStorageKey(o), let .reduceArgumentsNotTuple(o, _),
             let .orderedDictArguments(o, _), let .parameterWithoutTensor(o), let .rebuildArgumentCount(o, _),
             let .rebuildWithoutStorage(o, _), let .rebuildBadStorageOffset(o), let .rebuildArgumentNotTuple(o, _, _),
             let .rebuildArgumentNotInts(o, _, _), let .rebuildSizeStrideMismatch(o, _, _), let .uncallable(o, _),
             let .modifiedAfterNesting(o), let .nestedTooDeep(o, _), let .stackUnderflow(o, _), let .emptyStack(o), let .noMark(o),
             let .setItemOnNonDict(o, _), let .appendOnNonList(o, _), let .missingStop(o), let .truncated(o, _, _),
             let .invalidUTF8(o), let .badGlobalOperand(o):
            return o
        }
    }

    /// What is wrong (without the file, entry and offset).
    public var description: String {
        switch self {
        case let .unsupportedProtocol(_, version):
            return "pickle protocol \(version) is newer than 5"
        case let .badStop(_, values, openMarks):
            return "STOP with \(values) values and \(openMarks) open marks on the stack (expected exactly one value)"
        case let .longTooWide(_, bytes):
            return "LONG1 of \(bytes) bytes does not fit in 64 bits"
        case let .oddSetItems(_, count):
            return "SETITEMS with an odd number (\(count)) of keys and values"
        case let .unknownMemo(_, index):
            return "memo index \(index) was never stored"
        case let .stackGlobalNotStrings(_, moduleType, nameType):
            return "STACK_GLOBAL needs two strings, got \(moduleType) and \(nameType)"
        case let .unsupportedOpcode(_, op):
            let printable = op >= 0x21 && op < 0x7F ? " ('\(Character(Unicode.Scalar(op)))')" : ""
            return "unsupported pickle opcode 0x\(String(op, radix: 16, uppercase: true))\(printable) (a state dict needs only the opcodes torch's weights-only loader accepts)"
        case let .forbiddenGlobal(_, module, name):
            return "global '\(module).\(name)' is not allowed (only collections.OrderedDict, torch._utils._rebuild_tensor_v2/_rebuild_parameter and torch storage/dtype classes); nothing was executed"
        case .badPersistentID:
            return "persistent id is not ('storage', type, key, location, numel)"
        case let .unknownStorageType(_, typeName):
            return "persistent id names storage type \(typeName), not a torch storage class"
        case .badStorageKey:
            return "persistent id needs a string key and a non-negative element count"
        case let .reduceArgumentsNotTuple(_, typeName):
            return "REDUCE arguments are \(typeName), not a tuple"
        case let .orderedDictArguments(_, count):
            return "OrderedDict(...) with \(count) arguments; only OrderedDict() is supported"
        case .parameterWithoutTensor:
            return "_rebuild_parameter without a tensor"
        case let .rebuildArgumentCount(_, count):
            return "_rebuild_tensor_v2 with \(count) arguments (expected 6 or 7)"
        case let .rebuildWithoutStorage(_, typeName):
            return "_rebuild_tensor_v2: first argument is \(typeName), not a storage"
        case .rebuildBadStorageOffset:
            return "_rebuild_tensor_v2: storage offset is not a non-negative int"
        case let .rebuildArgumentNotTuple(_, argument, typeName):
            return "_rebuild_tensor_v2: \(argument) is \(typeName), not a tuple"
        case let .rebuildArgumentNotInts(_, argument, typeName):
            return "_rebuild_tensor_v2: \(argument) holds a \(typeName)"
        case let .rebuildSizeStrideMismatch(_, size, stride):
            return "_rebuild_tensor_v2: size \(size) and stride \(stride) do not match"
        case let .uncallable(_, typeName):
            return "cannot call \(typeName) (only OrderedDict(), _rebuild_tensor_v2 and _rebuild_parameter)"
        case .modifiedAfterNesting:
            return "a dict or list is modified after being nested in another container (a cycle, or not a state dict)"
        case let .nestedTooDeep(_, limit):
            return "values nested deeper than \(limit) levels (not a state dict)"
        case let .stackUnderflow(_, needed):
            return "stack underflow (needs \(needed) values)"
        case .emptyStack:
            return "stack underflow"
        case .noMark:
            return "no MARK on the stack"
        case let .setItemOnNonDict(_, typeName):
            return "SETITEM(S) on a \(typeName), not a dict"
        case let .appendOnNonList(_, typeName):
            return "APPEND(S) on a \(typeName), not a list"
        case .missingStop:
            return "data.pkl ends without STOP (truncated)"
        case let .truncated(_, needed, left):
            return "needs \(needed) more bytes but data.pkl has \(left) left (truncated)"
        case .invalidUTF8:
            return "string is not valid UTF-8"
        case .badGlobalOperand:
            return "GLOBAL operand is not a newline-terminated name"
        }
    }
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
                guard version <= 5 else { throw PickleError.unsupportedProtocol(offset: at, version: version) }
            case 0x95:  // FRAME: a length hint only
                _ = try take(8)
            case 0x2E:  // STOP
                guard marks.isEmpty, stack.count == 1, let result = stack.last else {
                    throw PickleError.badStop(offset: at, values: stack.count, openMarks: marks.count)
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
                guard n <= 8 else { throw PickleError.longTooWide(offset: at, bytes: n) }
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
                guard kv.count % 2 == 0 else { throw PickleError.oddSetItems(offset: at, count: kv.count) }
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
                guard let v = memo[index] else { throw PickleError.unknownMemo(offset: at, index: index) }
                stack.append(v)
            case 0x63:  // GLOBAL "module\nname\n"
                let module = try line(at), name = try line(at)
                try pushGlobal(module: module, name: name, at)
            case 0x93:  // STACK_GLOBAL
                let mn = try pop(2, at)
                guard case .string(let module) = mn[0], case .string(let name) = mn[1] else {
                    throw PickleError.stackGlobalNotStrings(offset: at, moduleType: mn[0].typeName, nameType: mn[1].typeName)
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
                throw PickleError.unsupportedOpcode(offset: at, opcode: op)
            }
        }
    }

    // MARK: torch objects

    /// A global is only a name here; it is checked against the allow-list and never resolved.
    private mutating func pushGlobal(module: String, name: String, _ at: Int) throws(PickleError) {
        guard PickleGlobals.isAllowed(module: module, name: name) else {
            throw PickleError.forbiddenGlobal(offset: at, module: module, name: name)
        }
        stack.append(.global(module: module, name: name))
    }

    /// `('storage', torch.<X>Storage, key, location, numel)`.
    private func storage(_ pid: PickleValue, _ at: Int) throws(PickleError) -> PickleStorage {
        guard case .tuple(let t, _) = pid, t.count == 5, case .string("storage") = t[0] else {
            throw PickleError.badPersistentID(offset: at)
        }
        guard let dtype = PickleGlobals.dtype(of: t[1]) else {
            throw PickleError.unknownStorageType(offset: at, typeName: t[1].typeName)
        }
        guard case .string(let key) = t[2], case .int(let numel) = t[4], numel >= 0 else {
            throw PickleError.badStorageKey(offset: at)
        }
        return PickleStorage(dtype: dtype, key: key, numel: numel)
    }

    private func reduce(_ callable: PickleValue, _ args: PickleValue, _ at: Int) throws(PickleError) -> PickleValue {
        guard case .tuple(let a, _) = args else {
            throw PickleError.reduceArgumentsNotTuple(offset: at, typeName: args.typeName)
        }
        switch callable {
        case .global("collections", "OrderedDict"):
            guard a.isEmpty else { throw PickleError.orderedDictArguments(offset: at, count: a.count) }
            return .dict(PickleDict())
        case .global("torch._utils", "_rebuild_parameter"):
            // (data, requires_grad, backward_hooks): the parameter is its tensor.
            guard a.count >= 1, case .tensor = a[0] else { throw PickleError.parameterWithoutTensor(offset: at) }
            return a[0]
        case .global("torch._utils", "_rebuild_tensor_v2"):
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
            guard a.count == 6 || a.count == 7 else {
                throw PickleError.rebuildArgumentCount(offset: at, count: a.count)
            }
            guard case .storage(let storage) = a[0] else {
                throw PickleError.rebuildWithoutStorage(offset: at, typeName: a[0].typeName)
            }
            guard case .int(let offset) = a[1], offset >= 0 else {
                throw PickleError.rebuildBadStorageOffset(offset: at)
            }
            let shape = try ints(a[2], "size", at), stride = try ints(a[3], "stride", at)
            guard shape.count == stride.count, shape.allSatisfy({ $0 >= 0 }) else {
                throw PickleError.rebuildSizeStrideMismatch(offset: at, size: shape, stride: stride)
            }
            return .tensor(PickleTensor(storage: storage, storageOffset: offset, shape: shape, stride: stride, position: at))
        default:
            throw PickleError.uncallable(offset: at, typeName: callable.typeName)
        }
    }

    private func ints(_ v: PickleValue, _ what: String, _ at: Int) throws(PickleError) -> [Int] {
        guard case .tuple(let t, _) = v else { throw PickleError.rebuildArgumentNotTuple(offset: at, argument: what, typeName: v.typeName) }
        var out: [Int] = []
        for x in t {
            guard case .int(let i) = x else { throw PickleError.rebuildArgumentNotInts(offset: at, argument: what, typeName: x.typeName) }
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
            throw PickleError.modifiedAfterNesting(offset: at)
        }
        for item in items { depth = max(depth, item.depth + 1) }
        guard depth <= Self.maxDepth else {
            throw PickleError.nestedTooDeep(offset: at, limit: Self.maxDepth)
        }
    }

    private mutating func pop(_ n: Int, _ at: Int) throws(PickleError) -> [PickleValue] {
        let floor = marks.last ?? 0
        guard stack.count - n >= floor else { throw PickleError.stackUnderflow(offset: at, needed: n) }
        let values = Array(stack.suffix(n))
        stack.removeLast(n)
        return values
    }

    private mutating func popMark(_ at: Int) throws(PickleError) -> [PickleValue] {
        guard let mark = marks.popLast() else { throw PickleError.noMark(offset: at) }
        let values = Array(stack[mark...])
        stack.removeSubrange(mark...)
        return values
    }

    private func top(_ at: Int) throws(PickleError) -> PickleValue {
        guard stack.count > (marks.last ?? 0), let v = stack.last else { throw PickleError.emptyStack(offset: at) }
        return v
    }

    private func dict(_ at: Int) throws(PickleError) -> PickleDict {
        let v = try top(at)
        guard case .dict(let d) = v else { throw PickleError.setItemOnNonDict(offset: at, typeName: v.typeName) }
        return d
    }

    private func list(_ at: Int) throws(PickleError) -> PickleList {
        let v = try top(at)
        guard case .list(let l) = v else { throw PickleError.appendOnNonList(offset: at, typeName: v.typeName) }
        return l
    }

    private mutating func put(_ index: Int, _ at: Int) throws(PickleError) {
        memo[index] = try top(at)
    }

    private mutating func byte() throws(PickleError) -> UInt8 {
        guard pos < bytes.count else { throw PickleError.missingStop(offset: pos) }
        defer { pos += 1 }
        return bytes[pos]
    }

    private mutating func take(_ n: Int) throws(PickleError) -> UnsafeRawBufferPointer {
        guard n >= 0, n <= bytes.count - pos else {
            throw PickleError.truncated(offset: pos, needed: n, left: bytes.count - pos)
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
        guard let s = String(validating: raw, as: UTF8.self) else { throw PickleError.invalidUTF8(offset: at) }
        return s
    }

    /// A newline-terminated ASCII line (GLOBAL operands).
    private mutating func line(_ at: Int) throws(PickleError) -> String {
        var end = pos
        while end < bytes.count && bytes[end] != 0x0A && end - pos < 256 { end += 1 }
        guard end < bytes.count, bytes[end] == 0x0A else { throw PickleError.badGlobalOperand(offset: at) }
        let s = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[pos..<end]), as: UTF8.self)
        pos = end + 1
        return s
    }
}
