// The per-layer scale methods: one number per layer and target length changes the prefill
// (docs/method.md "Per-layer scale methods").
//
// Glossary (layer l, prompt length S):
//   s_l(S)   the layer's scale at the calibrated length nearest S    (table_scales.scales)
//   Δ        [L, C] after bias, softplus and dt_limit; A = −exp(A_log)
//
//   delta_scale  (MambaExtend)       Δ' = s_l · Δ                   every channel
//   a_power      (Mamba Modulation)  A' = −exp(s_l · A_log)          every entry of the layer's A_log
// Both change prefill only: decode steps run with the model's own Δ and A.
import Foundation

/// Which per-layer scale a table holds.
public enum ScaleMethod: String, CaseIterable, Sendable, Codable {
    case deltaScale = "delta_scale"
    case aPower = "a_power"

    public static var names: String { allCases.map(\.rawValue).joined(separator: ", ") }
}

/// s_l of every layer for one prompt: [layers].
public struct LayerScales: Sendable, Equatable {
    public var method: ScaleMethod
    public var scales: [Float]
    public init(method: ScaleMethod, scales: [Float]) { self.method = method; self.scales = scales }

    /// Δ' = s · Δ: [L, C] in place.
    func scaleDelta(_ delta: inout [Float], layer: Int) {
        let s = scales[layer]
        for i in delta.indices { delta[i] *= s }
    }

    /// A' = −exp(s · A_log): the layer's A_log in any shape.
    func poweredDecay(aLog: [Float], layer: Int) -> [Float] {
        let s = scales[layer]
        return aLog.map { -Foundation.exp(s * $0) }
    }
}
