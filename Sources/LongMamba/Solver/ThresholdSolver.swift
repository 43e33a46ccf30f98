// LongMamba calibration steps 3-4 (docs/method.md §3): per sample, layer and channel
//   clamp:      Δ̃_t = min(Δ_t, k-th largest Δ),  k = max(1, floor(L·p))
//   budget:     D = Σ_t Δ̃_t                          (torch.sum order, see TorchSum)
//   decay:      a = mean_n exp(A_n · D)                (Mamba-2: N = 1)
//   threshold:  y = stretch(sort_desc(Δ̃), L → S);  cum_j = Σ_{m≤j} y_m (double, stored as f32)
//               i = argmax(cum > D) (0 if never);  k* = i + 1
//               τ(S) = y[min(k*, S-1)],  α(S) = min(k*/S, 1);  S ≤ L: τ = 0, α = 1
// then aggregate the K samples element-wise (max or mean).
import Foundation
import LongMambaKernels

/// How the K samples of a channel are combined (authors' "max" and "avg").
public enum Aggregation: String, Sendable, Codable, CaseIterable {
    case max, mean
}

/// Which threshold search to run. Both give identical results (tested); `naive` is the plain reference.
public enum SolverMethod: String, Sendable, Codable, CaseIterable {
    /// Materialise the stretched curve and its running sum for every S (what the authors' code does).
    case naive
    /// One pass per channel, then a closed form per length (the running sum as a midpoint-rule
    /// integral of the curve, with a proven error bound), and exact fallbacks where the bound is
    /// too wide to decide (CurveIntegral.swift).
    case fast
}

/// The parameters that define a table (everything except the recordings).
public struct SolverParameters: Sendable, Codable, Equatable {
    /// p: Δ is clamped at its k-th largest value, k = max(1, floor(L·p)).
    public var clampFraction: Double
    public var aggregation: Aggregation
    /// Tabulate S = interval, 2·interval, … up to maxLength.
    public var interval: Int
    public var maxLength: Int
    /// L: lengths S ≤ L get τ = 0, α = 1 (no filtering). Defaults to the recorded length.
    public var trainingLength: Int

    public init(clampFraction: Double, aggregation: Aggregation, interval: Int = 1000, maxLength: Int = 256_000, trainingLength: Int) {
        self.clampFraction = clampFraction
        self.aggregation = aggregation
        self.interval = interval
        self.maxLength = maxLength
        self.trainingLength = trainingLength
    }

    /// Tabulated lengths S: interval, 2·interval, …, ≤ maxLength.
    public var lengths: [Int] { interval > 0 ? Array(stride(from: interval, through: maxLength, by: interval)) : [] }

    public func validate() throws {
        guard clampFraction > 0, clampFraction <= 1, clampFraction.isFinite else {
            throw SolverError.invalidParameter("clamp fraction p = \(clampFraction) is outside (0, 1]; the paper uses 0.05 (Mamba-2) or 0.2 (Mamba-1)")
        }
        guard interval > 0 else { throw SolverError.invalidParameter("interval \(interval) must be a positive number of tokens (default 1000)") }
        guard maxLength >= interval else {
            throw SolverError.invalidParameter("max length \(maxLength) is smaller than the interval \(interval): no length to tabulate")
        }
        guard maxLength <= 1 << 22 else {
            throw SolverError.invalidParameter("max length \(maxLength) exceeds 4,194,304 tokens (float32 indices of the stretched curve stop being exact)")
        }
        guard trainingLength > 0 else { throw SolverError.invalidParameter("training length \(trainingLength) must be positive") }
    }
}

/// Why solving was refused.
public enum SolverError: Error, CustomStringConvertible, Sendable, Equatable {
    case invalidParameter(String)
    case invalidDelta(String)
    case mismatchedSamples(String)

    public var description: String {
        switch self {
        case .invalidParameter(let s): return "invalid solver parameter: \(s)"
        case .invalidDelta(let s): return "invalid Δ recording: \(s)"
        case .mismatchedSamples(let s): return "samples do not match: \(s)"
        }
    }
}

/// Sorting of non-negative floats (their IEEE bit patterns order like the values).
public enum DeltaSort {
    /// Descending sort of finite non-negative values (KeySort on ~bits; `+ 0` turns -0.0 into
    /// +0.0, whose sign bit would sort it first); plain `sort(by: >)` gives the same.
    public static func sortDescending(_ v: inout [Float]) {
        let n = v.count
        var keys = v.map { ~($0 + 0).bitPattern }
        var scratch = [UInt32](repeating: 0, count: n)
        keys.withUnsafeMutableBufferPointer { k in scratch.withUnsafeMutableBufferPointer { s in
            if n > 1 { KeySort.sortAscending(k.baseAddress!, count: n, scratch: s.baseAddress!) }
        }}
        for i in 0..<n { v[i] = Float(bitPattern: ~keys[i]) }
    }
}

/// Result of one channel and sample (before aggregation).
public struct ChannelThresholds: Sendable, Equatable {
    /// τ(S) per tabulated length.
    public var deltaThreshold: [Float]
    /// α(S) per tabulated length.
    public var keptFraction: [Float]
    /// D = Σ clamped Δ.
    public var decayBudget: Float
    /// a = mean_n exp(A_n · D).
    public var cumulativeDecay: Float
}

/// The solver of docs/method.md §3 step 3 (per channel) and step 4 (aggregation over samples).
public enum DeltaThresholdSolver {
    /// k = max(1, floor(L·p)), as `max(1, int(L * p))` in the authors' code.
    public static func clampCount(length L: Int, clampFraction p: Double) -> Int {
        max(1, Int((Double(L) * p).rounded(.down)))
    }

    /// Clamps a descending curve at its k-th largest value: the top k become x[k-1].
    public static func clamped(sortedDescending x: ArraySlice<Float>, clampCount k: Int) -> [Float] {
        var out = Array(x)
        let c = out[k - 1]
        for i in 0..<k { out[i] = c }
        return out
    }

    /// D = Σ_t Δ̃_t in torch.sum's order (bit-identical to the authors' code; see TorchSum).
    public static func decayBudget(_ clamped: [Float]) -> Float {
        TorchSum.sum(clamped[...])
    }

    /// D accumulated in double and rounded once: the plain reference for `decayBudget`.
    public static func decayBudgetInDouble(_ clamped: [Float]) -> Float {
        var sum = 0.0
        for v in clamped { sum += Double(v) }
        return Float(sum)
    }

    /// a = mean_n exp(A_n · D) over the channel's N values of A (one for Mamba-2).
    public static func cumulativeDecay<Values: Collection<Float>>(budget D: Float, A: Values) -> Float {
        var sum = 0.0
        for a in A { sum += Foundation.exp(Double(a) * Double(D)) }
        return Float(sum / Double(A.count))
    }

    // MARK: threshold search

    /// Naive reference: materialise y (S points) and cum, exactly like the authors' torch code.
    /// Returns the first index i with Float(cum_i) > D, or nil if there is none.
    public static func naiveCrossing(curve x: [Float], budget D: Float, length S: Int) -> Int? {
        let y = StretchedCurve(values: x, length: S).materialised()
        // cum_j = Σ_{m≤j} y_m, accumulated in double like torch's CPU float cumsum, compared as f32.
        var cum = [Float](repeating: 0, count: S)
        var acc = 0.0
        for j in 0..<S { acc += Double(y[j]); cum[j] = Float(acc) }
        return cum.firstIndex(where: { $0 > D })
    }

    /// Same result as `naiveCrossing` without materialising, stopping at the first crossing.
    static func scanCrossing(x: UnsafeBufferPointer<Float>, budget D: Float, length S: Int) -> Int? {
        let scale = Float(x.count) / Float(S)
        var acc = 0.0
        for j in 0..<S {
            acc += Double(StretchedCurve.value(at: j, x: x, scale: scale))
            if Float(acc) > D { return j }
        }
        return nil
    }

    /// Fast search: `CurveIntegral`'s closed form, built for this one length (the solver builds it
    /// once per channel for all lengths). Equals `naiveCrossing` (tested).
    public static func fastCrossing(curve x: [Float], budget D: Float, length S: Int) -> Int? {
        x.withUnsafeBufferPointer { fastCrossing(x: $0, budget: D, length: S).index }
    }

    /// How `fastCrossing` settles this length: "closed form", "segment walk" or "exact scan" (for `bench-solver`).
    public static func crossingProof(curve x: [Float], budget D: Float, length S: Int) -> String {
        switch x.withUnsafeBufferPointer({ fastCrossing(x: $0, budget: D, length: S).proof }) {
        case .closedForm: return "closed form"
        case .segmentWalk: return "segment walk"
        case .exactScan: return "exact scan"
        }
    }

    /// The index and how it was proven (for tests and the benchmark).
    static func fastCrossing(x: UnsafeBufferPointer<Float>, budget D: Float, length S: Int) -> (index: Int?, proof: CrossingProof) {
        var scratch = [Double](repeating: 0, count: 2 * x.count)
        return scratch.withUnsafeMutableBufferPointer { CurveIntegral(x: x, scratch: $0).crossing(budget: D, length: S) }
    }

    /// Exact segment walk (the fallback of `fastCrossing`). Between knots i and i+1 the stretched curve is linear in j, so the running sum
    /// over a knot segment has a closed form (an arithmetic series). Walking segments gives the
    /// crossing segment in O(segments before it); a binary search inside the segment gives the index.
    /// The closed form is exact arithmetic while torch rounds every y_j to f32, so each decision
    /// carries a proven error bound E; when the exact sum could lie within E of the decision point,
    /// the index is settled by the exact scan instead. The result therefore equals `naiveCrossing`.
    /// Cost: O(knot segments before the crossing) per length.
    static func segmentWalkCrossing(x: UnsafeBufferPointer<Float>, budget D: Float, length S: Int) -> (index: Int?, usedFallback: Bool) {
        let L = x.count
        let s = Double(Float(L) / Float(S))
        // Float(cum) > D  ⇔  cum > mid (ties at mid excluded by the margin below).
        let mid = (Double(D) + Double(D.nextUp)) / 2
        let perSegment = 1 / s + 2  // stretched points per knot segment, plus neighbours
        let x0 = Double(x[0])

        /// Smallest j whose exact source position s·(j+0.5) − 0.5 is ≥ u, clipped to [0, S].
        @inline(__always) func firstIndex(atSource u: Double) -> Int {
            let m = ((u + 0.5) / s - 0.5).rounded(.up)
            return m <= 0 ? 0 : (m >= Double(S) ? S : Int(m))
        }
        /// Σ of the first t stretched points of region r starting at j = a (exact arithmetic).
        /// r = -1: points left of the first source position (y = x[0]); r = L-1: past the last (y = x[L-1]);
        /// else y_j = x[r] + (x[r+1] − x[r])·(s·(j+0.5) − 0.5 − r).
        @inline(__always) func partial(_ r: Int, _ a: Int, _ t: Int) -> Double {
            if t == 0 { return 0 }
            let n = Double(t)
            if r < 0 { return n * x0 }
            if r >= L - 1 { return n * Double(x[L - 1]) }
            let xi = Double(x[r]), d = Double(x[r + 1]) - xi
            // Σ_{j=a}^{a+t-1} (s·(j+0.5) − 0.5 − r) = s·(t·a + t(t−1)/2 + t/2) − t·(r + 0.5)
            let sumLambda = s * (n * Double(a) + n * (n - 1) / 2 + n / 2) - n * (Double(r) + 0.5)
            return n * xi + d * sumLambda
        }

        var prefix = 0.0
        var start = 0
        var r = -1
        while r < L && start < S {
            let end = r + 1 < L ? firstIndex(atSource: Double(r + 1)) : S
            let n = end - start
            if n <= 0 { r += 1; continue }
            let total = prefix + partial(r, start, n)
            // Error bound of the closed form against torch's rounded arithmetic:
            //  - src rounding: |Δsrc| ≤ 2^-23·src, src ≤ r+2, times the slope (≤ x0 − x[r+2]) over ≤ perSegment points per segment;
            //  - blend rounding: ≤ 3·2^-24 relative per point;
            //  - double accumulation: ≤ (S + L)·2^-52 relative.  Doubled for safety.
            let drop = x0 - Double(x[min(max(r + 2, 0), L - 1)])
            let bound = 2 * (0x1p-22 * Double(r + 3) * perSegment * drop + 0x1p-22 * total + Double(S + L) * 0x1p-50 * total)
            if total + bound < mid {  // surely no crossing in this region
                prefix = total; start = end; r += 1; continue
            }
            // Smallest t in 0...n whose closed-form sum may already be past mid.
            var lo = 0, hi = n
            while lo < hi {
                let m = (lo + hi) / 2
                if prefix + partial(r, start, m) + bound >= mid { hi = m } else { lo = m + 1 }
            }
            if lo >= 1 {
                let atCandidate = prefix + partial(r, start, lo)
                let beforeCandidate = prefix + partial(r, start, lo - 1)
                // Proven: cum(j−1) < mid (false, and so all before it) and cum(j) > mid (true).
                if atCandidate - bound > mid && beforeCandidate + bound < mid {
                    return (start + lo - 1, false)
                }
            }
            return (scanCrossing(x: x, budget: D, length: S), true)
        }
        return (nil, false)  // every running sum is provably ≤ D
    }

    /// τ(S) and α(S) of one channel (curve = sorted clamped Δ, descending).
    public static func threshold(curve x: [Float], budget D: Float, length S: Int, trainingLength: Int, method: SolverMethod) -> (deltaThreshold: Float, keptFraction: Float) {
        x.withUnsafeBufferPointer { threshold(x: $0, budget: D, length: S, trainingLength: trainingLength, method: method) }
    }

    static func threshold(x: UnsafeBufferPointer<Float>, budget D: Float, length S: Int, trainingLength: Int, method: SolverMethod) -> (deltaThreshold: Float, keptFraction: Float) {
        // S ≤ L: the running sum of the stretched curve cannot exceed D, so no filtering.
        if S <= trainingLength || S <= x.count { return (0, 1) }
        let crossing: Int?
        switch method {
        case .naive: crossing = naiveCrossing(curve: Array(x), budget: D, length: S)
        case .fast: crossing = fastCrossing(x: x, budget: D, length: S).index
        }
        return threshold(x: x, crossing: crossing, length: S)
    }

    /// τ(S) and α(S) from the crossing index (fast path: the curve's integral is built once).
    @inline(__always)
    static func threshold(integral: CurveIntegral, budget D: Float, length S: Int, trainingLength: Int) -> (deltaThreshold: Float, keptFraction: Float) {
        if S <= trainingLength || S <= integral.x.count { return (0, 1) }
        return threshold(x: integral.x, crossing: integral.crossing(budget: D, length: S).index, length: S)
    }

    @inline(__always)
    static func threshold(x: UnsafeBufferPointer<Float>, crossing: Int?, length S: Int) -> (deltaThreshold: Float, keptFraction: Float) {
        // argmax of an all-false vector is 0 in the authors' code, so "never exceeds D" gives k* = 1.
        let kStar = (crossing ?? 0) + 1
        // τ = y[k*], one past the count. k* = S would fall off the end (torch.gather fails): clamp to S−1.
        let tau = StretchedCurve.value(at: min(kStar, S - 1), x: x, scale: Float(x.count) / Float(S))
        // α = k*/S in f32 (int tensor / python float), capped at 1.
        let alpha = min(Float(kStar) / Float(S), 1)
        return (tau, alpha)
    }

    /// Steps 3 for one channel of one sample: clamp, budget, decay, thresholds at every length.
    /// `tokenOrder`, when given, is the same Δ in token order: D is then summed in that order, like torch.
    public static func solveChannel(sortedDescending: ArraySlice<Float>, tokenOrder: ArraySlice<Float>? = nil, A: ArraySlice<Float>, lengths: [Int], clampFraction p: Double, trainingLength: Int, method: SolverMethod) -> ChannelThresholds {
        var scratch = ChannelScratch(length: sortedDescending.count)
        var tau = [Float](repeating: 0, count: lengths.count)
        var alpha = [Float](repeating: 1, count: lengths.count)
        let (D, a) = sortedDescending.withUnsafeBufferPointer { sorted in
            A.withUnsafeBufferPointer { A in
                tau.withUnsafeMutableBufferPointer { tau in
                    alpha.withUnsafeMutableBufferPointer { alpha in
                        if let tokenOrder {
                            return tokenOrder.withUnsafeBufferPointer { scratch.solve(sorted: sorted, tokenOrder: $0, A: A, lengths: lengths, clampFraction: p, trainingLength: trainingLength, method: method, tau: tau, alpha: alpha) }
                        }
                        return scratch.solve(sorted: sorted, tokenOrder: nil, A: A, lengths: lengths, clampFraction: p, trainingLength: trainingLength, method: method, tau: tau, alpha: alpha)
                    }
                }
            }
        }
        return ChannelThresholds(deltaThreshold: tau, keptFraction: alpha, decayBudget: D, cumulativeDecay: a)
    }

    /// Checks that the K samples of a layer agree and are long enough for the clamp.
    public static func validate(samples: [SortedDeltaLayer], parameters: SolverParameters) throws {
        try parameters.validate()
        guard let first = samples.first else { throw SolverError.mismatchedSamples("no samples to solve") }
        for (s, sample) in samples.enumerated() {
            guard sample.channels == first.channels else {
                throw SolverError.mismatchedSamples("layer \(first.layer): sample \(s) has \(sample.channels) channels, sample 0 has \(first.channels)")
            }
            guard sample.length == first.length else {
                throw SolverError.mismatchedSamples("layer \(first.layer): sample \(s) has \(sample.length) tokens, sample 0 has \(first.length)")
            }
            guard sample.aShape == first.aShape else {
                throw SolverError.mismatchedSamples("layer \(first.layer): sample \(s) has A of shape \(sample.aShape), sample 0 has \(first.aShape)")
            }
        }
        let raw = Double(first.length) * parameters.clampFraction
        guard raw >= 1 else {
            throw SolverError.invalidParameter("L = \(first.length) tokens is too short for clamp fraction p = \(parameters.clampFraction): floor(L·p) = \(Int(raw)) < 1 (need L ≥ \(Int((1 / parameters.clampFraction).rounded(.up))) tokens)")
        }
    }

    /// Steps 3-4 for one layer: solve every channel of every sample, then aggregate.
    public static func solveLayer(samples: [SortedDeltaLayer], parameters: SolverParameters, method: SolverMethod = .fast) throws -> LayerTable {
        try validate(samples: samples, parameters: parameters)
        let first = samples[0]
        let C = first.channels, L = first.length
        let lengths = parameters.lengths
        let T = lengths.count
        let N = first.A.count / C
        var tau = [Float](repeating: 0, count: T * C)
        var alpha = [Float](repeating: 0, count: T * C)
        var budget = [Float](repeating: 0, count: C)
        var decay = [Float](repeating: 0, count: C)
        let K = samples.count
        let aggregation = parameters.aggregation
        let chunk = 16
        let chunks = (C + chunk - 1) / chunk
        tau.withUnsafeMutableBufferPointer { tauOut in
        alpha.withUnsafeMutableBufferPointer { alphaOut in
        budget.withUnsafeMutableBufferPointer { budgetOut in
        decay.withUnsafeMutableBufferPointer { decayOut in
            // Each chunk writes a disjoint set of channels.
            nonisolated(unsafe) let (tauP, alphaP, budgetP, decayP) = (tauOut, alphaOut, budgetOut, decayOut)
            DispatchQueue.concurrentPerform(iterations: chunks) { ch in
                var scratch = ChannelScratch(length: L)
                // One sample's τ, α, and the running aggregate over samples (double sums for the mean).
                var sampleTau = [Float](repeating: 0, count: T), sampleAlpha = [Float](repeating: 0, count: T)
                var aggTau = [Double](repeating: 0, count: T), aggAlpha = [Double](repeating: 0, count: T)
                for c in (ch * chunk)..<min(C, (ch + 1) * chunk) {
                    var aggD = 0.0, aggA = 0.0
                    for (k, sample) in samples.enumerated() {
                        let (D, a) = sample.sortedDelta.withUnsafeBufferPointer { sorted in
                            sample.A.withUnsafeBufferPointer { A in
                                sampleTau.withUnsafeMutableBufferPointer { tauS in
                                    sampleAlpha.withUnsafeMutableBufferPointer { alphaS in
                                        let row = UnsafeBufferPointer(rebasing: sorted[(c * L)..<((c + 1) * L)])
                                        let a = UnsafeBufferPointer(rebasing: A[(c * N)..<((c + 1) * N)])
                                        guard let token = sample.tokenOrderDelta else {
                                            return scratch.solve(sorted: row, tokenOrder: nil, A: a, lengths: lengths, clampFraction: parameters.clampFraction,
                                                                 trainingLength: parameters.trainingLength, method: method, tau: tauS, alpha: alphaS)
                                        }
                                        return token.withUnsafeBufferPointer { token in
                                            scratch.solve(sorted: row, tokenOrder: UnsafeBufferPointer(rebasing: token[(c * L)..<((c + 1) * L)]), A: a, lengths: lengths,
                                                          clampFraction: parameters.clampFraction, trainingLength: parameters.trainingLength, method: method, tau: tauS, alpha: alphaS)
                                        }
                                    }
                                }
                            }
                        }
                        // Step 4, streamed in sample order: the same values as `aggregate`.
                        switch aggregation {
                        case .max:
                            for li in 0..<T {
                                aggTau[li] = k == 0 ? Double(sampleTau[li]) : Swift.max(aggTau[li], Double(sampleTau[li]))
                                aggAlpha[li] = k == 0 ? Double(sampleAlpha[li]) : Swift.max(aggAlpha[li], Double(sampleAlpha[li]))
                            }
                            aggD = k == 0 ? Double(D) : Swift.max(aggD, Double(D))
                            aggA = k == 0 ? Double(a) : Swift.max(aggA, Double(a))
                        case .mean:
                            for li in 0..<T {
                                aggTau[li] = (k == 0 ? 0 : aggTau[li]) + Double(sampleTau[li])
                                aggAlpha[li] = (k == 0 ? 0 : aggAlpha[li]) + Double(sampleAlpha[li])
                            }
                            aggD += Double(D); aggA += Double(a)
                        }
                    }
                    let divisor = aggregation == .mean ? Double(K) : 1
                    for li in 0..<T {
                        tauP[li * C + c] = Float(aggTau[li] / divisor)
                        alphaP[li * C + c] = Float(aggAlpha[li] / divisor)
                    }
                    budgetP[c] = Float(aggD / divisor)
                    decayP[c] = Float(aggA / divisor)
                }
            }
        }}}}
        // A is a model constant; every sample carries the same values.
        return LayerTable(layer: first.layer, channels: C, lengths: lengths, deltaThreshold: tau, keptFraction: alpha,
                          decayBudget: budget, cumulativeDecay: decay, A: first.A, aShape: first.aShape)
    }

    /// Step 4: element-wise max, or mean (accumulated in double), over the K samples.
    public static func aggregate(_ r: [ChannelThresholds], _ aggregation: Aggregation) -> ChannelThresholds {
        precondition(!r.isEmpty)
        let T = r[0].deltaThreshold.count
        switch aggregation {
        case .max:
            var out = r[0]
            for s in r.dropFirst() {
                for i in 0..<T {
                    out.deltaThreshold[i] = Swift.max(out.deltaThreshold[i], s.deltaThreshold[i])
                    out.keptFraction[i] = Swift.max(out.keptFraction[i], s.keptFraction[i])
                }
                out.decayBudget = Swift.max(out.decayBudget, s.decayBudget)
                out.cumulativeDecay = Swift.max(out.cumulativeDecay, s.cumulativeDecay)
            }
            return out
        case .mean:
            let K = Double(r.count)
            func mean(_ f: (ChannelThresholds) -> Float) -> Float { Float(r.reduce(0.0) { $0 + Double(f($1)) } / K) }
            return ChannelThresholds(
                deltaThreshold: (0..<T).map { i in mean { $0.deltaThreshold[i] } },
                keptFraction: (0..<T).map { i in mean { $0.keptFraction[i] } },
                decayBudget: mean(\.decayBudget), cumulativeDecay: mean(\.cumulativeDecay))
        }
    }
}

/// The solved table of one layer.
public struct LayerTable: Sendable, Equatable {
    public let layer: Int
    public let channels: Int
    public let lengths: [Int]
    /// τ: [T, C] length-major.
    public let deltaThreshold: [Float]
    /// α: [T, C] length-major.
    public let keptFraction: [Float]
    /// D: [C].
    public let decayBudget: [Float]
    /// a: [C].
    public let cumulativeDecay: [Float]
    public let A: [Float]
    public let aShape: [Int]

    public init(layer: Int, channels: Int, lengths: [Int], deltaThreshold: [Float], keptFraction: [Float], decayBudget: [Float], cumulativeDecay: [Float], A: [Float], aShape: [Int]) {
        self.layer = layer; self.channels = channels; self.lengths = lengths
        self.deltaThreshold = deltaThreshold; self.keptFraction = keptFraction
        self.decayBudget = decayBudget; self.cumulativeDecay = cumulativeDecay; self.A = A; self.aShape = aShape
    }
}

/// The per-channel solve with its buffers, reused across channels (one per thread).
struct ChannelScratch {
    /// The clamped curve x: [L].
    private var curve: [Float]
    /// min(Δ_t, c) in token order, for torch's order of D: [L].
    private var clampedTokens: [Float]
    /// T and V of `CurveIntegral`: [2L].
    private var integral: [Double]

    init(length L: Int) {
        curve = [Float](repeating: 0, count: L)
        clampedTokens = [Float](repeating: 0, count: L)
        integral = [Double](repeating: 0, count: 2 * L)
    }

    /// Step 3 for one channel of one sample: writes τ(S), α(S) for every length; returns (D, a).
    mutating func solve(sorted: UnsafeBufferPointer<Float>, tokenOrder: UnsafeBufferPointer<Float>?, A: UnsafeBufferPointer<Float>,
                        lengths: [Int], clampFraction p: Double, trainingLength: Int, method: SolverMethod,
                        tau: UnsafeMutableBufferPointer<Float>, alpha: UnsafeMutableBufferPointer<Float>) -> (D: Float, a: Float) {
        let L = sorted.count
        if curve.count != L { self = ChannelScratch(length: L) }
        let k = DeltaThresholdSolver.clampCount(length: L, clampFraction: p)
        let c = sorted[k - 1]
        // Δ̃ = min(Δ, c): the top k become c.
        for i in 0..<L { curve[i] = i < k ? c : sorted[i] }
        let D: Float
        if let tokenOrder {
            for i in 0..<L { clampedTokens[i] = Swift.min(tokenOrder[i], c) }
            D = clampedTokens.withUnsafeBufferPointer { TorchSum.sum($0) }
        } else {
            D = curve.withUnsafeBufferPointer { TorchSum.sum($0) }
        }
        let a = DeltaThresholdSolver.cumulativeDecay(budget: D, A: A)
        curve.withUnsafeBufferPointer { x in
            switch method {
            case .naive:
                for (li, S) in lengths.enumerated() {
                    (tau[li], alpha[li]) = DeltaThresholdSolver.threshold(x: x, budget: D, length: S, trainingLength: trainingLength, method: .naive)
                }
            case .fast:
                integral.withUnsafeMutableBufferPointer { scratch in
                    let curveIntegral = CurveIntegral(x: x, scratch: scratch)
                    for (li, S) in lengths.enumerated() {
                        (tau[li], alpha[li]) = DeltaThresholdSolver.threshold(integral: curveIntegral, budget: D, length: S, trainingLength: trainingLength)
                    }
                }
            }
        }
        return (D, a)
    }
}
