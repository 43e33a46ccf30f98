// Element types of stored tensors and their conversion to f32.

/// A tensor element type as named in safetensors headers.
public enum DType: String, Sendable, CaseIterable, Codable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8"
    case u64 = "U64", u32 = "U32", u16 = "U16", u8 = "U8"
    case bool = "BOOL"

    public var byteSize: Int {
        switch self {
        case .f64, .i64, .u64: return 8
        case .f32, .i32, .u32: return 4
        case .f16, .bf16, .i16, .u16: return 2
        case .i8, .u8, .bool: return 1
        }
    }

    /// Types the model can compute with (converted to f32 on load).
    public var isFloatingPoint: Bool { self == .f32 || self == .f16 || self == .bf16 || self == .f64 }
}

/// Bit-exact conversions of 16-bit floats to f32.
public enum HalfConversion {
    @inline(__always)
    public static func bf16ToFloat(_ bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    @inline(__always)
    public static func f16ToFloat(_ bits: UInt16) -> Float {
        #if arch(x86_64) || arch(arm64)
        return Float(Float16(bitPattern: bits))
        #else
        let sign = UInt32(bits & 0x8000) << 16
        let exp = Int((bits >> 10) & 0x1f)
        let man = UInt32(bits & 0x3ff)
        if exp == 0 {
            let v = Float(man) * Float(sign != 0 ? -1 : 1) / 16_777_216  // 2^-24
            return v
        } else if exp == 31 {
            return Float(bitPattern: sign | 0x7f80_0000 | (man << 13))
        }
        return Float(bitPattern: sign | (UInt32(exp + 112) << 23) | (man << 13))
        #endif
    }

    /// Round-to-nearest-even f32 → bf16 (used when writing bf16 fixtures and exports).
    @inline(__always)
    public static func floatToBF16(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return 0x7fc0 }
        let rounding = ((bits >> 16) & 1) + 0x7fff
        return UInt16((bits &+ rounding) >> 16)
    }
}

/// Converts `count` elements of `dtype` at `source` to f32 into `destination`.
/// Returns false if the dtype is not a floating-point type.
@discardableResult
public func convertToFloat32(
    _ source: UnsafeRawBufferPointer, dtype: DType, into destination: UnsafeMutableBufferPointer<Float>
) -> Bool {
    let n = destination.count
    switch dtype {
    case .f32:
        // Source may be unaligned inside a mapped file: copy bytes.
        UnsafeMutableRawBufferPointer(destination).copyMemory(from: UnsafeRawBufferPointer(rebasing: source[0..<(n * 4)]))
    case .f16:
        for i in 0..<n {
            destination[i] = HalfConversion.f16ToFloat(source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
        }
    case .bf16:
        for i in 0..<n {
            destination[i] = HalfConversion.bf16ToFloat(source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
        }
    case .f64:
        for i in 0..<n {
            destination[i] = Float(source.loadUnaligned(fromByteOffset: 8 * i, as: Double.self))
        }
    default:
        return false
    }
    return true
}
