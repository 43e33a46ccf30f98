// Thresholds in raw-dt space, for runtimes that apply softplus inside a fused scan kernel
// (mamba_ssm, vLLM, llama.cpp, MLX): they never materialise Δ, so a threshold on Δ cannot be
// applied there, but one on the raw dt they feed the kernel can.
//
// Glossary: dt_raw = what the kernel receives (Mamba-1: dt_proj(dt_low) without its bias;
// Mamba-2/Zamba2: the dt columns of in_proj), b_c = the channel's dt bias (Mamba-1
// dt_proj.bias, Mamba-2 dt_bias), Δ = clamp(softplus(fl(dt_raw + b_c)), dt_limit).
//   r_c(S) = the largest float32 x with Δ(x) ≤ τ_c(S)     ⇒    Δ > τ_c(S)  ⇔  dt_raw > r_c(S)
// Mathematically r = softplus⁻¹(τ) − b = τ + log(−expm1(−τ)) − b; that value is then moved
// ulp by ulp until it is exactly the boundary of the runner's own float32 Δ computation, so the
// two filters keep the same (token, channel) pairs (tested). A kernel whose softplus rounds
// differently can disagree only for dt_raw within an ulp or two of r.
// r = −∞: every token is kept (τ below the smallest Δ: τ = 0 rows up to the training length, or
// τ below dt_limit's lower bound); r = +∞: no token is (τ at or above dt_limit's upper bound).
import Foundation
import LongMambaKernels

/// Raw-dt thresholds of every layer of one table: [layers][T · C], row-major [T, C] like τ.
public struct RawDeltaThresholds: Sendable {
    public var layers: [[Float]]
    /// The rule, for the exports' metadata.
    public static let rule = "raw_dt_threshold[t, c] = the largest float32 r with clamp(softplus(fl(r + dt_bias_c)), dt_limit) <= threshold[t, c]; "
        + "keep token t in global channel c iff dt_raw > r (dt_raw: the kernel's dt before its bias and softplus); -inf keeps every token, +inf none"

    /// Reads the dt biases of `modelDirectory` (which must be the table's model unless `force`)
    /// and converts every layer of `table`.
    public init(store: CalibrationStore, table id: Int64, modelDirectory: String, force: Bool = false) throws {
        let info = try store.table(id)
        let checkpoint = try ModelCheckpoint(directory: modelDirectory)
        let fingerprint = checkpoint.fingerprint()
        if fingerprint != info.modelFingerprint, !force {
            throw EvaluationError.tableForAnotherModel(table: info.modelFingerprint, model: modelDirectory, modelFingerprint: fingerprint)
        }
        let config = checkpoint.config
        let limit: (lower: Float, upper: Float)? = config.architecture.isMamba2Family ? (config.dtLimitLower, config.dtLimitUpper) : nil
        layers = try (0..<info.layerCount).map { i in
            let l = try store.tableLayer(table: id, layer: i)
            let name = "backbone.layers.\(i).mixer." + (config.architecture.isMamba2Family ? "dt_bias" : "dt_proj.bias")
            let bias = try checkpoint.floats(name)
            guard bias.count == l.channels else {
                throw LongMambaFilterError.modelChannelMismatch(layer: i, tableChannels: l.channels, modelChannels: bias.count)
            }
            return Self.convert(thresholds: l.deltaThreshold, bias: bias, limit: limit)
        }
    }

    /// r for every τ of a [T, C] threshold matrix and the channels' biases [C].
    public static func convert(thresholds tau: [Float], bias: [Float], limit: (lower: Float, upper: Float)?) -> [Float] {
        let C = bias.count
        precondition(C > 0 && tau.count % C == 0)
        let T = tau.count / C
        // Start: softplus⁻¹(τ) − b in double.
        var r = [Float](repeating: 0, count: tau.count)
        for t in 0..<T {
            for c in 0..<C {
                let threshold = Double(tau[t * C + c])
                let inverse = threshold > 0 ? threshold + Foundation.log(-Foundation.expm1(-threshold)) : -Double.infinity
                r[t * C + c] = Float(inverse - Double(bias[c]))
            }
        }
        // Δ as the runner computes it, for a [T, C] matrix of raw values.
        func delta(_ x: [Float]) -> [Float] { x.withUnsafeBufferPointer { softplusDelta($0.baseAddress!, rows: T, channels: C, stride: C, bias: bias, limit: limit) } }
        // Move each r to the boundary: Δ(r) ≤ τ < Δ(r⁺) (r⁺ = the next float up). Δ is monotone
        // in r, so each step goes one way; a few ulp at most from the analytic start.
        for _ in 0..<64 {
            let atR = delta(r), above = delta(r.map { $0.nextUp })
            var moved = false
            for i in r.indices where r[i].isFinite {
                if atR[i] > tau[i] { r[i] = r[i].nextDown; moved = true } else if !(above[i] > tau[i]) { r[i] = r[i].nextUp; moved = true }
            }
            if !moved { break }
        }
        // Where Δ never exceeds τ (τ ≥ the clamp's upper bound, or above the largest finite Δ)
        // nothing is kept; where every Δ exceeds τ (the lower bound) everything is.
        let lowest = delta([Float](repeating: -Float.greatestFiniteMagnitude, count: tau.count))
        let highest = delta([Float](repeating: Float.greatestFiniteMagnitude, count: tau.count))
        for i in r.indices {
            // τ = 0 (no filtering up to L): the only Δ not above it are exact zeros, which zeroing leaves as they are.
            if !(highest[i] > tau[i]) { r[i] = .infinity } else if lowest[i] > tau[i] || tau[i] <= 0 { r[i] = -.infinity }
        }
        return r
    }
}
