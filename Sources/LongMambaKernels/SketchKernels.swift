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
        for i in 0..<n { codes[i] = Int32((logs[i] * scale).rounded()) }
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
}
