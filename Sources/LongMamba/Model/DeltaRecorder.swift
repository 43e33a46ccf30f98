// What the runner hands out per layer while it runs: Δ and A.
//
// Glossary: L = tokens in the sequence, C = channels (Mamba-1: d_inner; Mamba-2: heads),
// N = state size. Δ = softplus(dt + bias) (after any dt limit), A = -exp(A_log).

/// Δ of one layer for one sequence, as the model computed it.
public struct LayerDelta: Sendable {
    public let layer: Int
    /// Δ: [L, C] row-major (token-major).
    public let delta: [Float]
    public let length: Int
    public let channels: Int
    /// A: [C, N] (Mamba-1) or [C] (Mamba-2), row-major.
    public let A: [Float]
    public let aShape: [Int]

    public init(layer: Int, delta: [Float], length: Int, channels: Int, A: [Float], aShape: [Int]) {
        precondition(delta.count == length * channels)
        self.layer = layer; self.delta = delta; self.length = length; self.channels = channels
        self.A = A; self.aShape = aShape
    }
}

/// Receives Δ layer by layer during a forward pass. Throwing stops the pass.
public protocol DeltaRecorder {
    mutating func record(_ layerDelta: LayerDelta) throws
}

/// Keeps every layer's Δ in memory (for `record` and tests).
public struct CollectingRecorder: DeltaRecorder {
    public private(set) var layers: [LayerDelta] = []
    public init() {}
    public mutating func record(_ layerDelta: LayerDelta) throws { layers.append(layerDelta) }
}

/// What one layer carries from one chunk of a sequence to the next.
public struct LayerState: Sendable {
    /// The last K−1 conv inputs: [K−1, conv channels].
    public var conv: [Float] = []
    /// SSM state: [d_inner, N] (Mamba-1) or [H, P, N] (Mamba-2).
    public var ssm: [Float] = []
    /// Zamba2 hybrid layers: the shared block's attention keys (after RoPE) and values of every
    /// token so far: [T, H_kv·d] each.
    public var keys: [Float] = []
    public var values: [Float] = []
    public init() {}
}

/// State of a whole model after some tokens: processing a sequence in chunks with this state
/// carried gives the same Δ and logits as processing it at once.
public struct SequenceState: Sendable {
    public var layers: [LayerState]
    /// Tokens processed so far.
    public var position: Int = 0
    public init(layerCount: Int) { layers = [LayerState](repeating: LayerState(), count: layerCount) }
}
