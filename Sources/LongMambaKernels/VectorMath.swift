// Element-wise kernels shared by the mixers: exp, log, softplus and the step size Δ = softplus(dt + bias),
// SiLU and the gate y ⊙ SiLU(z), RMSNorm, causal depthwise conv.
// This target alone is built with -Ounchecked: it only reads buffers whose sizes the library
// has already checked (the parsers of untrusted files keep Swift's bounds and overflow checks).
// Vectorised with SIMD16<Float> (one AVX-512 register, two AVX2 registers); each has the plain
// formula next to it.
import Foundation

public typealias Vec16 = SIMD16<Float>

/// exp(x) for 16 lanes: x = n·ln2 + r, |r| ≤ ln2/2, exp(r) by a degree-6 polynomial (Cephes
/// expf coefficients, ≈1 ulp), times 2ⁿ built in the exponent bits. n is rounded with the
/// 1.5·2²³ trick so that only plain vector instructions are used (Swift's generic SIMD
/// conversions are not inlined). Inputs below -87.3 give ≈1e-38 instead of 0, which is harmless
/// where it is used (decays and sigmoids).
@inline(__always)
func exp16(_ input: Vec16) -> Vec16 {
    let x = pointwiseMin(pointwiseMax(input, Vec16(repeating: -87.336_54)), Vec16(repeating: 88.376_26))
    let t = Vec16(repeating: 12_582_912).addingProduct(x, Vec16(repeating: 1.442_695_04))  // 1.5·2²³ + x·log2(e)
    let n = t - 12_582_912                                                                  // round(x·log2 e)
    var r = x.addingProduct(n, Vec16(repeating: -0.693_359_375))                            // Cody–Waite: ln2 = hi + lo
    r = r.addingProduct(n, Vec16(repeating: 2.121_944_4e-4))
    var p = Vec16(repeating: 1.987_569_15e-4)
    p = Vec16(repeating: 1.398_199_95e-3).addingProduct(p, r)
    p = Vec16(repeating: 8.333_451_9e-3).addingProduct(p, r)
    p = Vec16(repeating: 4.166_579_59e-2).addingProduct(p, r)
    p = Vec16(repeating: 1.666_666_55e-1).addingProduct(p, r)
    p = Vec16(repeating: 5.000_000_1e-1).addingProduct(p, r)
    let y = (r + 1).addingProduct(p, r * r)                                                 // 1 + r + r²·p(r)
    let bits = (unsafeBitCast(t, to: SIMD16<UInt32>.self) &- 0x4B40_0000 &+ 127) &<< 23      // 2ⁿ
    return y * unsafeBitCast(bits, to: Vec16.self)
}

/// log(x) for 16 lanes, x > 0 finite: x = m·2ᵉ with m in [√½, √2), log(m) by the Cephes logf
/// polynomial (≈1 ulp).
@inline(__always)
func log16(_ x: Vec16) -> Vec16 {
    let bits = unsafeBitCast(x, to: SIMD16<UInt32>.self)
    // e as a float without int→float conversion: (2²³ + biased exponent) − (2²³ + 126)
    var e = unsafeBitCast((bits &>> 23) | 0x4B00_0000, to: Vec16.self) - (8_388_608 + 126)
    var m = unsafeBitCast((bits & 0x007F_FFFF) | 0x3F00_0000, to: Vec16.self)             // [0.5, 1)
    let small = m .< 0.707_106_78
    e = e.replacing(with: e - 1, where: small)
    m = m.replacing(with: m + m, where: small) - 1
    let z = m * m
    var y = Vec16(repeating: 7.037_683_6e-2)
    y = Vec16(repeating: -1.151_461_03e-1).addingProduct(y, m)
    y = Vec16(repeating: 1.167_699_87e-1).addingProduct(y, m)
    y = Vec16(repeating: -1.242_014_08e-1).addingProduct(y, m)
    y = Vec16(repeating: 1.424_932_28e-1).addingProduct(y, m)
    y = Vec16(repeating: -1.666_805_77e-1).addingProduct(y, m)
    y = Vec16(repeating: 2.000_071_48e-1).addingProduct(y, m)
    y = Vec16(repeating: -2.499_999_4e-1).addingProduct(y, m)
    y = Vec16(repeating: 3.333_333_1e-1).addingProduct(y, m)
    y = y * m * z
    y = y.addingProduct(e, Vec16(repeating: -2.121_944_4e-4))
    y = y.addingProduct(z, Vec16(repeating: -0.5))
    return (m + y).addingProduct(e, Vec16(repeating: 0.693_359_375))
}

/// softplus(x) = log1p(eˣ) for 16 lanes, x itself above 20 (torch's threshold). log1p(u) is
/// computed as log(w)·u/(w − 1) with w = 1 + u, exact to a few ulp even for tiny u.
@inline(__always)
func softplus16(_ x: Vec16) -> Vec16 {
    let u = exp16(x)
    let w = u + 1
    let denominator = w - 1
    let safe = denominator .== 0
    let log1p = (log16(w) * u / denominator.replacing(with: 1, where: safe)).replacing(with: u, where: safe)
    return log1p.replacing(with: x, where: x .> 20)
}

/// Δ[t, c] = softplus(dt[t, c] + bias[c]), clamped to `limit` when given: the step size of every
/// mixer (Mamba-1: dt = dt_low · W_dtᵀ, Mamba-2: the dt columns of in_proj). dt: the first
/// `channels` columns of a row-major [rows, stride] matrix; returns Δ: [rows, channels].
/// 16 channels at a time (a short last block through the same lanes), tokens spread over the cores.
public func softplusDelta(_ dt: UnsafePointer<Float>, rows: Int, channels: Int, stride: Int, bias: [Float],
                   limit: (lower: Float, upper: Float)? = nil) -> [Float] {
    precondition(bias.count == channels && stride >= channels)
    guard rows > 0, channels > 0 else { return [] }
    return [Float](unsafeUninitializedCapacity: rows * channels) { buffer, initialized in
        defer { initialized = rows * channels }
        bias.withUnsafeBufferPointer { b in
            nonisolated(unsafe) let (delta, dt, bias) = (buffer.baseAddress!, dt, b.baseAddress!)
            parallelRanges(rows, minimumPerPart: max(1, 4096 / channels)) { tokens in
                for t in tokens {
                    let source = dt + t * stride, row = delta + t * channels
                    var c = 0
                    while c < channels {
                        let width = min(16, channels - c)
                        var v = Vec16()                                                          // dt + bias
                        if width == 16 {
                            v = UnsafeRawPointer(source + c).loadUnaligned(as: Vec16.self) + UnsafeRawPointer(bias + c).loadUnaligned(as: Vec16.self)
                        } else {
                            for lane in 0..<width { v[lane] = source[c + lane] + bias[c + lane] }
                        }
                        // NaN stays NaN (exp16's input clamp would make it ≈1e-38), so that a broken dt
                        // path reaches the solver's check instead of passing for a tiny step.
                        var d = softplus16(v).replacing(with: v, where: v .!= v)
                        if let limit {
                            d = d.replacing(with: limit.lower, where: d .< limit.lower).replacing(with: limit.upper, where: d .> limit.upper)
                        }
                        if width == 16 {
                            UnsafeMutableRawPointer(row + c).storeBytes(of: d, as: Vec16.self)
                        } else {
                            for lane in 0..<width { row[c + lane] = d[lane] }
                        }
                        c += 16
                    }
                }
            }
        }
    }
}

/// `softplusDelta` element by element with the scalar softplus: the oracle the tests hold it to.
public func referenceSoftplusDelta(_ dt: UnsafePointer<Float>, rows: Int, channels: Int, stride: Int, bias: [Float],
                            limit: (lower: Float, upper: Float)? = nil) -> [Float] {
    var delta = [Float](repeating: 0, count: rows * channels)
    for t in 0..<rows {
        for c in 0..<channels {
            let v = softplus(dt[t * stride + c] + bias[c])
            delta[t * channels + c] = limit.map { min(max(v, $0.lower), $0.upper) } ?? v
        }
    }
    return delta
}

/// SiLU(x) = x · σ(x) = x / (1 + e^{-x}), in place over `count` floats at `p`.
@inline(__always)
func siluInPlace(_ p: UnsafeMutablePointer<Float>, count n: Int) {
    var i = 0
    while i + 16 <= n {
        let x = UnsafeRawPointer(p + i).loadUnaligned(as: Vec16.self)
        UnsafeMutableRawPointer(p + i).storeBytes(of: x / (1 + exp16(-x)), as: Vec16.self)
        i += 16
    }
    while i < n { p[i] = p[i] / (1 + Foundation.exp(-p[i])); i += 1 }
}

/// y ← y ⊙ SiLU(z) for y: [rows, width] and the first `width` columns of a row-major
/// [rows, zStride] z, which is left holding SiLU(z). On all cores.
public func multiplyBySiLU(_ y: UnsafeMutablePointer<Float>, gate z: UnsafeMutablePointer<Float>, rows: Int, width: Int, zStride: Int) {
    nonisolated(unsafe) let (y, z) = (y, z)
    parallelRanges(rows) { tokens in
        for t in tokens {
            let gate = z + t * zStride, row = y + t * width
            siluInPlace(gate, count: width)
            for c in 0..<width { row[c] *= gate[c] }
        }
    }
}

/// softplus(x) = log(1 + eˣ), and x itself above 20 (torch's threshold).
@inline(__always)
func softplus(_ x: Float) -> Float { x > 20 ? x : Foundation.log1p(Foundation.exp(x)) }

/// RMSNorm of each row of x: [rows, width] → out = x / sqrt(mean(x²) + eps) · weight.
/// Rows on every core (each row's arithmetic is unchanged, so the bits do not depend on the cores).
public func rmsNorm(_ x: UnsafePointer<Float>, rows: Int, width: Int, weight: [Float], epsilon: Float, into out: UnsafeMutablePointer<Float>) {
    weight.withUnsafeBufferPointer { w in
        nonisolated(unsafe) let (x, out, w) = (x, out, w.baseAddress!)
        parallelRanges(rows, minimumPerPart: max(1, 16_384 / max(width, 1))) { part in
            for r in part {
                let row = x + r * width, o = out + r * width
                var sumSquares: Float = 0
                for j in 0..<width { sumSquares += row[j] * row[j] }
                let scale = 1 / (sumSquares / Float(width) + epsilon).squareRoot()
                for j in 0..<width { o[j] = w[j] * (row[j] * scale) }
            }
        }
    }
}

/// Causal depthwise conv1d over time followed by SiLU, for the first `channels` columns of a
/// row-major [L, stride] input:
///   out[t, c] = SiLU(bias[c] + Σ_{k<K} w[c, k] · in[t − (K−1) + k, c]),  in[<0] = 0.
/// `weight`: [channels, K], output [L, channels] dense. `history` ([K−1, channels], the inputs
/// of the previous chunk's last K−1 tokens) replaces the zero padding when a sequence is
/// processed in chunks; it is updated to this chunk's last K−1 inputs.
public func causalConvSiLU(input: UnsafePointer<Float>, length: Int, stride: Int, channels: Int,
                    weight: [Float], bias: [Float]?, kernel: Int, history: inout [Float],
                    into out: UnsafeMutablePointer<Float>) {
    let past = kernel - 1
    if history.count != past * channels { history = [Float](repeating: 0, count: past * channels) }
    defer {
        // New history: the last K−1 inputs of (history ++ input).
        var next = [Float](repeating: 0, count: past * channels)
        for j in 0..<past {
            let src = length - past + j
            for c in 0..<channels { next[j * channels + c] = src >= 0 ? input[src * stride + c] : history[(past + src) * channels + c] }
        }
        history = next
    }
    weight.withUnsafeBufferPointer { w in
        // Transpose taps to [K, channels] so the inner loop runs over contiguous channels.
        var taps = [Float](repeating: 0, count: kernel * channels)
        for c in 0..<channels { for k in 0..<kernel { taps[k * channels + c] = w[c * kernel + k] } }
        let previous = history
        taps.withUnsafeBufferPointer { tapBuffer in
            nonisolated(unsafe) let (tap, input, out) = (tapBuffer.baseAddress!, input, out)
            parallelRanges(length) { tokens in
                for t in tokens {
                    let o = out + t * channels
                    if let bias { for c in 0..<channels { o[c] = bias[c] } } else { for c in 0..<channels { o[c] = 0 } }
                    for k in 0..<kernel {
                        let src = t - (kernel - 1) + k
                        let tk = tap + k * channels
                        if src < 0 {
                            let j = past + src
                            for c in 0..<channels { o[c] += tk[c] * previous[j * channels + c] }
                            continue
                        }
                        let row = input + src * stride
                        for c in 0..<channels { o[c] += tk[c] * row[c] }
                    }
                    siluInPlace(o, count: channels)
                }
            }
        }
    }
}

/// y ← y + x over `count` floats (the residual stream), on every core; element-wise, so the bits
/// do not depend on the cores.
public func addInPlace(_ x: UnsafePointer<Float>, to y: UnsafeMutablePointer<Float>, count n: Int) {
    nonisolated(unsafe) let (x, y) = (x, y)
    parallelRanges(n, minimumPerPart: 65_536) { part in
        for i in part { y[i] += x[i] }
    }
}
