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

/// One recorded sample, read lazily layer by layer (a 1.4B recording is 1.6 GB of Δ).
public struct RecordingFile: Sendable {
    public let path: String
    public let metadata: [String: String]
    public let layerCount: Int
    /// L: tokens per layer.
    public let length: Int
    /// C of every layer.
    public let channelCounts: [Int]
    public let aShapes: [[Int]]
    private let file: SafetensorsFile

    public var architecture: String? { metadata["architecture"] }
    public var fingerprint: String? { metadata["fingerprint"] }
    public var channels: Int { channelCounts.first ?? 0 }

    public init(path: String) throws {
        let file: SafetensorsFile
        do { file = try SafetensorsFile(path: path) } catch {
            throw RecordingError(path: path, reason: "not a readable safetensors file: \(error)")
        }
        self.path = path
        self.file = file
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
        var length: Int?
        var channels: [Int] = [], aShapes: [[Int]] = []
        for i in layerIndices {
            guard let info = file.info("layer.\(i).delta"), info.shape.count == 2 else {
                throw RecordingError(path: path, reason: "layer.\(i).delta must have shape [L, C], found \(file.info("layer.\(i).delta")?.shape ?? [])")
            }
            guard let aInfo = file.info("layer.\(i).A") else {
                throw RecordingError(path: path, reason: "layer.\(i).A is missing (A = -exp(A_log) of layer \(i))")
            }
            let L = info.shape[0], C = info.shape[1]
            if let length, length != L {
                throw RecordingError(path: path, reason: "layer \(i) has \(L) tokens, layer 0 has \(length)")
            }
            guard aInfo.shape.first == C, aInfo.shape.count <= 2 else {
                throw RecordingError(path: path, reason: "layer.\(i).A has shape \(aInfo.shape), expected [\(C)] or [\(C), N]")
            }
            length = L
            channels.append(C); aShapes.append(aInfo.shape)
        }
        self.layerCount = layerIndices.count
        self.length = length ?? 0
        self.channelCounts = channels
        self.aShapes = aShapes
    }

    /// Layer i's Δ, checked (finite, ≥ 0) and sorted per channel.
    public func layer(_ i: Int) throws -> SortedDeltaLayer {
        guard i >= 0, i < layerCount else { throw RecordingError(path: path, reason: "no layer \(i) (file has \(layerCount))") }
        do {
            let delta = try file.floats("layer.\(i).delta")
            let A = try file.floats("layer.\(i).A")
            return try SortedDeltaLayer(layer: i, tokenMajorDelta: delta, length: length, channels: channelCounts[i], A: A, aShape: aShapes[i], source: path)
        } catch let e as SolverError {
            throw RecordingError(path: path, reason: "\(e)")
        }
    }

    /// Checks that K recordings describe the same model shape.
    public static func checkConsistent(_ files: [RecordingFile]) throws {
        guard let first = files.first else { return }
        for f in files.dropFirst() {
            guard f.layerCount == first.layerCount else {
                throw RecordingError(path: f.path, reason: "has \(f.layerCount) layers but \(first.path) has \(first.layerCount)")
            }
            for i in 0..<f.layerCount {
                guard f.channelCounts[i] == first.channelCounts[i], f.aShapes[i] == first.aShapes[i] else {
                    throw RecordingError(path: f.path, reason: "layer \(i) has \(f.channelCounts[i]) channels (A \(f.aShapes[i])) but \(first.path) has \(first.channelCounts[i]) (A \(first.aShapes[i]))")
                }
            }
            guard f.length == first.length else {
                throw RecordingError(path: f.path, reason: "has \(f.length) tokens but \(first.path) has \(first.length); all samples need the same length L")
            }
            if let fa = first.architecture, let ba = f.architecture, fa != ba {
                throw RecordingError(path: f.path, reason: "architecture '\(ba)' differs from '\(fa)' in \(first.path)")
            }
        }
    }
}
