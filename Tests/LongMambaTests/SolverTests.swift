import Foundation
import Testing
@testable import LongMamba
import LongMambaKernels

/// Deterministic generator for reproducible random cases (SplitMix64).
struct SolverRNG {
    var generator: SplitMix64
    init(_ seed: UInt64) { generator = SplitMix64(seed: seed) }
    mutating func next() -> UInt64 { generator.next() }
    mutating func uniform() -> Double { Double(next() >> 11) / Double(1 << 53) }
    mutating func int(_ range: ClosedRange<Int>) -> Int { range.lowerBound + Int(next() % UInt64(range.count)) }
    mutating func normal() -> Double { sqrt(-2 * log(max(uniform(), 1e-300))) * cos(2 * .pi * uniform()) }
    /// Δ-like values: softplus(σ·z + μ).
    mutating func delta(_ n: Int, mu: Double = -3, sigma: Double = 1.5) -> [Float] {
        (0..<n).map { _ in Float(log1p(exp(sigma * normal() + mu))) }
    }
}

func solverFixturePath(_ name: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/solver/\(name)").path
}

@Suite struct SolverGoldenTests {
    struct Case { let name: String; let samples: Int; let layers: Int; let ps: [Double] }
    static let cases = [Case(name: "mamba2", samples: 3, layers: 2, ps: [0.05, 0.2]), Case(name: "mamba1", samples: 2, layers: 2, ps: [0.2, 0.5])]

    func relClose(_ a: Float, _ b: Float, _ tol: Float) -> Bool { abs(a - b) <= tol * max(abs(a), abs(b), 1e-30) }

    /// With torch's budget D, τ and α match the torch port bit for bit; D and a match to float32 rounding.
    @Test(arguments: cases)
    func matchesTorchPortBitForBitGivenTheSameBudget(_ c: Case) throws {
        let expected = try SafetensorsFile(path: solverFixturePath("\(c.name)-expected.safetensors"))
        let lengths = try expected.integers("lengths")
        let recordings = try (0..<c.samples).map { try RecordingFile(path: solverFixturePath("\(c.name)-sample\($0).safetensors")) }
        var compared = 0
        for p in c.ps {
            let tag = String(format: "p%02d", Int((p * 100).rounded()))
            for layer in 0..<c.layers {
                for s in 0..<c.samples {
                    let rec = try recordings[s].layer(layer)
                    let L = rec.length, C = rec.channels, N = rec.A.count / C
                    let prefix = "\(tag).sample\(s).layer.\(layer)"
                    let torchD = try expected.floats("\(prefix).D"), torchA = try expected.floats("\(prefix).a")
                    let torchTau = try expected.floats("\(prefix).tau"), torchAlpha = try expected.floats("\(prefix).alpha")
                    for ch in 0..<C {
                        let row = rec.sortedDelta[(ch * L)..<((ch + 1) * L)]
                        let ours = DeltaThresholdSolver.solveChannel(sortedDescending: row, tokenOrder: rec.tokenOrderDelta?[(ch * L)..<((ch + 1) * L)], A: rec.A[(ch * N)..<((ch + 1) * N)], lengths: lengths, clampFraction: p, trainingLength: L, method: .fast)
                        #expect(ours.decayBudget == torchD[ch], "D \(prefix) ch \(ch): \(ours.decayBudget) vs \(torchD[ch])")
                        #expect(relClose(ours.cumulativeDecay, torchA[ch], 1e-5), "a \(prefix) ch \(ch): \(ours.cumulativeDecay) vs \(torchA[ch])")
                        let curve = DeltaThresholdSolver.clamped(sortedDescending: row, clampCount: DeltaThresholdSolver.clampCount(length: L, clampFraction: p))
                        for (li, S) in lengths.enumerated() {
                            for method in SolverMethod.allCases {
                                let r = DeltaThresholdSolver.threshold(curve: curve, budget: torchD[ch], length: S, trainingLength: L, method: method)
                                #expect(r.deltaThreshold == torchTau[li * C + ch], "τ \(prefix) ch \(ch) S \(S) \(method)")
                                #expect(r.keptFraction == torchAlpha[li * C + ch], "α \(prefix) ch \(ch) S \(S) \(method)")
                                compared += 1
                            }
                        }
                    }
                }
            }
        }
        #expect(compared > 500)
    }

    /// End to end (our own D): per-sample and aggregated tables equal the port to float32 precision.
    @Test(arguments: cases)
    func aggregatedTablesMatchTorchPort(_ c: Case) throws {
        let expected = try SafetensorsFile(path: solverFixturePath("\(c.name)-expected.safetensors"))
        let lengths = try expected.integers("lengths")
        let recordings = try (0..<c.samples).map { try RecordingFile(path: solverFixturePath("\(c.name)-sample\($0).safetensors")) }
        for p in c.ps {
            let tag = String(format: "p%02d", Int((p * 100).rounded()))
            for aggregation in Aggregation.allCases {
                for layer in 0..<c.layers {
                    let samples = try recordings.map { try $0.layer(layer) }
                    let L = samples[0].length, C = samples[0].channels, N = samples[0].A.count / C
                    let prefix = "\(tag).\(aggregation.rawValue).layer.\(layer)"
                    let tau = try expected.floats("\(prefix).tau"), alpha = try expected.floats("\(prefix).alpha")
                    let D = try expected.floats("\(prefix).D"), a = try expected.floats("\(prefix).a")
                    for ch in 0..<C {
                        let per = samples.map { DeltaThresholdSolver.solveChannel(sortedDescending: $0.sortedDelta[(ch * L)..<((ch + 1) * L)], tokenOrder: $0.tokenOrderDelta?[(ch * L)..<((ch + 1) * L)], A: $0.A[(ch * N)..<((ch + 1) * N)], lengths: lengths, clampFraction: p, trainingLength: L, method: .fast) }
                        let agg = DeltaThresholdSolver.aggregate(per, aggregation)
                        #expect(relClose(agg.decayBudget, D[ch], 1e-6))
                        #expect(relClose(agg.cumulativeDecay, a[ch], 2e-5))
                        for li in lengths.indices {
                            #expect(relClose(agg.deltaThreshold[li], tau[li * C + ch], 1e-6), "τ \(prefix) ch \(ch) S \(lengths[li]): \(agg.deltaThreshold[li]) vs \(tau[li * C + ch])")
                            #expect(relClose(agg.keptFraction[li], alpha[li * C + ch], 1e-6), "α \(prefix) ch \(ch) S \(lengths[li])")
                        }
                    }
                }
            }
        }
    }
}

@Suite struct SolverFastNaiveTests {
    func check(_ curve: [Float], _ D: Float, _ S: Int, _ note: String) {
        let naive = DeltaThresholdSolver.naiveCrossing(curve: curve, budget: D, length: S)
        let fast = DeltaThresholdSolver.fastCrossing(curve: curve, budget: D, length: S)
        #expect(naive == fast, "\(note): L \(curve.count) S \(S) naive \(String(describing: naive)) fast \(String(describing: fast))")
    }

    func clampedCase(_ raw: [Float], p: Double) -> ([Float], Float) {
        var x = raw; x.sort(by: >)
        let c = DeltaThresholdSolver.clamped(sortedDescending: x[...], clampCount: DeltaThresholdSolver.clampCount(length: x.count, clampFraction: p))
        return (c, DeltaThresholdSolver.decayBudget(c))
    }

    @Test func fastEqualsNaiveOnManyRandomCurves() {
        var rng = SolverRNG(42)
        var found = 0, crossingPositions = Set<Double>()
        for _ in 0..<300 {
            let L = rng.int(1...400)
            let (curve, D) = clampedCase(rng.delta(L, mu: rng.uniform() * 6 - 5, sigma: rng.uniform() * 3), p: [0.05, 0.1, 0.2, 0.5, 1][rng.int(0...4)])
            for S in [L + 1, L + 2, L + rng.int(1...50), L * 2 + 1, rng.int(L + 1...L * 40 + 2)] {
                check(curve, D, S, "random")
                if let i = DeltaThresholdSolver.naiveCrossing(curve: curve, budget: D, length: S) {
                    found += 1; crossingPositions.insert((Double(i) / Double(S) * 50).rounded())
                }
            }
        }
        // The random curves cross the budget at positions spread over the stretched curve, so the
        // comparison above is not between two trivially equal answers (the never-exceeds case,
        // k* = 1, has its own named test).
        #expect(found > 1000)
        #expect(crossingPositions.count >= 20, "crossings only at \(crossingPositions.sorted())")
    }

    @Test func fastEqualsNaiveWithTiesAllEqualZerosAndTinyCurves() {
        var rng = SolverRNG(7)
        for L in [1, 2, 3, 5, 64, 257] {
            let allEqual = [Float](repeating: 0.125, count: L)
            let zeros = [Float](repeating: 0, count: L)
            let ties = (0..<L).map { _ in Float(rng.int(0...4)) / 4 }
            let halfZero = (0..<L).map { $0 < L / 2 ? Float(0) : Float(rng.uniform()) }
            for raw in [allEqual, zeros, ties, halfZero] {
                for p in [0.05, 0.3, 1.0] {
                    let (curve, D) = clampedCase(raw, p: p)
                    for S in [L + 1, L + 2, 2 * L, 10 * L + 3, 1000] where S > L { check(curve, D, S, "edge") }
                }
            }
        }
    }

    @Test func fastEqualsNaiveAtHugeLengths() {
        var rng = SolverRNG(99)
        for _ in 0..<3 {
            let (curve, D) = clampedCase(rng.delta(2048), p: 0.2)
            for S in [256_000, 1_000_000] { check(curve, D, S, "huge") }
        }
    }

    /// The exact fallback is rare: on realistic curves the closed form settles almost every length.
    @Test func closedFormSettlesMostLengthsWithoutTheFallback() {
        var rng = SolverRNG(5)
        var fallbacks = 0, total = 0
        for _ in 0..<20 {
            let (curve, D) = clampedCase(rng.delta(2048), p: 0.2)
            curve.withUnsafeBufferPointer { x in
                for S in stride(from: 3000, through: 256_000, by: 1000) {
                    if DeltaThresholdSolver.fastCrossing(x: x, budget: D, length: S).proof != .closedForm { fallbacks += 1 }
                    total += 1
                }
            }
        }
        #expect(Double(fallbacks) < 0.05 * Double(total), "\(fallbacks) of \(total) lengths needed the exact scan")
    }

    /// Authors' argmax quirk: if the running sum never exceeds D, argmax of all-false is 0, so k* = 1
    /// and τ is the second stretched value.
    @Test func neverExceedingTheBudgetGivesSecondStretchedValue() {
        let curve: [Float] = [0.5, 0.4, 0.3, 0.2]
        // D far above any reachable sum: no crossing.
        for method in SolverMethod.allCases {
            let r = DeltaThresholdSolver.threshold(curve: curve, budget: 1e6, length: 9, trainingLength: 4, method: method)
            #expect(r.deltaThreshold == StretchedCurve(values: curve, length: 9).value(at: 1))
            #expect(r.keptFraction == Float(1) / 9)
        }
        #expect(DeltaThresholdSolver.fastCrossing(curve: curve, budget: 1e6, length: 9) == nil)
    }

    /// k* = S would index past the stretched curve; τ then reads y[S-1].
    @Test func thresholdIndexIsClampedAtTheLastStretchedPoint() {
        // Crossing at the last index j = S-1 (only the full sum exceeds D): k* = S.
        let curve: [Float] = [1, 1, 1]
        let S = 4
        let y = StretchedCurve(values: curve, length: S).materialised()
        let D = Float(y.dropLast().reduce(0, +))  // = 3: only cum[3] = 4 > 3
        for method in SolverMethod.allCases {
            let r = DeltaThresholdSolver.threshold(curve: curve, budget: D, length: S, trainingLength: 3, method: method)
            #expect(r.keptFraction == 1)
            #expect(r.deltaThreshold == y[S - 1])
        }
    }

    @Test func lengthsUpToTrainingLengthAreNotFiltered() {
        let curve: [Float] = [0.5, 0.4, 0.3, 0.2]
        for S in [1, 3, 4, 7] {
            let r = DeltaThresholdSolver.threshold(curve: curve, budget: 1.4, length: S, trainingLength: 7, method: .fast)
            #expect(r.deltaThreshold == 0 && r.keptFraction == 1)
        }
        #expect(DeltaThresholdSolver.threshold(curve: curve, budget: 1.4, length: 8, trainingLength: 7, method: .fast).deltaThreshold > 0)
    }

    /// Far past L the budget D is spent inside the stretched clamp plateau (the k largest Δ, all equal
    /// to the clamp value c), so τ levels off at exactly c and the kept count is the first i with
    /// c·i > D: k* = ⌊D / c⌋ + 1.
    @Test func thresholdsLevelOffAtTheClampValueAtLongLengths() {
        var rng = SolverRNG(11)
        let L = 500
        let (curve, D) = clampedCase(rng.delta(L), p: 0.1)
        let c = curve[0], k = DeltaThresholdSolver.clampCount(length: L, clampFraction: 0.1)
        // The plateau covers about k·S/L stretched points; past S₀ it holds more than the D/c needed.
        let S0 = Int((Double(D) / Double(c) + 2) * Double(L) / Double(k - 1)) + 1
        for S in [S0, S0 * 2, S0 * 10, 1_000_000] {
            let r = DeltaThresholdSolver.threshold(curve: curve, budget: D, length: S, trainingLength: L, method: .fast)
            #expect(r.deltaThreshold == c, "S \(S): τ \(r.deltaThreshold), clamp value \(c)")
            let kept = (Double(r.keptFraction) * Double(S)).rounded()
            #expect(abs(kept - (Double(D / c).rounded(.down) + 1)) <= 1, "S \(S): kept \(kept), D/c \(D / c)")
        }
        // Below the plateau the threshold is smaller than the clamp value.
        let short = DeltaThresholdSolver.threshold(curve: curve, budget: D, length: L + L / 10, trainingLength: L, method: .fast)
        #expect(short.deltaThreshold < c)
    }

    @Test func torchOrderBudgetIsWithinFloatRoundingOfTheDoubleSum() {
        var rng = SolverRNG(21)
        for n in [1, 5, 8, 100, 2048, 100_000] {
            let x = rng.delta(n)
            let cascade = DeltaThresholdSolver.decayBudget(x), plain = DeltaThresholdSolver.decayBudgetInDouble(x)
            #expect(abs(cascade - plain) <= 1e-6 * plain, "n \(n): \(cascade) vs \(plain)")
        }
    }

    @Test func vectorisedTorchSumIsBitIdenticalToTheLaneByLaneOrder() {
        var rng = SolverRNG(31)
        for n in [32, 33, 39, 40, 63, 64, 100, 511, 512, 513, 2048, 4095, 4096, 65_537, 300_001] {
            let x = rng.delta(n, mu: rng.uniform() * 8 - 6, sigma: 3)
            x.withUnsafeBufferPointer { x in
                let fast = TorchSum.vectorSum(x), reference = TorchSum.referenceSum(x)
                #expect(fast.bitPattern == reference.bitPattern, "n \(n): \(fast) vs \(reference)")
            }
        }
    }

    @Test func clampCountFollowsFloorWithMinimumOne() {
        #expect(DeltaThresholdSolver.clampCount(length: 2048, clampFraction: 0.2) == 409)
        #expect(DeltaThresholdSolver.clampCount(length: 2000, clampFraction: 0.15) == 300)
        #expect(DeltaThresholdSolver.clampCount(length: 10, clampFraction: 0.05) == 1)
        #expect(DeltaThresholdSolver.clampCount(length: 100, clampFraction: 1) == 100)
    }

    @Test func radixSortAgreesWithStandardSort() {
        var rng = SolverRNG(3)
        var v = rng.delta(5000) + [0, -0.0, 1e-40, 3.5, 3.5]
        var expected = v; expected.sort(by: >)
        DeltaSort.sortDescending(&v)
        #expect(v == expected)
        #expect(v.last?.sign == .plus && v[v.count - 2].sign == .plus)  // -0.0 is stored as +0.0
        var short: [Float] = [-0.0, 0.5, 0]
        DeltaSort.sortDescending(&short)
        #expect(short == [0.5, 0, 0] && short.allSatisfy { $0.sign == .plus })
    }

    /// KeySort sorts only the bits in which keys differ, in 1, 2 or 3 passes of equal width: keys
    /// that differ in 1 … 32 low bits (above them shared, set or clear), short and long rows.
    @Test func keySortAgreesWithStandardSortForEveryWidthOfDifferingBits() {
        var state: UInt64 = 12345
        func next() -> UInt32 { state = state &* 6364136223846793005 &+ 1442695040888963407; return UInt32(truncatingIfNeeded: state >> 29) }
        for bits in [1, 2, 8, 11, 12, 21, 22, 23, 27, 31, 32] {
            let varying: UInt32 = bits == 32 ? .max : (1 << UInt32(bits)) - 1
            for shared: UInt32 in [0, 0xA5A5_A5A5 & ~varying] {
                for n in [2, 3, 100, 2048] {
                    var keys = (0..<n).map { _ in shared | (next() & varying) }
                    keys[n - 1] = shared | varying          // the top differing bit is always present
                    let expected = keys.sorted()
                    var scratch = [UInt32](repeating: 0, count: n)
                    keys.withUnsafeMutableBufferPointer { k in scratch.withUnsafeMutableBufferPointer { s in
                        KeySort.sortAscending(k.baseAddress!, count: n, scratch: s.baseAddress!)
                    }}
                    #expect(keys == expected, "bits \(bits), shared \(shared), n \(n)")
                }
            }
        }
    }

    @Test func radixSortAgreesWithStandardSortOnHostileDistributions() throws {
        var rng = SolverRNG(4)
        let L = 2048
        var rows: [[Float]] = [
            [Float](repeating: 0.0125, count: L),                                          // one value
            (0..<L).map { 0.01 + Float($0 % 700) * 1e-9 },                                 // one long run of equal high halves
            (0..<L).map { Float(bitPattern: 0x3c23_0000 | UInt32(($0 * 7919) % 65536)) },  // every key in one 2^-7 band
            (0..<L).map { _ in Float(exp(rng.uniform() * 160 - 80)) },                     // many octaves
            (0..<L).map { $0 % 2 == 0 ? 0 : Float.leastNonzeroMagnitude * Float($0) },      // zeros and subnormals
        ]
        rows.append(rng.delta(L, mu: -4, sigma: 0.01))                                      // narrow band
        for (r, row) in rows.enumerated() {
            var v = row
            DeltaSort.sortDescending(&v)
            #expect(v == row.sorted(by: >), "row \(r)")
            // The layer sort (groups of channels, transposed) gives the same rows.
            let C = 3
            var tokenMajor = [Float](repeating: 0, count: L * C)
            for t in 0..<L { for c in 0..<C { tokenMajor[t * C + c] = row[(t * (c + 1)) % L] } }
            let layer = try SortedDeltaLayer(layer: 0, tokenMajorDelta: tokenMajor, length: L, channels: C, A: [-1, -1, -1], aShape: [C], parallel: false)
            for c in 0..<C {
                let expected: [Float] = (0..<L).map { (t: Int) -> Float in tokenMajor[t * C + c] }.sorted(by: >)
                #expect(Array(layer.sortedDelta[(c * L)..<((c + 1) * L)]) == expected, "row \(r) channel \(c)")
            }
        }
    }

    @Test func layerSolveMatchesPerChannelSolveForBothMethods() throws {
        var rng = SolverRNG(8)
        let L = 64, C = 5
        let samples = try (0..<3).map { _ in
            try SortedDeltaLayer(layer: 0, tokenMajorDelta: rng.delta(L * C), length: L, channels: C, A: (0..<C).map { Float(-$0 - 1) }, aShape: [C])
        }
        let params = SolverParameters(clampFraction: 0.2, aggregation: .mean, interval: 50, maxLength: 1000, trainingLength: L)
        let fast = try DeltaThresholdSolver.solveLayer(samples: samples, parameters: params, method: .fast)
        let naive = try DeltaThresholdSolver.solveLayer(samples: samples, parameters: params, method: .naive)
        #expect(fast == naive)
        #expect(fast.lengths.count == 20)
        #expect(fast.deltaThreshold[0] == 0 && fast.keptFraction[0] == 1)  // S = 50 ≤ L
    }

    @Test func badInputIsRefusedWithPosition() throws {
        func badDelta(_ position: String) -> SolverError {
            .invalidDelta("recording: \(position); Δ = softplus(·) must be finite and ≥ 0 (check the runner's dt path)")
        }
        #expect(throws: badDelta("layer 3: Δ[token 0, channel 1] = nan")) {
            try SortedDeltaLayer(layer: 3, tokenMajorDelta: [0.1, .nan, 0.2, 0.3], length: 2, channels: 2, A: [-1, -1], aShape: [2])
        }
        do {
            _ = try SortedDeltaLayer(layer: 3, tokenMajorDelta: [0.1, 0.2, -0.5, 0.3], length: 2, channels: 2, A: [-1, -1], aShape: [2])
            Issue.record("negative Δ accepted")
        } catch {
            #expect("\(error)".contains("token 1, channel 0"))
        }
        #expect(throws: badDelta("layer 0: Δ[token 1, channel 0] = inf")) {
            try SortedDeltaLayer(layer: 0, tokenMajorDelta: [0.1, .infinity], length: 2, channels: 1, A: [-1], aShape: [1])
        }
        let ok = try SortedDeltaLayer(layer: 0, tokenMajorDelta: [0.1, 0.2, 0.3, 0.4], length: 4, channels: 1, A: [-1], aShape: [1])
        let other = try SortedDeltaLayer(layer: 0, tokenMajorDelta: [0.1, 0.2, 0.3, 0.4], length: 2, channels: 2, A: [-1, -1], aShape: [2])
        #expect(throws: SolverError.mismatchedSamples("layer 0: sample 1 has 2 channels, sample 0 has 1")) {
            try DeltaThresholdSolver.solveLayer(samples: [ok, other], parameters: SolverParameters(clampFraction: 0.5, aggregation: .max, interval: 4, maxLength: 8, trainingLength: 4))
        }
        for p in [0.0, -0.1, 1.5, .nan] {
            #expect(throws: SolverError.invalidParameter("clamp fraction p = \(p) is outside (0, 1]; the paper uses 0.05 (Mamba-2) or 0.2 (Mamba-1)")) {
                try DeltaThresholdSolver.solveLayer(samples: [ok], parameters: SolverParameters(clampFraction: p, aggregation: .max, interval: 4, maxLength: 8, trainingLength: 4))
            }
        }
        // L = 4 with p = 0.1: floor(0.4) = 0 < 1 → too short for the clamp.
        do {
            _ = try DeltaThresholdSolver.solveLayer(samples: [ok], parameters: SolverParameters(clampFraction: 0.1, aggregation: .max, interval: 4, maxLength: 8, trainingLength: 4))
            Issue.record("too-short L accepted")
        } catch {
            #expect("\(error)".contains("too short"))
        }
    }
}
