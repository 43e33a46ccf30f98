// Causal softmax attention for Zamba2's shared blocks, in key blocks with an online softmax
// (flash-attention style), so no L × L matrix is ever formed: beyond q, k, v and the output,
// memory is one [Bq, Bk] score block and a [Bq, d] accumulator. Both products of a block are
// cblas_sgemm calls. A plain version (one query row at a time) sits beside it for the tests.
//
// Glossary
//   L      query rows (this chunk)             T = past + L   keys (the cache, this chunk last)
//   H      query heads                          H_kv           key/value heads; head h reads kv head h / (H / H_kv)
//   d      head dim                             s              score scale (Zamba2: (d / 2)^(−1/2))
//   q: [L, H·d]   k, v: [T, H_kv·d]   out: [L, H·d]       query row i sits at position past + i
//   out_i = Σ_{j ≤ past+i} softmax_j(s · q_i · k_j) v_j
// Online softmax per query row over key blocks: m ← max(m, max S), ℓ ← ℓ·e^(m_old − m) + Σ e^(S − m),
// acc ← acc·e^(m_old − m) + e^(S − m) · V; out = acc / ℓ.
import COpenBLAS
import Foundation

/// Head counts and head size of one attention call.
public struct AttentionShape: Sendable, Equatable {
    public var heads: Int
    public var keyValueHeads: Int
    public var headDim: Int
    public init(heads: Int, keyValueHeads: Int, headDim: Int) {
        self.heads = heads; self.keyValueHeads = keyValueHeads; self.headDim = headDim
    }
}

public enum CausalAttention {
    /// Query rows and keys per block of the blocked kernel.
    public static let queryBlock = 128, keyBlock = 512

    /// Floats of scratch `blocked` needs: scores [Bq, Bk], accumulator [Bq, d], m and ℓ [Bq].
    public static func scratchCount(_ shape: AttentionShape) -> Int { queryBlock * keyBlock + queryBlock * shape.headDim + 2 * queryBlock }

    /// The blocked kernel: out: [L, H·d] from q: [L, H·d] and k, v: [past + L, H_kv·d].
    public static func blocked(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>, length L: Int, past: Int,
                               shape: AttentionShape, scale: Float, into out: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        let d = shape.headDim, qStride = shape.heads * d, kvStride = shape.keyValueHeads * d
        let group = shape.heads / shape.keyValueHeads
        let scores = scratch, acc = scratch + queryBlock * keyBlock                      // S: [Bq, Bk], acc: [Bq, d]
        let rowMax = acc + queryBlock * d, rowSum = rowMax + queryBlock                  // m, ℓ: [Bq]
        for h in 0..<shape.heads {
            let qh = q + h * d, kh = k + (h / group) * d, vh = v + (h / group) * d
            var q0 = 0
            while q0 < L {
                let rows = min(queryBlock, L - q0)
                let keysEnd = past + q0 + rows                                           // keys this block of queries may see
                for i in 0..<rows { rowMax[i] = -.infinity; rowSum[i] = 0 }
                for i in 0..<(rows * d) { acc[i] = 0 }
                var k0 = 0
                while k0 < keysEnd {
                    let cols = min(keyBlock, keysEnd - k0)
                    // S = s · Q_blk · K_blkᵀ: [rows, cols]
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(cols), Int32(d),
                                scale, qh + q0 * qStride, Int32(qStride), kh + k0 * kvStride, Int32(kvStride), 0, scores, Int32(cols))
                    for i in 0..<rows {
                        let s = scores + i * cols
                        let visible = min(cols, past + q0 + i + 1 - k0)                  // keys j ≤ the row's position
                        guard visible > 0 else { for j in 0..<cols { s[j] = 0 }; continue }
                        var m = rowMax[i]
                        for j in 0..<visible { m = max(m, s[j]) }
                        let correction = Foundation.exp(rowMax[i] - m)                 // e^(m_old − m); 0 on the first block
                        let sum = expInPlace(s, count: visible, minus: m)
                        for j in visible..<cols { s[j] = 0 }
                        rowSum[i] = rowSum[i] * correction + sum
                        rowMax[i] = m
                        if correction != 1 { let a = acc + i * d; for c in 0..<d { a[c] *= correction } }
                    }
                    // acc += P · V_blk: [rows, d]
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(d), Int32(cols),
                                1, scores, Int32(cols), vh + k0 * kvStride, Int32(kvStride), 1, acc, Int32(d))
                    k0 += cols
                }
                for i in 0..<rows {
                    let o = out + (q0 + i) * qStride + h * d, a = acc + i * d, inv = 1 / rowSum[i]
                    for c in 0..<d { o[c] = a[c] * inv }
                }
                q0 += rows
            }
        }
    }

    /// s[j] ← e^(s[j] − m) for j < count; returns their sum.
    @inline(__always)
    static func expInPlace(_ s: UnsafeMutablePointer<Float>, count n: Int, minus m: Float) -> Float {
        var total = Vec16(repeating: 0)
        var j = 0
        while j + 16 <= n {
            let e = exp16(UnsafeRawPointer(s + j).loadUnaligned(as: Vec16.self) - m)
            UnsafeMutableRawPointer(s + j).storeBytes(of: e, as: Vec16.self)
            total += e
            j += 16
        }
        var sum = total.sum()
        while j < n { s[j] = Foundation.exp(s[j] - m); sum += s[j]; j += 1 }
        return sum
    }

    /// The plain formula, one query row and one head at a time (full softmax over the visible keys).
    public static func reference(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>, length L: Int, past: Int,
                                 shape: AttentionShape, scale: Float, into out: UnsafeMutablePointer<Float>) {
        let d = shape.headDim, qStride = shape.heads * d, kvStride = shape.keyValueHeads * d
        let group = shape.heads / shape.keyValueHeads
        var weights = [Float](repeating: 0, count: past + L)
        for h in 0..<shape.heads {
            let g = h / group
            for i in 0..<L {
                let qi = q + i * qStride + h * d
                let visible = past + i + 1
                var m = -Float.infinity
                for j in 0..<visible {
                    let kj = k + j * kvStride + g * d
                    var dot: Float = 0
                    for c in 0..<d { dot += qi[c] * kj[c] }
                    weights[j] = dot * scale
                    m = max(m, weights[j])
                }
                var sum: Float = 0
                for j in 0..<visible { weights[j] = Foundation.exp(weights[j] - m); sum += weights[j] }
                let o = out + i * qStride + h * d
                for c in 0..<d { o[c] = 0 }
                for j in 0..<visible {
                    let vj = v + j * kvStride + g * d, w = weights[j] / sum
                    for c in 0..<d { o[c] += w * vj[c] }
                }
            }
        }
    }
}
