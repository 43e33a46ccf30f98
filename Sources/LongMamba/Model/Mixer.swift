// The token mixer of a pre-norm residual block: h = h + mixer(RMSNorm(h)). Every kind of layer
// conforms (Mamba-1, Mamba-2), so the runner calls a layer the same way whatever its kind. Zamba2's
// shared attention block (SharedBlock.swift) is not a mixer: it feeds the Mamba mixer of a hybrid layer.
//
// Glossary: L tokens, D = d_model, C = channels of Δ (Mamba-1: d_inner; Mamba-2: heads H),
// N = state size.
//   out: [L, D] = forward(u: [L, D])     Δ: [L, C] returned for the recorder
//   A = −exp(A_log): [C, N] (Mamba-1) or [C] (Mamba-2), recorded beside Δ

/// What the runner does to one layer's Δ: [L, C] before the scan (LongMamba's threshold filter).
typealias LayerDeltaFilter = (_ delta: inout [Float]) -> Void

/// One layer's mixer with its weights.
protocol Mixer {
    /// A, row-major, and its shape: [d_inner, N] (Mamba-1) or [H] (Mamba-2).
    var decayRates: [Float] { get }
    var decayShape: [Int] { get }

    /// out: [L, D] = mixer(u: [L, D]), continuing from `state` (conv history, SSM state) and
    /// leaving it after the last token. Returns Δ: [L, C] as the scan used it (after
    /// `deltaFilter`). `poweredDecay`: A' in A's shape instead of A (a_power). `useReferenceScan`:
    /// the plain scan instead of the vectorised one.
    func forward(_ u: UnsafePointer<Float>, length L: Int, into out: UnsafeMutablePointer<Float>,
                 state: inout LayerState, workspace: Workspace, deltaFilter: LayerDeltaFilter?,
                 poweredDecay: [Float]?, useReferenceScan: Bool) -> [Float]
}

extension ModelCheckpoint {
    /// The mixer of `layer`, its weights read (converted to f32 where stored in half precision).
    func mixer(layer: Int) throws -> any Mixer {
        switch config.architecture {
        case .mamba, .falconMamba: return Mamba1Mixer(config: config, weights: try Mamba1Weights(checkpoint: self, layer: layer))
        case .mamba2, .zamba2: return Mamba2Mixer(config: config, weights: try Mamba2Weights(checkpoint: self, layer: layer))
        }
    }
}
