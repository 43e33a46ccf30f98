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
