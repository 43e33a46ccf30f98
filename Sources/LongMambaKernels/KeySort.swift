// Sorting one channel's Δ: the solver and the sketch need each channel's Δ in descending order.
// Floats ≥ 0 order as their bit patterns, so the keys are ~bits (ascending keys = descending Δ).
// LSD radix, 8 bits per pass, all four histograms in one read, a pass skipped when every key
// shares its digit (Δ of one channel spans few octaves). Measured on mamba-130m-shaped Δ
// (L = 2048): 7–10 ns per key; a radix on the high halves with the runs of equal halves
// insertion-sorted took 12 ns. The plain reference is `sort(by: >)` on the floats (SolverTests).

public enum KeySort {
    /// Ascending sort of `n` keys in place; `scratch` holds n keys.
    public static func sortAscending(_ keys: UnsafeMutablePointer<UInt32>, count n: Int, scratch: UnsafeMutablePointer<UInt32>) {
        guard n > 1 else { return }
        do {
            // On the heap: a stack allocation here crashed the -Ounchecked build on test threads.
            let counts = UnsafeMutablePointer<Int32>.allocate(capacity: 4 * 256)
            defer { counts.deallocate() }
            counts.initialize(repeating: 0, count: 4 * 256)
            for i in 0..<n {
                let k = keys[i]
                counts[Int(k & 0xff)] &+= 1; counts[256 + Int((k >> 8) & 0xff)] &+= 1
                counts[512 + Int((k >> 16) & 0xff)] &+= 1; counts[768 + Int(k >> 24)] &+= 1
            }
            var source = keys, target = scratch
            for pass in 0..<4 {
                let shift = UInt32(8 * pass), base = 256 * pass
                if counts[base + Int((keys[0] >> shift) & 0xff)] == n { continue }   // one digit: order unchanged
                var total: Int32 = 0
                for i in 0..<256 { let c = counts[base + i]; counts[base + i] = total; total &+= c }
                for i in 0..<n {
                    let k = source[i], b = base + Int((k >> shift) & 0xff)
                    target[Int(counts[b])] = k; counts[b] &+= 1
                }
                swap(&source, &target)
            }
            if source != keys { keys.update(from: source, count: n) }
        }
    }
}
