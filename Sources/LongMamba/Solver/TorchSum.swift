// torch.sum over a contiguous float32 row, in torch's own summation order (ATen SumKernel.cpp
// "cascade sum"), so the decay budget D is bit-identical to the authors' `torch.sum`.
// Why it matters: τ is found by the first running sum > D; a D one ulp off moves k* by one
// whenever a running sum lands within that ulp (frequent with tied Δ values).
//
// Order: the row is read as W-wide vectors (W = 8, as torch's Vectorized<float> kernel on x86
// AVX2/AVX512 CPUs; rows shorter than W use W = 1), grouped in 4 interleaved accumulators
// (ILP), each a 4-level cascade: level 0 adds 2^p vectors, then is folded into level 1, and so on,
// p = max(4, ceil(log2(n))/4). Tail vectors go into accumulator 0, the 4 accumulators are added,
// then the scalar tail, then the W lanes.
// Verified against torch 2.13 (CPU capability AVX512) in the golden tests.

public enum TorchSum {
    /// torch.sum(row) for a contiguous float32 row.
    public static func sum(_ x: ArraySlice<Float>) -> Float {
        x.withUnsafeBufferPointer { sum($0) }
    }

    public static func sum(_ x: UnsafeBufferPointer<Float>) -> Float {
        x.count >= 32 ? vectorSum(x) : referenceSum(x)
    }

    /// The same order with the 8 lanes × 4 interleaved accumulators as one SIMD32 per cascade
    /// level: row i of every lane's multi_row_sum is the 32 consecutive floats x[32i ..< 32i + 32]
    /// (accumulator k, lane l ↔ element 8k + l). Each element still sees torch's sequence of
    /// float additions, so the result is bit-identical to `referenceSum` (tested).
    static func vectorSum(_ x: UnsafeBufferPointer<Float>) -> Float {
        let n = x.count, width = 8, ilp = 4
        let vectors = n / width
        let rows = vectors / ilp
        let levels = 4
        let levelPower = max(4, ceilLog2(rows) / levels)
        let levelStep = 1 << levelPower
        let levelMask = levelStep - 1
        let base = x.baseAddress!
        // acc[level][32]: element-wise loops over 32 floats, which LLVM turns into vector adds.
        return withUnsafeTemporaryAllocation(of: Float.self, capacity: 4 * 32) { acc in
            let acc = acc.baseAddress!
            acc.initialize(repeating: 0, count: 4 * 32)
            @inline(__always) func addRow(_ i: Int) { let r = base + 32 * i; for e in 0..<32 { acc[e] += r[e] } }
            @inline(__always) func fold(_ j: Int) {
                let lower = acc + 32 * (j - 1), upper = acc + 32 * j
                for e in 0..<32 { upper[e] += lower[e]; lower[e] = 0 }
            }
            var i = 0
            while i + levelStep <= rows {
                for _ in 0..<levelStep { addRow(i); i += 1 }
                // Fold level j−1 into level j; stop at the first j whose bits of i are not all zero (as torch).
                fold(1)
                if i & (levelMask << levelPower) != 0 { continue }
                fold(2)
                if i & (levelMask << (2 * levelPower)) != 0 { continue }
                fold(3)
            }
            while i < rows { addRow(i); i += 1 }
            for j in 1..<levels { for e in 0..<32 { acc[e] += acc[32 * j + e] } }
            // rowSum: leftover vectors go to accumulator 0 of their lane, then accumulators 1…3 are added.
            for v in (rows * ilp)..<vectors { for l in 0..<width { acc[l] += base[v * width + l] } }
            for k in 1..<ilp { for l in 0..<width { acc[l] += acc[k * width + l] } }
            var total: Float = 0
            for k in (vectors * width)..<n { total += base[k] }
            for lane in 0..<width { total += acc[lane] }
            return total
        }
    }

    /// torch's order written out lane by lane (the plain version `vectorSum` is tested against).
    static func referenceSum(_ x: UnsafeBufferPointer<Float>) -> Float {
        let n = x.count
        let width = n >= 8 ? 8 : 1
        let vectors = n / width
        var lanes = [Float](repeating: 0, count: width)
        // Σ over vectors, lane by lane (lanes are independent accumulators).
        for lane in 0..<width {
            lanes[lane] = rowSum(count: vectors) { x[$0 * width + lane] }
        }
        var total: Float = 0
        for k in (vectors * width)..<n { total += x[k] }
        for lane in 0..<width { total += lanes[lane] }
        return total
    }

    /// row_sum with 4-way ILP over `count` elements given by `load`.
    static func rowSum(count size: Int, _ load: (Int) -> Float) -> Float {
        let ilp = 4
        let rows = size / ilp
        var partial = multiRowSum(rows: rows, nrows: ilp) { i, k in load(i * ilp + k) }
        for i in (rows * ilp)..<size { partial[0] += load(i) }
        for k in 1..<ilp { partial[0] += partial[k] }
        return partial[0]
    }

    /// multi_row_sum: a 4-level cascade of float accumulators per row.
    static func multiRowSum(rows size: Int, nrows: Int, _ load: (Int, Int) -> Float) -> [Float] {
        let levels = 4
        let levelPower = max(4, ceilLog2(size) / levels)
        let levelStep = 1 << levelPower
        let levelMask = levelStep - 1
        var acc = [[Float]](repeating: [Float](repeating: 0, count: nrows), count: levels)
        var i = 0
        while i + levelStep <= size {
            for _ in 0..<levelStep {
                for k in 0..<nrows { acc[0][k] += load(i, k) }
                i += 1
            }
            for j in 1..<levels {
                for k in 0..<nrows { acc[j][k] += acc[j - 1][k]; acc[j - 1][k] = 0 }
                if i & (levelMask << (j * levelPower)) != 0 { break }
            }
        }
        while i < size {
            for k in 0..<nrows { acc[0][k] += load(i, k) }
            i += 1
        }
        for j in 1..<levels { for k in 0..<nrows { acc[0][k] += acc[j][k] } }
        return acc[0]
    }

    static func ceilLog2(_ x: Int) -> Int {
        x <= 1 ? 0 : (Int.bitWidth - (x - 1).leadingZeroBitCount)
    }
}
