// The fast threshold search: one pass over a channel's curve, then O(log L) per length S.
//
// Glossary: x_0 ≥ … ≥ x_{L−1} the clamped sorted Δ of one channel; f its piecewise-linear
// interpolant (knots at 0 … L−1, flat beyond both ends, as torch's clamped source index makes it);
// d_i = x_{i+1} − x_i; s = Float(L)/Float(S); y_j = f(src_j), src_j = s·(j + 0.5) − 0.5 (the
// stretched curve, StretchedCurve.swift); D the decay budget; mid the real number halfway between
// D and the next float (Float(cum) > D ⇔ cum > mid).
//
// The points src_j are the midpoints of cells of width s that tile [−0.5, s·(J+1) − 0.5], so the
// running sum is a midpoint-rule integral of f:
//   cum_J = Σ_{j≤J} y_j = (x_0/2 + F(s·(J+1) − 0.5)) / s  ±  (s/8)·V(⌊s·(J+1) − 0.5⌋ + 1)     (*)
//   F(U) = ∫_0^U f = T_i + x_i·t + d_i·t²/2,  i = ⌊U⌋, t = U − i,  T_i = Σ_{m<i} (x_m + x_{m+1})/2
//   V(m) = Σ_{i≤m} |d_i − d_{i−1}|  (slope changes of f at the knots ≤ m; d_{−1} = d_{L−1} = 0)
// The midpoint rule is exact on a linear piece and errs by at most |δ|·s²/8 on a cell holding a
// kink whose slope changes by δ, hence the bound. T and V do not depend on S: they are built once
// per channel and sample, and each S costs a search for the knot segment where F reaches
// s·mid − x_0/2, a quadratic solve, and two evaluations of (*) to prove the crossing index.
// The proof also carries torch's float rounding (of src, of y_j, of the double running sum; the
// same bound as the segment walk). When the bound leaves more than one candidate, the exact
// segment walk settles it (and below that the exact scan), so the answer equals `naiveCrossing`.
import Foundation

/// How one crossing was settled (the benchmark and tests count them).
enum CrossingProof: Equatable {
    /// The midpoint-rule closed form (*) with its bound.
    case closedForm
    /// The exact segment walk (`segmentWalkCrossing`) settled it.
    case segmentWalk
    /// The exact scan of the running sum settled it.
    case exactScan
}

/// T and V of one curve (see the header), built once for all lengths.
struct CurveIntegral {
    /// x: the clamped sorted curve, L values, descending.
    let x: UnsafeBufferPointer<Float>
    /// T_i = ∫_0^i f for i = 0 … L−1.  [L]
    private let trapezoid: UnsafeMutableBufferPointer<Double>
    /// V(m) for m = 0 … L−1.  [L]
    private let kinks: UnsafeMutableBufferPointer<Double>
    /// Last index of the leading run of values equal to x_0 (the clamp plateau): F is linear up to it.
    private let plateauEnd: Int

    /// Builds T and V into `scratch` (2·L doubles, owned by the caller and reused across curves).
    init(x: UnsafeBufferPointer<Float>, scratch: UnsafeMutableBufferPointer<Double>) {
        let L = x.count
        precondition(L > 0 && scratch.count >= 2 * L)
        self.x = x
        trapezoid = UnsafeMutableBufferPointer(rebasing: scratch[0..<L])
        kinks = UnsafeMutableBufferPointer(rebasing: scratch[L..<(2 * L)])
        var t = 0.0, v = 0.0, previousSlope = 0.0
        var plateau = 0
        for i in 0..<L {
            trapezoid[i] = t
            let slope = i + 1 < L ? Double(x[i + 1]) - Double(x[i]) : 0   // d_i (0 past the end)
            v += abs(slope - previousSlope)                                 // kink at knot i
            kinks[i] = v
            previousSlope = slope
            if i + 1 < L {
                t += (Double(x[i]) + Double(x[i + 1])) / 2                  // T_{i+1} = T_i + (x_i + x_{i+1})/2
                if plateau == i && x[i + 1] == x[0] { plateau = i + 1 }
            }
        }
        plateauEnd = plateau
    }

    /// F(U) = ∫_0^U f (f = x_0 left of 0, x_{L−1} right of L−1).
    @inline(__always) func integral(_ U: Double) -> Double {
        let L = x.count
        if U <= 0 { return Double(x[0]) * U }
        if U >= Double(L - 1) { return trapezoid[L - 1] + Double(x[L - 1]) * (U - Double(L - 1)) }
        let i = Int(U), t = U - Double(i)
        let xi = Double(x[i]), d = Double(x[i + 1]) - xi
        return trapezoid[i] + xi * t + d * t * t / 2
    }

    /// The smallest U with F(U) ≥ R (up to double rounding), +∞ when F never reaches R.
    @inline(__always) func inverseIntegral(_ R: Double) -> Double {
        let L = x.count
        let x0 = Double(x[0])
        if R <= 0 { return x0 > 0 ? R / x0 : (R < 0 ? -.infinity : 0) }
        if R <= trapezoid[plateauEnd] { return R / x0 }   // inside the plateau F(U) = x_0·U
        if R > trapezoid[L - 1] {
            let last = Double(x[L - 1])
            return last > 0 ? Double(L - 1) + (R - trapezoid[L - 1]) / last : .infinity
        }
        // T_i < R ≤ T_{i+1}, i in plateauEnd ..< L−1.
        var lo = plateauEnd, hi = L - 1
        while hi - lo > 1 {
            let m = (lo + hi) / 2
            if trapezoid[m] < R { lo = m } else { hi = m }
        }
        let xi = Double(x[lo]), d = Double(x[lo + 1]) - xi
        let rho = R - trapezoid[lo]
        // x_i·t + d·t²/2 = ρ  ⇒  t = 2ρ / (x_i + √(x_i² + 2dρ))   (d ≤ 0; the stable root)
        let root = max(0, xi * xi + 2 * d * rho).squareRoot()
        let denominator = xi + root
        let t = denominator > 0 ? min(2 * rho / denominator, 1) : 1
        return Double(lo) + t
    }

    /// The first j < S whose torch running sum Float(cum_j) exceeds D; nil when none does.
    func crossing(budget D: Float, length S: Int) -> (index: Int?, proof: CrossingProof) {
        let L = x.count
        let s = Double(Float(L) / Float(S))
        let mid = (Double(D) + Double(D.nextUp)) / 2
        let x0 = Double(x[0])
        let perSegment = 1 / s + 2

        /// (*) at J and its error bound.
        @inline(__always) func estimate(_ J: Int) -> (sum: Double, bound: Double) {
            let U = s * Double(J + 1) - 0.5
            let sum = (x0 / 2 + integral(U)) / s
            let r = U < 0 ? -1 : min(Int(U), L - 1)
            let midpoint = s / 8 * kinks[min(r + 1, L - 1)]
            // torch's rounding, as in the segment walk: src (2^-24·src times the slope, over
            // ≤ perSegment points per segment), each y_j (3·2^-24 relative), the double sum.
            let drop = x0 - Double(x[min(max(r + 2, 0), L - 1)])
            let rounding = 2 * (0x1p-22 * Double(r + 3) * perSegment * drop + 0x1p-22 * sum + Double(S + L) * 0x1p-50 * sum)
            return (sum, midpoint + rounding)
        }
        /// Proven: cum_{J−1} < mid < cum_J.
        @inline(__always) func proven(_ J: Int) -> Bool {
            guard J >= 0 && J < S else { return false }
            let at = estimate(J)
            guard at.sum - at.bound > mid else { return false }
            if J == 0 { return true }
            let before = estimate(J - 1)
            return before.sum + before.bound < mid
        }

        let U = inverseIntegral(s * mid - x0 / 2)
        if U.isFinite {
            // Smallest J with s·(J+1) − 0.5 ≥ U.
            let raw = ((U + 0.5) / s - 1).rounded(.up)
            let J = raw < 0 ? 0 : (raw > Double(S) ? S : Int(raw))
            if proven(J) { return (J, .closedForm) }
            if proven(J + 1) { return (J + 1, .closedForm) }
            if proven(J - 1) { return (J - 1, .closedForm) }
        }
        // No crossing before S: proven when even the whole sum stays below mid.
        if !U.isFinite || U > s * Double(S) - 0.5 {
            let all = estimate(S - 1)
            if all.sum + all.bound < mid { return (nil, .closedForm) }
        }
        let exact = DeltaThresholdSolver.segmentWalkCrossing(x: x, budget: D, length: S)
        return (exact.index, exact.usedFallback ? .exactScan : .segmentWalk)
    }
}
