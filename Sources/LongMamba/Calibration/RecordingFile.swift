// Reading `longmamba record` output: one safetensors file per sample with
//   layer.{i}.delta  f32 [L, C]   (token-major Δ)
//   layer.{i}.A      f32 [C, N] (Mamba-1) or [C] (Mamba-2)
//   logits           optional, ignored here
//   __metadata__     architecture ("mamba" | "mamba2"), fingerprint, tool_version, …
import Foundation

/// Why a recording was refused; every case names the recording file (`path`).
public enum RecordingError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The file could not be opened or parsed as safetensors (`reason`: the underlying error).
    case unreadable(path: String, reason: String)
    /// No `layer.{i}.delta` tensor at all.
    case noLayers(path: String)
    /// The layer numbers found are not 0..<n.
    case layersNotNumbered(path: String, found: [Int])
    /// `layer.{i}.delta` is not 2-D (`shape`: what the file has, [] when unreadable).
    case deltaNotMatrix(path: String, layer: Int, shape: [Int])
    /// `layer.{i}.A` is absent.
    case missingA(path: String, layer: Int)
    /// Layer `layer` has another token count than layer 0.
    case lengthMismatch(path: String, layer: Int, length: Int, firstLength: Int)
    /// `layer.{i}.A` is neither [C] nor [C, N].
    case aShapeMismatch(path: String, layer: Int, shape: [Int], channels: Int)
    /// A layer index outside the file.
    case noSuchLayer(path: String, layer: Int, layerCount: Int)
    /// A layer's Δ failed the solver's checks (negative or non-finite values …).
    case invalidLayer(path: String, SolverError)
    /// Another recording of the same set has another layer count.
    case layerCountMismatch(path: String, layers: Int, firstPath: String, firstLayers: Int)
    /// Another recording has another channel count or A shape in a layer.
    case channelMismatch(path: String, layer: Int, channels: Int, aShape: [Int], firstPath: String, firstChannels: Int, firstAShape: [Int])
    /// Another recording has another token count L.
    case sampleLengthMismatch(path: String, length: Int, firstPath: String, firstLength: Int)
    /// Another recording comes from another architecture.
    case architectureMismatch(path: String, architecture: String, firstPath: String, firstArchitecture: String)

    /// The recording the error is about.
    public var path: String {
        switch self {
        case let .unreadable(path, _), let .noLayers(path), let .layersNotNumbered(path, _), let .deltaNotMatrix(path, _, _),
             let .missingA(path, _), let .lengthMismatch(path, _, _, _), let .aShapeMismatch(path, _, _, _),
             let .noSuchLayer(path, _, _), let .invalidLayer(path, _), let .layerCountMismatch(path, _, _, _),
             let .channelMismatch(path, _, _, _, _, _, _), let .sampleLengthMismatch(path, _, _, _),
             let .architectureMismatch(path, _, _, _):
            return path
        }
    }

    public var description: String {
        switch self {
        case let .unreadable(path, reason):
            return "\(path): not a readable safetensors file: \(reason)"
        case let .noLayers(path):
            return "\(path): no tensor named layer.{i}.delta (is this a `longmamba record` output?)"
        case let .layersNotNumbered(path, found):
            return "\(path): layers are not numbered 0 to \(found.count - 1): found \(found)"
        case let .deltaNotMatrix(path, i, shape):
            return "\(path): layer.\(i).delta must have shape [L, C], found \(shape)"
        case let .missingA(path, i):
            return "\(path): layer.\(i).A is missing (A = -exp(A_log) of layer \(i))"
        case let .lengthMismatch(path, i, length, firstLength):
            return "\(path): layer \(i) has \(length) tokens, layer 0 has \(firstLength)"
        case let .aShapeMismatch(path, i, shape, C):
            return "\(path): layer.\(i).A has shape \(shape), expected [\(C)] or [\(C), N]"
        case let .noSuchLayer(path, i, layerCount):
            return "\(path): no layer \(i) (file has \(layerCount))"
        case let .invalidLayer(path, error):
            return "\(path): \(error)"
        case let .layerCountMismatch(path, layers, firstPath, firstLayers):
            return "\(path): has \(layers) layers but \(firstPath) has \(firstLayers)"
        case let .channelMismatch(path, i, channels, aShape, firstPath, firstChannels, firstAShape):
            return "\(path): layer \(i) has \(channels) channels (A \(aShape)) but \(firstPath) has \(firstChannels) (A \(firstAShape))"
        case let .sampleLengthMismatch(path, length, firstPath, firstLength):
            return "\(path): has \(length) tokens but \(firstPath) has \(firstLength); all samples need the same length L"
        case let .architectureMismatch(path, architecture, firstPath, firstArchitecture):
            return "\(path): architecture '\(architecture)' differs from '\(firstArchitecture)' in \(firstPath)"
        }
    }
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
            throw RecordingError.unreadable(path: path, reason: "\(error)")
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
            throw RecordingError.noLayers(path: path)
        }
        guard layerIndices == Array(0..<layerIndices.count) else {
            throw RecordingError.layersNotNumbered(path: path, found: layerIndices)
        }
        var length: Int?
        var channels: [Int] = [], aShapes: [[Int]] = []
        for i in layerIndices {
            guard let info = file.info("layer.\(i).delta"), info.shape.count == 2 else {
                throw RecordingError.deltaNotMatrix(path: path, layer: i, shape: file.info("layer.\(i).delta")?.shape ?? [])
            }
            guard let aInfo = file.info("layer.\(i).A") else {
                throw RecordingError.missingA(path: path, layer: i)
            }
            let L = info.shape[0], C = info.shape[1]
            if let length, length != L {
                throw RecordingError.lengthMismatch(path: path, layer: i, length: L, firstLength: length)
            }
            guard aInfo.shape.first == C, aInfo.shape.count <= 2 else {
                throw RecordingError.aShapeMismatch(path: path, layer: i, shape: aInfo.shape, channels: C)
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
        guard i >= 0, i < layerCount else { throw RecordingError.noSuchLayer(path: path, layer: i, layerCount: layerCount) }
        do {
            let delta = try file.floats("layer.\(i).delta")
            let A = try file.floats("layer.\(i).A")
            return try SortedDeltaLayer(layer: i, tokenMajorDelta: delta, length: length, channels: channelCounts[i], A: A, aShape: aShapes[i], source: path)
        } catch let e as SolverError {
            throw RecordingError.invalidLayer(path: path, e)
        }
    }

    /// Checks that K recordings describe the same model shape.
    public static func checkConsistent(_ files: [RecordingFile]) throws {
        guard let first = files.first else { return }
        for f in files.dropFirst() {
            guard f.layerCount == first.layerCount else {
                throw RecordingError.layerCountMismatch(path: f.path, layers: f.layerCount, firstPath: first.path, firstLayers: first.layerCount)
            }
            for i in 0..<f.layerCount {
                guard f.channelCounts[i] == first.channelCounts[i], f.aShapes[i] == first.aShapes[i] else {
                    throw RecordingError.channelMismatch(path: f.path, layer: i, channels: f.channelCounts[i], aShape: f.aShapes[i], firstPath: first.path, firstChannels: first.channelCounts[i], firstAShape: first.aShapes[i])
                }
            }
            guard f.length == first.length else {
                throw RecordingError.sampleLengthMismatch(path: f.path, length: f.length, firstPath: first.path, firstLength: first.length)
            }
            if let fa = first.architecture, let ba = f.architecture, fa != ba {
                throw RecordingError.architectureMismatch(path: f.path, architecture: ba, firstPath: first.path, firstArchitecture: fa)
            }
        }
    }
}
