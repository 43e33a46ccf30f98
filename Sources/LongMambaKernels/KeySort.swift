// Sorting one channel's Δ: the solver and the sketch need each channel's Δ in descending order.
// Floats ≥ 0 order as their bit patterns, so the keys are ~bits (ascending keys = descending Δ).
// LSD radix over only the bits in which the keys differ (Δ of one channel spans few octaves, so
// the sign and the top of the exponent are usually shared): b such bits take ⌈b/11⌉ passes of
// equal width (27 bits: 3 passes of 9 bits instead of 4 of 8), all histograms in one read, a pass
// skipped when every key shares its digit. The plain reference is `sort(by: >)` on the floats
// (SolverTests). Measured on mamba-130m-shaped Δ (L = 2048): 7–10 ns per key with 4 fixed 8-bit
// passes; a radix on the high halves with the runs of equal halves insertion-sorted took 12 ns.

public enum KeySort {
    /// Ascending sort of `n` keys in place; `scratch` holds n keys.
    public static func sortAscending(_ keys: UnsafeMutablePointer<UInt32>, count n: Int, scratch: UnsafeMutablePointer<UInt32>) {
        guard n > 1 else { return }
        // The bits in which some key differs from the first: the others cannot change the order.
        let first = keys[0]
        var differ: UInt32 = 0
        for i in 1..<n { differ |= keys[i] ^ first }
        guard differ != 0 else { return }
        let bits = UInt32.bitWidth - differ.leadingZeroBitCount
        let passes = (bits + 10) / 11, width = (bits + passes - 1) / passes   // passes ≤ 3, width ≤ 11
        let buckets = 1 << width, mask = UInt32(buckets - 1)
        // On the heap: a stack allocation here crashed the -Ounchecked build on test threads.
        let counts = UnsafeMutablePointer<Int32>.allocate(capacity: passes * buckets)   // [passes, buckets]
        defer { counts.deallocate() }
        counts.initialize(repeating: 0, count: passes * buckets)
        let w = UInt32(width)
        switch passes {
        case 1:
            for i in 0..<n { counts[Int(keys[i] & mask)] &+= 1 }
        case 2:
            for i in 0..<n {
                let k = keys[i]
                counts[Int(k & mask)] &+= 1; counts[buckets + Int((k >> w) & mask)] &+= 1
            }
        default:
            for i in 0..<n {
                let k = keys[i]
                counts[Int(k & mask)] &+= 1; counts[buckets + Int((k >> w) & mask)] &+= 1
                counts[2 * buckets + Int((k >> (2 * w)) & mask)] &+= 1
            }
        }
        var source = keys, target = scratch
        for pass in 0..<passes {
            let shift = w * UInt32(pass), base = buckets * pass
            if counts[base + Int((first >> shift) & mask)] == n { continue }   // one digit: order unchanged
            var total: Int32 = 0
            for i in 0..<buckets { let c = counts[base + i]; counts[base + i] = total; total &+= c }
            for i in 0..<n {
                let k = source[i], b = base + Int((k >> shift) & mask)
                target[Int(counts[b])] = k; counts[b] &+= 1
            }
            swap(&source, &target)
        }
        if source != keys { keys.update(from: source, count: n) }
    }
}
