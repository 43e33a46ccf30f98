// The per-value loops of the Δ sketch encoder (Calibration/DeltaRepresentation.swift), written so
// that the compiler vectorises them (this target is -Ounchecked: no trap branches in the loops).
// The plain formulas are DeltaSketch.logarithm, DeltaSketch.codes and DeltaSketch.riceParameter,
// and the tests check these loops against them value for value.
//
// Glossary
//   x_i    Δ of one channel, sorted descending, positive (the zeros are counted, not coded)
//   ℓ_i    ln x_i (double)                     q = 2^-e   the quantisation step (scale = 2^e)
//   c_i    round(ℓ_i / q), non-increasing       g_i = c_(i-1) − c_i ≥ 0   the gaps that are Rice-coded
//   bits(k) = Σ_i (1 + k + (g_i >> k))          the Rice cost of a block with parameter k
import Foundation

public enum SketchKernels {
    /// ℓ_i = ln x_i for positive finite floats, the same operations as `DeltaSketch.logarithm`
    /// (x = m·2^k, m in [√½, √2), ln x = k·ln 2 + 2·atanh(s), s = (m−1)/(m+1)), branch-free so that
    /// it vectorises; subnormal inputs (exponent bits 0) are redone with Foundation.log afterwards.
    public static func logarithms(_ x: UnsafePointer<Float>, count n: Int, into out: UnsafeMutablePointer<Double>) {
        var subnormals = 0
        for i in 0..<n {
            let bits = x[i].bitPattern
            let exponent = (bits >> 23) & 0xff
            subnormals &+= exponent == 0 ? 1 : 0
            let m0 = Double(Float(bitPattern: (bits & 0x007f_ffff) | 0x3f80_0000))   // [1, 2)
            let high = m0 > 1.4142135623730951
            let m = high ? m0 / 2 : m0
            let k = Double(Int32(bitPattern: exponent) &- 127 &+ (high ? 1 : 0))
            let s = (m - 1) / (m + 1), s2 = s * s
            var p = 2.0 / 17
            p = p * s2 + 2.0 / 15; p = p * s2 + 2.0 / 13; p = p * s2 + 2.0 / 11; p = p * s2 + 2.0 / 9
            p = p * s2 + 2.0 / 7; p = p * s2 + 2.0 / 5; p = p * s2 + 2.0 / 3; p = p * s2 + 2
            out[i] = k * 0.6931471805599453 + s * p
        }
        if subnormals > 0 {
            for i in 0..<n where (x[i].bitPattern >> 23) & 0xff == 0 { out[i] = Foundation.log(Double(x[i])) }
        }
    }

    /// c_i = round(ℓ_i · scale) (halves away from zero), then made non-increasing (an equal or
    /// nearly equal pair may round apart: it is kept equal), and g_i = c_(i-1) − c_i for i ≥ 1
    /// (gaps[0] = 0). |ℓ| < 104 and scale ≤ 2^20 keep |c| < 2^27.
    public static func quantise(_ logs: UnsafePointer<Double>, count n: Int, scale: Double,
                                codes: UnsafeMutablePointer<Int32>, gaps: UnsafeMutablePointer<UInt32>) {
        guard n > 0 else { return }
        for i in 0..<n {
            // round half away from zero, as Double.rounded(), in select form (vectorises): x − trunc x is exact
            let x = logs[i] * scale, t = x.rounded(.towardZero), f = x - t
            codes[i] = Int32(f >= 0.5 ? t + 1 : (f <= -0.5 ? t - 1 : t))
        }
        var previous = codes[0]
        for i in 1..<n { let c = min(codes[i], previous); codes[i] = c; previous = c }
        gaps[0] = 0
        for i in 1..<n { gaps[i] = UInt32(bitPattern: codes[i - 1] &- codes[i]) }
    }

    /// bits(k) = Σ (1 + k + (g >> k)) over `count` gaps. The gaps of a zone telescope to
    /// c_first − c_last < 2^28, so their quotients sum in 32 bits.
    @inline(__always)
    public static func riceBits(_ gaps: UnsafePointer<UInt32>, count n: Int, k: Int) -> Int {
        var quotients: UInt32 = 0
        for i in 0..<n { quotients &+= gaps[i] &>> UInt32(k) }
        return n * (1 + k) + Int(quotients)
    }

    /// Keys ~bits(Δ + 0) of channels c0 ..< c0 + width of a token-major [L, C] Δ, channel-major
    /// [width, rowStride ≥ L] (`+ 0` turns -0.0 into +0.0); one 4·width-byte run of Δ per token.
    public static func transposeToKeys(_ delta: UnsafePointer<Float>, length L: Int, channels C: Int, first c0: Int, width: Int,
                                       into keys: UnsafeMutablePointer<UInt32>, rowStride: Int) {
        for t in 0..<L {
            let row = delta + t * C + c0
            for j in 0..<width { keys[j * rowStride + t] = ~(row[j] + 0).bitPattern }
        }
    }

    /// Δ_t = bits back from sorted keys.
    public static func valuesFromKeys(_ keys: UnsafePointer<UInt32>, count n: Int, into out: UnsafeMutablePointer<Float>) {
        for i in 0..<n { out[i] = Float(bitPattern: ~keys[i]) }
    }

    /// Index of the first value that is not a step size (NaN, infinite or negative), or nil.
    public static func firstInvalidDelta(_ x: UnsafePointer<Float>, count n: Int) -> Int? {
        // Vectorised test of blocks; the scalar search only in a block that fails.
        let block = 256
        var start = 0
        while start < n {
            let end = min(n, start + block)
            var bad: UInt32 = 0
            // x ≥ 0 and finite ⇔ bits < 0x7f80_0000 (sign clear, exponent not all ones); -0.0 passes
            for i in start..<end { let b = x[i].bitPattern; bad |= (b >= 0x7f80_0000 && b != 0x8000_0000) ? 1 : 0 }
            if bad != 0 { for i in start..<end where !(x[i].isFinite && x[i] >= 0) { return i } }
            start = end
        }
        return nil
    }
}

/// MSB-first bit packing into a buffer sized by the caller (the sketch knows its record's size
/// before writing it), the same bits as the library's BitWriter.
public struct BitPacker {
    let base: UnsafeMutablePointer<UInt8>
    public private(set) var byteCount = 0
    var accumulator: UInt64 = 0
    var used = 0

    public init(_ base: UnsafeMutablePointer<UInt8>) { self.base = base }

    /// The low `bits` (≤ 32) bits of value. `used` < 32 between calls: whole 32-bit words are
    /// stored big-endian as they fill.
    @inline(__always)
    public mutating func write(_ value: UInt64, bits: Int) {
        accumulator = (accumulator << UInt64(bits)) | (value & ((1 << UInt64(bits)) &- 1))
        used += bits
        if used >= 32 {
            used -= 32
            let word = UInt32(truncatingIfNeeded: accumulator >> UInt64(used)).bigEndian
            UnsafeMutableRawPointer(base + byteCount).storeBytes(of: word, as: UInt32.self)
            byteCount += 4
        }
    }

    /// Rice codes of `count` gaps with parameter k: quotient ones, a zero, k bits of remainder.
    public mutating func writeRice(_ gaps: UnsafePointer<UInt32>, count n: Int, k: Int) {
        let mask: UInt64 = (1 << UInt64(k)) &- 1
        for i in 0..<n {
            let g = UInt64(gaps[i])
            var quotient = g >> UInt64(k)
            if quotient + 1 + UInt64(k) <= 32 {
                write((((1 << quotient) &- 1) << UInt64(k + 1)) | (g & mask), bits: Int(quotient) + 1 + k)
                continue
            }
            while quotient >= 31 { write(0x7FFF_FFFF, bits: 31); quotient -= 31 }
            write(((1 << quotient) &- 1) << 1, bits: Int(quotient) + 1)
            if k > 0 { write(g & mask, bits: k) }
        }
    }

    /// Pads to a whole byte; the bytes written.
    public mutating func finish() -> Int {
        while used >= 8 { used -= 8; base[byteCount] = UInt8(truncatingIfNeeded: accumulator >> UInt64(used)); byteCount += 1 }
        if used > 0 { base[byteCount] = UInt8(truncatingIfNeeded: accumulator << UInt64(8 - used)); byteCount += 1; used = 0 }
        return byteCount
    }
}
