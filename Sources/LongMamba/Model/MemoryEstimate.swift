// What a recording forward pass needs in memory beyond the mapped checkpoint, so that a job too
// big for the machine is refused with an estimate before it starts instead of being killed.
//
// For L tokens, D = d_model, E = d_inner, C = channels of Δ, W = f32 bytes of one layer's weights:
//   weights      resident ? all layers' f32 weights : 2·W (the layer in use and the next)
//   activations  3·L·D (h, RMSNorm(h), mixer out) + 8·L·E (the mixer's workspace: projections,
//                conv output, y, the fast scan's gathers)
//   Δ            (1 + 3·backlog)·L·C (the runner's Δ, and per queued layer its sorted and
//                token-order copies)
//   stored       the encoded layers of one sample until its commit
// in f32 bytes, plus a quarter for allocator slack and 256 MiB for the process itself. Checked
// against the 7B shapes' measured peaks (docs/performance.md).
import Foundation

public enum MemoryEstimate {
    /// Bytes a recording forward pass of `tokens` tokens needs.
    public static func recordingBytes(config c: ModelConfig, tokens L: Int, residentWeights: Bool, backlog: Int = 2) -> Int {
        let shapes = ModelCheckpoint.expectedShapes(c)
        let perLayer = shapes.filter { $0.key.hasPrefix("backbone.layers.0.") }.values.reduce(0) { $0 + $1.reduce(1, *) }
        let all = shapes.values.reduce(0) { $0 + $1.reduce(1, *) }
        let weights = 4 * (residentWeights ? all : 2 * perLayer)
        let activations = 4 * (3 * L * c.dModel + 8 * L * c.dInner)
        let delta = 4 * (1 + 3 * backlog) * L * c.channelCount
        let representation = DeltaRepresentation.automatic(architecture: c.architecture.rawValue, channels: c.channelCount)
        let perStoredLayer: Int
        switch representation {
        case .exact: perStoredLayer = 4 * L * c.channelCount
        case .sketch(let bytes): perStoredLayer = bytes * c.channelCount
        }
        var total = weights + activations + delta + perStoredLayer * c.layerCount
        if let a = c.sharedBlocks {
            // Zamba2: the shared blocks stay converted (every hybrid layer reuses them), each hybrid
            // layer keeps its keys and values [L, H_kv·d_a] × 2, and attention works on
            // [L, 2D] inputs plus [L, I] MLP activations.
            let shared = shapes.filter { $0.key.contains("shared") || $0.key.contains("linear") }.values.reduce(0) { $0 + $1.reduce(1, *) }
            total += 4 * (shared + a.hybridLayers.count * 2 * L * a.keyValueHeads * a.attentionHeadDim + L * (4 * c.dModel + 2 * a.mlpWidth))
        }
        return total + total / 4 + (256 << 20)
    }

    /// MemAvailable from /proc/meminfo (nil where there is none).
    public static func availableBytes() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let fields = line.split(separator: " ")
            if fields.count >= 2, let kib = Int(fields[1]) { return kib * 1024 }
        }
        return nil
    }
}
