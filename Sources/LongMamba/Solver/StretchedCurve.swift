// The sorted Δ curve of a channel, stretched from L to S points exactly as
// `torch.nn.functional.interpolate(x, size=S, mode='linear', align_corners=False)` does on CPU.
//
// torch (UpSampleKernel.cpp, compiled with FMA contraction) computes, for output index j:
//   scale = Float(L) / Float(S)
//   src   = max(0, fma(scale, Float(j) + 0.5, -0.5))
//   i0    = min(floor(src), L - 1);  i1 = i0 + (i0 < L - 1 ? 1 : 0)
//   λ1    = clamp(src - i0, 0, 1);   λ0 = 1 - λ1
//   y_j   = fma(x[i0], λ0, x[i1] * λ1)
// Checked bit for bit against torch 2.13 CPU (scripts/solver_reference.py, golden tests);
// plain `x0*λ0 + x1*λ1` differs by up to 3e-5 relative.

/// A descending (sorted) curve of L values and its torch-exact linear stretch to S points.
public struct StretchedCurve {
    /// The curve being stretched (sorted clamped Δ, descending, all ≥ 0).
    public let values: [Float]
    /// Target number of points S.
    public let length: Int
    /// Float(L) / Float(S), rounded to Float as torch does.
    public let scale: Float

    public init(values: [Float], length: Int) {
        precondition(!values.isEmpty && length > 0)
        self.values = values
        self.length = length
        self.scale = Float(values.count) / Float(length)
    }

    /// y_j, computed with torch's float operations (see the header comment).
    @inline(__always)
    public func value(at j: Int) -> Float {
        values.withUnsafeBufferPointer { StretchedCurve.value(at: j, x: $0, scale: scale) }
    }

    @inline(__always)
    static func value(at j: Int, x: UnsafeBufferPointer<Float>, scale: Float) -> Float {
        let L = x.count
        // src = fma(scale, j + 0.5, -0.5), clamped at 0 (align_corners=False, non-cubic).
        var src = Float(-0.5).addingProduct(scale, Float(j) + 0.5)
        if src < 0 { src = 0 }
        let i0 = min(Int(src), L - 1)
        let lambda1 = min(max(src - Float(i0), 0), 1)
        let lambda0 = 1 - lambda1
        let i1 = i0 + (i0 < L - 1 ? 1 : 0)
        // y = fma(x0, λ0, x1·λ1)
        return (x[i1] * lambda1).addingProduct(x[i0], lambda0)
    }

    /// The whole stretched curve (the naive method materialises this for every S).
    public func materialised() -> [Float] {
        values.withUnsafeBufferPointer { x in (0..<length).map { StretchedCurve.value(at: $0, x: x, scale: scale) } }
    }
}
