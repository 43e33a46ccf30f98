// Explicitly specified generators so a seed gives the same sample on every machine and Swift
// version (the system generator is neither seedable nor specified).

/// SplitMix64 (Steele, Lea, Flood 2014): used to expand a seed and to derive per-document values.
public struct SplitMix64: Sendable {
    public private(set) var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// xoshiro256** 1.0 (Blackman, Vigna 2018), seeded with four SplitMix64 outputs as its authors advise.
public struct Xoshiro256StarStar: Sendable {
    private var s0, s1, s2, s3: UInt64

    public init(seed: UInt64) {
        var sm = SplitMix64(seed: seed)
        s0 = sm.next(); s1 = sm.next(); s2 = sm.next(); s3 = sm.next()
    }

    @inline(__always)
    public mutating func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3
        s2 ^= t
        s3 = s3 << 45 | s3 >> 19
        return result
    }
}

/// A value in 0..<bound from 64 random bits (multiply-high; bias below 2^-32 for bounds < 2^32).
@inline(__always)
func boundedRandom(_ bits: UInt64, _ bound: Int) -> Int {
    Int(bits.multipliedFullWidth(by: UInt64(bound)).high)
}
