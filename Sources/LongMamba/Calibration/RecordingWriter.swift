// Writing the recording file of `longmamba record` (read back by `RecordingFile(path:)`):
// a contract other tools rely on.
//   layer.{i}.delta  f32 [L, C]      Δ after softplus (+ bias, + dt limit)
//   layer.{i}.A      f32 [C, N] | [C]
//   logits           f32 [L, V]      only when requested
//   __metadata__     architecture, fingerprint, tool_version, delta_path, dt_limit, ...
import Foundation

extension RecordingFile {
    /// How Δ was computed, for the table's provenance.
    public static func deltaPath(_ c: ModelConfig) -> String {
        switch c.architecture {
        case .mamba: return "softplus(dt_proj.weight · dt_low + dt_proj.bias)"
        case .falconMamba: return "softplus(dt_proj.weight · rmsnorm(dt_low) + dt_proj.bias)"
        case .mamba2: return "clamp(softplus(dt + dt_bias), time_step_limit)"
        case .zamba2: return "clamp(softplus(dt + dt_bias), (time_step_min, inf)) of every layer's Mamba-2 mixer (hybrid layers included, model layer index)"
        }
    }

    /// - extraMetadata: added to `__metadata__` (e.g. the LongMamba filter a run used).
    public static func write(layers: [LayerDelta], logits: [Float]?, tokens: [Int], checkpoint: ModelCheckpoint, to path: String,
                             extraMetadata: [String: String] = [:]) throws {
        let c = checkpoint.config
        var writer = SafetensorsWriter()
        writer.metadata = [
            "architecture": c.architecture.rawValue,
            "fingerprint": checkpoint.fingerprint(),
            "tool": ToolInfo.name,
            "tool_version": ToolInfo.version,
            "layout": c.layout.rawValue,
            "tokens": String(tokens.count),
            "channels": String(c.channelCount),
            "layers": String(c.layerCount),
            "delta_path": deltaPath(c),
            "dt_limit": "[\(c.dtLimitLower), \(c.dtLimitUpper)]",
            "training_length": c.trainingLength.map(String.init) ?? "",
        ].merging(c.layerIndexMetadata) { own, _ in own }
        .merging(extraMetadata) { _, extra in extra }
        for l in layers {
            writer.add("layer.\(l.layer).delta", shape: [l.length, l.channels], floats: l.delta)
            writer.add("layer.\(l.layer).A", shape: l.aShape, floats: l.A)
        }
        if let logits { writer.add("logits", shape: [tokens.count, logits.count / max(tokens.count, 1)], floats: logits) }
        try writer.write(to: path)
    }
}
