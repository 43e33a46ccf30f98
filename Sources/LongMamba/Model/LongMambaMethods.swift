// The LongMamba authors' ways of filtering a global channel's Δ over a prompt (GATECH-EIC/LongMamba,
// mamba_ssm/modules/mamba2.py with ops/selective_scan_interface.py), all from one stored table.
//
// Glossary (one layer, one global channel c: cumulative decay a_c > θ):
//   S        prompt length; Δ_t (t < S) the channel's Δ after bias, softplus and clamp
//   τ_c(S)   Δ threshold of the row nearest S        (table_layers.delta_thresholds)
//   α_c(S)   share of tokens to keep at S             (table_layers.kept_fraction)
//   D_c      the channel's decay budget Σ Δ at L      (table_layers.decay_budget)
//   rank(t)  position of Δ_t in the descending order (ties: the earlier token first)
//
//   dt_thre           keep Δ_t  ⇔  Δ_t > τ_c(S)                          (causal, per token)
//   alpha             keep Δ_t  ⇔  rank(t) < k,  k = min(α_c(S)·S, S)    (⌈k⌉ tokens)
//   bound             keep Δ_t  ⇔  rank(t) < m,  m = #{j : f32(Σ_{rank ≤ j} Δ) ≤ D_c}  (sum in double)
//   norm              Δ_t := Δ_t · D_c / Σ_t Δ_t                          (every token kept)
//   channelwise_topk  keep Δ_t  ⇔  Δ_t > quantile(Δ, 1 − k/S), k = min(S, 2000)
// A token not kept gets Δ := 0 (the authors' slow_factor 0). All but dt_thre look at every
// token of the prompt, so the prompt must be processed in one piece.

/// How a table's global channels are filtered in prefill.
public enum LongMambaMethod: String, CaseIterable, Sendable, Codable {
    case dtThre = "dt_thre"
    case alpha
    case bound
    case norm
    case channelwiseTopK = "channelwise_topk"

    /// The authors' k of `channelwise_topk` (`self.topk = 2000`).
    public static let topK = 2000

    /// Whether the rule sorts or sums over the whole prompt (not causal): such a prompt cannot be
    /// prefilled in chunks or continued from a shared prefix.
    public var needsWholePrompt: Bool { self != .dtThre }

    public static var names: String { allCases.map(\.rawValue).joined(separator: ", ") }
}

/// The whole-prompt rules on one channel's Δ of one prompt (plain loops: they are not hot).
enum WholePromptRule {
    /// Token indices by Δ descending, ties by index: [S]
    static func ranking(_ values: [Float]) -> [Int] {
        values.indices.sorted { values[$0] != values[$1] ? values[$0] > values[$1] : $0 < $1 }
    }

    /// alpha: how many tokens rank(t) < k keeps, k = min(α·S, S) in f32 as the authors' torch.
    static func alphaCount(keptFraction alpha: Float, length S: Int) -> Int {
        let k = min(Float(S) * alpha, Float(S))
        guard k > 0 else { return 0 }
        return min(S, Int(k.rounded(.up)))
    }

    /// bound: how many of the sorted Δ fit in the budget: #{j : cumsum_j ≤ D}. torch's CPU cumsum
    /// of float32 adds in double and rounds each running total to f32: so do we.
    static func boundCount(sortedDescending values: [Float], budget: Float) -> Int {
        var sum = 0.0, m = 0
        for v in values {
            sum += Double(v)
            if Float(sum) <= budget { m += 1 } else { break }   // Δ ≥ 0: the sum only grows
        }
        return m
    }

    /// channelwise_topk: torch.quantile(Δ, 1 − k/S) with linear interpolation, in f32
    /// (q = f32(1 − k/S), rank = q·(S − 1), between the neighbours below and above).
    static func topKThreshold(_ values: [Float], k topK: Int = LongMambaMethod.topK) -> Float {
        let S = values.count
        let k = min(S, topK)
        let q = Float(1 - Double(k) / Double(S))
        let sorted = values.sorted()
        let rank = q * Float(S - 1)
        let below = Int(rank.rounded(.down)), above = min(S - 1, below + 1)
        let weight = rank - Float(below)
        // torch's CPU lerp, fused: from the nearer end.
        let lo = sorted[below], hi = sorted[above]
        return weight < 0.5 ? lo.addingProduct(weight, hi - lo) : hi.addingProduct(weight - 1, hi - lo)
    }

    /// Applies `method` to one channel's Δ in place; returns how many tokens kept their Δ.
    static func apply(_ method: LongMambaMethod, to values: inout [Float], threshold tau: Float, keptFraction alpha: Float,
                      decayBudget budget: Float) -> Int {
        let S = values.count
        switch method {
        case .dtThre:
            var kept = 0
            for t in 0..<S { if values[t] > tau { kept += 1 } else { values[t] = 0 } }
            return kept
        case .alpha, .bound:
            let order = ranking(values)
            let n = method == .alpha ? alphaCount(keptFraction: alpha, length: S)
                                     : boundCount(sortedDescending: order.map { values[$0] }, budget: budget)
            for r in n..<S { values[order[r]] = 0 }
            return n
        case .norm:
            // Σ Δ in double, then one f32 rounding: torch sums float32 tensors pairwise, closer to
            // the exact sum than a running f32 sum. An all-zero channel stays zero (the authors'
            // code would make it NaN: 0 · D/0).
            let sum = Float(values.reduce(0.0) { $0 + Double($1) })
            guard sum > 0 else { return S }
            let scale = budget / sum
            for t in 0..<S { values[t] *= scale }
            return S
        case .channelwiseTopK:
            let threshold = topKThreshold(values)
            var kept = 0
            for t in 0..<S { if values[t] > threshold { kept += 1 } else { values[t] = 0 } }
            return kept
        }
    }
}
