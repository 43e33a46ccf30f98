// Sorting one channel's Δ: the solver and the sketch need each channel's Δ in descending order.
// Floats ≥ 0 order as their bit patterns, so the keys are ~bits (ascending keys = descending Δ).
//
//   pass 1, 2   LSD radix on the key's two high bytes (sign, exponent, 7 mantissa bits), a byte
//               skipped when every key shares it (Δ of one channel usually spans few octaves)
//   pass 3      each run of keys with equal high 16 bits (values within 2^-7 of each other) is
//               finished by insertion sort, or by the standard sort when the run is long
// The plain reference is `sort(by: >)` on the floats (tests: SolverTests).

public enum KeySort {
    /// Runs of equal high halves up to this length are insertion-sorted.
    static let insertionRun = 32

    /// Ascending sort of `n` keys in place; `scratch` holds n keys.
    public static func sortAscending(_ keys: UnsafeMutablePointer<UInt32>, count n: Int, scratch: UnsafeMutablePointer<UInt32>) {
        guard n > 1 else { return }
        withUnsafeTemporaryAllocation(of: Int.self, capacity: 512) { counts in
            counts.initialize(repeating: 0)
            for i in 0..<n { let k = keys[i]; counts[Int((k >> 16) & 0xff)] += 1; counts[256 + Int(k >> 24)] += 1 }
            var source = keys, target = scratch
            for pass in 0..<2 {
                let shift = UInt32(16 + 8 * pass), base = 256 * pass
                if counts[base + Int((keys[0] >> shift) & 0xff)] == n { continue }   // one digit: order unchanged
                var total = 0
                for i in 0..<256 { let c = counts[base + i]; counts[base + i] = total; total += c }
                for i in 0..<n {
                    let k = source[i], b = base + Int((k >> shift) & 0xff)
                    target[counts[b]] = k; counts[b] += 1
                }
                swap(&source, &target)
            }
            if source != keys { keys.update(from: source, count: n) }
        }
        // Runs of equal high halves, in place.
        var i = 0
        while i < n {
            let high = keys[i] >> 16
            var j = i + 1
            while j < n && keys[j] >> 16 == high { j += 1 }
            if j - i > insertionRun {
                var run = UnsafeMutableBufferPointer(start: keys + i, count: j - i)
                run.sort()
            } else if j - i > 1 {
                for a in (i + 1)..<j {
                    let k = keys[a]
                    var b = a
                    while b > i && keys[b - 1] > k { keys[b] = keys[b - 1]; b -= 1 }
                    keys[b] = k
                }
            }
            i = j
        }
    }
}
