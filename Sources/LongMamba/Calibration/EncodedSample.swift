// Δ of one sample in its stored representation: each layer is checked, sorted per channel and
// encoded as soon as the runner hands it over, so only the encoded form is kept until the
// sample is committed (CalibrationStore.commitSample, one transaction per sample).
import Foundation

extension EncodedLayer {
    /// Encodes one layer's Δ (sorted per channel) as `representation`.
    public init(_ layer: SortedDeltaLayer, as representation: DeltaRepresentation) throws {
        self.init(layer: layer.layer, length: layer.length, channels: layer.channels, encoding: representation.encodingName,
                  blob: try DeltaBlob.encode(layer, as: representation), A: layer.A, aShape: layer.aShape)
    }
}

/// The runner's recorder for one calibration sample: encodes each layer's Δ on arrival.
struct EncodingRecorder: DeltaRecorder {
    let sample: Int
    let representation: DeltaRepresentation
    let layerCount: Int
    let progress: (CalibrationEvent) -> Void
    private(set) var layers: [EncodedLayer] = []

    init(sample: Int, representation: DeltaRepresentation, layerCount: Int, progress: @escaping (CalibrationEvent) -> Void = { _ in }) {
        self.sample = sample; self.representation = representation; self.layerCount = layerCount; self.progress = progress
    }

    mutating func record(_ layerDelta: LayerDelta) throws {
        let sorted = try SortedDeltaLayer(layerDelta: layerDelta, source: "sample \(sample)")
        layers.append(try EncodedLayer(sorted, as: representation))
        progress(.layer(sample: sample, layer: layerDelta.layer, layers: layerCount))
    }
}
