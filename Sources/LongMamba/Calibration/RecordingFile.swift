// Reading `longmamba record` output: one safetensors file per sample with
//   layer.{i}.delta  f32 [L, C]   (token-major Δ)
//   layer.{i}.A      f32 [C, N] (Mamba-1) or [C] (Mamba-2)
//   logits           optional, ignored here
//   __metadata__     architecture ("mamba" | "mamba2"), fingerprint, tool_version, …
import Foundation

/// Why a recording was refused.
public struct RecordingError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let reason: String
    public var description: String { "\(path): \(reason)" }
}

/// One recorded sample: Δ of every layer, sorted per channel, plus the file's metadata.
public struct RecordingFile: Sendable {
    public let path: String
    public let metadata: [String: String]
    public let layers: [SortedDeltaLayer]

    public var architecture: String? { metadata["architecture"] }
    public var fingerprint: String? { metadata["fingerprint"] }
    public var length: Int { layers.first?.length ?? 0 }
    public var channels: Int { layers.first?.channels ?? 0 }

    public init(path: String) throws {
        let file: SafetensorsFile
        do { file = try SafetensorsFile(path: path) } catch {
            throw RecordingError(path: path, reason: "not a readable safetensors file: \(error)")
        }
        self.path = path
        self.metadata = file.metadata
        var layerIndices: [Int] = []
        for t in file.tensors {
            let parts = t.name.split(separator: ".")
            if parts.count == 3, parts[0] == "layer", parts[2] == "delta", let i = Int(parts[1]) { layerIndices.append(i) }
        }
        layerIndices.sort()
        guard !layerIndices.isEmpty else {
            throw RecordingError(path: path, reason: "no tensor named layer.{i}.delta (is this a `longmamba record` output?)")
        }
        guard layerIndices == Array(0..<layerIndices.count) else {
            throw RecordingError(path: path, reason: "layers are not numbered 0..<\(layerIndices.count): found \(layerIndices)")
        }
        var layers: [SortedDeltaLayer] = []
        for i in layerIndices {
            guard let info = file.info("layer.\(i).delta"), info.shape.count == 2 else {
                throw RecordingError(path: path, reason: "layer.\(i).delta must have shape [L, C], found \(file.info("layer.\(i).delta")?.shape ?? [])")
            }
            guard let aInfo = file.info("layer.\(i).A") else {
                throw RecordingError(path: path, reason: "layer.\(i).A is missing (A = -exp(A_log) of layer \(i))")
            }
            let L = info.shape[0], C = info.shape[1]
            let delta = try file.floats(info)
            let A = try file.floats(aInfo)
            do {
                let layer = try SortedDeltaLayer(layer: i, tokenMajorDelta: delta, length: L, channels: C, A: A, aShape: aInfo.shape, source: path)
                if let first = layers.first, first.length != L {
                    throw RecordingError(path: path, reason: "layer \(i) has \(L) tokens, layer 0 has \(first.length)")
                }
                layers.append(layer)
            } catch let e as SolverError {
                throw RecordingError(path: path, reason: "\(e)")
            }
        }
        self.layers = layers
    }

    /// Checks that K recordings describe the same model shape.
    public static func checkConsistent(_ files: [RecordingFile]) throws {
        guard let first = files.first else { return }
        for f in files.dropFirst() {
            guard f.layers.count == first.layers.count else {
                throw RecordingError(path: f.path, reason: "has \(f.layers.count) layers but \(first.path) has \(first.layers.count)")
            }
            for (a, b) in zip(first.layers, f.layers) {
                guard a.channels == b.channels, a.aShape == b.aShape else {
                    throw RecordingError(path: f.path, reason: "layer \(b.layer) has \(b.channels) channels (A \(b.aShape)) but \(first.path) has \(a.channels) (A \(a.aShape))")
                }
                guard a.length == b.length else {
                    throw RecordingError(path: f.path, reason: "has \(b.length) tokens but \(first.path) has \(a.length); all samples need the same length L")
                }
            }
            if let fa = first.architecture, let ba = f.architecture, fa != ba {
                throw RecordingError(path: f.path, reason: "architecture '\(ba)' differs from '\(fa)' in \(first.path)")
            }
        }
    }
}
