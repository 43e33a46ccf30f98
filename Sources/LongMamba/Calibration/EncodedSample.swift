// Δ of one sample in its stored representation: each layer is checked, sorted per channel and
// encoded as soon as the runner hands it over, so only the encoded form is kept until the
// sample is committed (CalibrationStore.commitSample, one transaction per sample).
import Foundation

extension EncodedLayer {
    /// Encodes one layer's Δ (sorted per channel) as `representation`.
    public init(_ layer: SortedDeltaLayer, as representation: DeltaRepresentation, parallel: Bool = true) throws {
        self.init(layer: layer.layer, length: layer.length, channels: layer.channels, encoding: representation.encodingName,
                  blob: try DeltaBlob.encode(layer, as: representation, parallel: parallel), A: layer.A, aShape: layer.aShape)
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
        let sorted = try SortedDeltaLayer(layerDelta: layerDelta, source: "sample \(sample)", keepTokenOrder: representation == .exact)
        layers.append(try EncodedLayer(sorted, as: representation))
        progress(.layer(sample: sample, layer: layerDelta.layer, layers: layerCount))
    }
}

/// `EncodingRecorder` off the runner's critical path: each layer's Δ is sorted and encoded on a
/// background queue while the runner computes the next layer. At most `backlog` layers wait
/// (memory stays bounded: each is L·C floats). `finish()` waits for the queue and returns the
/// encoded layers in layer order, or the first error.
final class PipelinedEncodingRecorder: DeltaRecorder, @unchecked Sendable {
    let sample: Int
    let representation: DeltaRepresentation
    let layerCount: Int
    let progress: (CalibrationEvent) -> Void
    private let queue = DispatchQueue(label: "longmamba.encode")
    private let slots: DispatchSemaphore
    private let lock = NSLock()
    // Guarded by `lock` (written on `queue`, read by `finish`).
    private var encoded: [EncodedLayer] = []
    private var failure: Error?

    init(sample: Int, representation: DeltaRepresentation, layerCount: Int, backlog: Int = 2,
         progress: @escaping (CalibrationEvent) -> Void = { _ in }) {
        self.sample = sample; self.representation = representation; self.layerCount = layerCount; self.progress = progress
        slots = DispatchSemaphore(value: max(1, backlog))
    }

    func record(_ layerDelta: LayerDelta) throws {
        if let failure = lock.withLock({ failure }) { throw failure }
        slots.wait()
        queue.async { [self] in
            defer { slots.signal() }
            do {
                // One thread: the runner keeps both cores busy; this queue fills the gaps.
                let sorted = try SortedDeltaLayer(layerDelta: layerDelta, source: "sample \(sample)", keepTokenOrder: representation == .exact, parallel: false)
                let layer = try EncodedLayer(sorted, as: representation, parallel: false)
                lock.withLock { encoded.append(layer) }
            } catch {
                lock.withLock { if failure == nil { failure = error } }
            }
        }
        progress(.layer(sample: sample, layer: layerDelta.layer, layers: layerCount))
    }

    /// Waits for the queued layers; their encodings in layer order.
    func finish() throws -> [EncodedLayer] {
        queue.sync {}
        return try lock.withLock {
            if let failure { throw failure }
            return encoded.sorted { $0.layer < $1.layer }
        }
    }
}

/// `calibrate`'s recording (forward + sort + encode of every layer, without the commit) timed on
/// the bench's token ids, inline and pipelined, for `bench` to print beside the plain prefill.
public enum RecordingBenchmark {
    public struct Result: Sendable {
        /// Best seconds of the recording with encoding on the runner's thread / on a background queue.
        public let inlineSeconds: Double
        public let pipelinedSeconds: Double
        public let representation: String
        /// One thread, per Δ value of the first layers: the transposition and sort, and the encoding.
        public let sortNanosecondsPerValue: Double
        public let encodeNanosecondsPerValue: Double
    }

    /// Records the first `layers` layers, then times their sort and encoding on one thread (best of `repeats`).
    static func stageTimes(model: MambaModel, ids: [Int], representation: DeltaRepresentation, layers: Int, repeats: Int) throws -> (sort: Double, encode: Double) {
        struct FirstLayers: DeltaRecorder {
            let keep: Int
            var layers: [LayerDelta] = []
            mutating func record(_ d: LayerDelta) throws { if layers.count < keep { layers.append(d) } }
        }
        var first = FirstLayers(keep: layers)
        try model.forward(tokens: ids, recorder: &first)
        let values = Double(first.layers.reduce(0) { $0 + $1.delta.count })
        var sort = Double.infinity, encode = Double.infinity
        for _ in 0..<max(1, repeats) {
            var start = DispatchTime.now().uptimeNanoseconds
            let sorted = try first.layers.map { try SortedDeltaLayer(layerDelta: $0, keepTokenOrder: representation == .exact, parallel: false) }
            sort = min(sort, Double(DispatchTime.now().uptimeNanoseconds - start) / values)
            start = DispatchTime.now().uptimeNanoseconds
            for layer in sorted { _ = try EncodedLayer(layer, as: representation, parallel: false) }
            encode = min(encode, Double(DispatchTime.now().uptimeNanoseconds - start) / values)
        }
        return (sort, encode)
    }

    public static func run(model: MambaModel, tokens: Int, repeats: Int) throws -> Result {
        let ids = (0..<tokens).map { ($0 * 7919 + 13) % model.config.vocabSize }
        let c = model.config
        let representation = DeltaRepresentation.automatic(architecture: c.architecture.rawValue, channels: c.channelCount)
        var inline = Double.infinity, pipelined = Double.infinity
        for _ in 0..<max(1, repeats) {
            var a = EncodingRecorder(sample: 0, representation: representation, layerCount: c.layerCount)
            var start = DispatchTime.now().uptimeNanoseconds
            try model.forward(tokens: ids, recorder: &a)
            inline = min(inline, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            var b = PipelinedEncodingRecorder(sample: 0, representation: representation, layerCount: c.layerCount)
            start = DispatchTime.now().uptimeNanoseconds
            try model.forward(tokens: ids, recorder: &b)
            _ = try b.finish()
            pipelined = min(pipelined, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        let stages = try stageTimes(model: model, ids: ids, representation: representation, layers: min(4, c.layerCount), repeats: repeats)
        return Result(inlineSeconds: inline, pipelinedSeconds: pipelined, representation: representation.encodingName,
                      sortNanosecondsPerValue: stages.sort, encodeNanosecondsPerValue: stages.encode)
    }
}
