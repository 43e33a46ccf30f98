// The loss of a language model at each position: −log softmax(logits[r])[target[r]], the
// perplexity evaluation's and the scale calibration's inner loop (one exp per vocabulary entry
// per token: with Foundation's scalar exp on one core it took about 40 % of a scale calibration
// of the demo model, more than its forward passes' non-GEMM work).
//
// Glossary: r a row (token position), V the (padded) vocabulary, x = logits[r, 0..<V],
//   m = max_v x_v,  z = Σ_v exp(x_v − m),  nll[r] = log z + m − x[target[r]].
import Foundation

/// nll[r] for `rows` rows of a row-major [rows, V] logits matrix. Rows are spread over the cores;
/// within a row exp16 runs over 16 lanes, summed in f32 within blocks of 256 values and in f64
/// across blocks (≈1e-7 relative in z against the plain f64 sum). A row holding a non-finite logit
/// takes the plain formula, so NaN and ±∞ behave as they do there.
public func negativeLogLikelihoods(_ logits: UnsafePointer<Float>, rows: Int, vocab V: Int, targets: UnsafePointer<Int>,
                                   into nll: UnsafeMutablePointer<Double>) {
    guard rows > 0, V > 0 else { return }
    nonisolated(unsafe) let (logits, targets, nll) = (logits, targets, nll)
    parallelRanges(rows, minimumPerPart: max(1, 32_768 / V)) { part in
        for r in part {
            let x = logits + r * V
            nll[r] = rowNegativeLogLikelihood(x, vocab: V, target: targets[r]) ?? referenceNegativeLogLikelihood(x, vocab: V, target: targets[r])
        }
    }
}

/// One row through the 16 lanes; nil when the row holds a non-finite value.
@inline(__always)
func rowNegativeLogLikelihood(_ x: UnsafePointer<Float>, vocab V: Int, target: Int) -> Double? {
    let full = V / 16 * 16
    // m, and whether every value is finite (x − x is 0 for finite x, NaN for ±∞ and NaN).
    var m16 = Vec16(repeating: -.infinity), finite = Vec16()
    var i = 0
    while i < full {
        let v = UnsafeRawPointer(x + i).loadUnaligned(as: Vec16.self)
        m16 = pointwiseMax(m16, v); finite += v - v
        i += 16
    }
    var m = m16.max(), tailFinite: Float = 0
    for j in full..<V { m = max(m, x[j]); tailFinite += x[j] - x[j] }
    guard finite.sum() == 0, tailFinite == 0 else { return nil }
    // z = Σ exp(x_v − m): f32 lanes over blocks of 16 vectors, f64 across blocks.
    let shift = Vec16(repeating: m)
    var z = 0.0
    i = 0
    while i < full {
        let blockEnd = min(full, i + 256)
        var acc = Vec16()
        while i < blockEnd {
            acc += exp16(UnsafeRawPointer(x + i).loadUnaligned(as: Vec16.self) - shift)
            i += 16
        }
        z += Double(acc.sum())
    }
    for j in full..<V { z += Foundation.exp(Double(x[j] - m)) }
    return Foundation.log(z) + Double(m) - Double(x[target])
}

/// The plain formula in f64, value by value: the oracle the tests hold `negativeLogLikelihoods` to.
public func referenceNegativeLogLikelihood(_ x: UnsafePointer<Float>, vocab V: Int, target: Int) -> Double {
    var m = -Float.infinity
    for v in 0..<V { m = max(m, x[v]) }
    var z = 0.0
    for v in 0..<V { z += Foundation.exp(Double(x[v] - m)) }
    return Foundation.log(z) + Double(m) - Double(x[target])
}
