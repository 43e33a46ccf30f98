// What the solver reads: one recorded sample of one layer, Δ sorted per channel (the curve the
// thresholds are read from). Exact recordings also keep Δ in token order, because the authors'
// code sums the decay budget D in token order and we match it to the bit; sketched recordings
// keep only the sorted curve (D is then summed over it, ≤ 1 ulp apart).
import Dispatch
import LongMambaKernels

/// One sample's Δ for one layer, each channel's Δ sorted in descending order.
public struct SortedDeltaLayer: Sendable, Equatable {
    public let layer: Int
    /// L: tokens in the sample.
    public let length: Int
    /// C: channels (Mamba-1 d_inner, Mamba-2 heads).
    public let channels: Int
    /// [C, L] channel-major, each row descending.
    public let sortedDelta: [Float]
    /// A: [C, N] (Mamba-1) or [C] (Mamba-2).
    public let A: [Float]
    public let aShape: [Int]
    /// Δ in token order, [C, L] channel-major, when the representation kept it (exact recordings).
    /// Only used to sum D in torch's order; without it D is summed over the sorted curve (≤ 1 ulp apart).
    public let tokenOrderDelta: [Float]?

    public init(layer: Int, length: Int, channels: Int, sortedDelta: [Float], A: [Float], aShape: [Int], tokenOrderDelta: [Float]? = nil) {
        self.layer = layer; self.length = length; self.channels = channels
        self.sortedDelta = sortedDelta; self.A = A; self.aShape = aShape; self.tokenOrderDelta = tokenOrderDelta
    }

    /// Sorts a token-major [L, C] Δ (as the model produces it) per channel, checking every value.
    /// - keepTokenOrder: also keep Δ in token order (the exact representation stores it; a sketch does not need it).
    /// - parallel: spread the channels over the cores (false on the recording's background queue,
    ///   which shares the cores with the runner).
    public init(layerDelta d: LayerDelta, source: String = "recording", keepTokenOrder: Bool = true, parallel: Bool = true) throws {
        try self.init(layer: d.layer, tokenMajorDelta: d.delta, length: d.length, channels: d.channels, A: d.A, aShape: d.aShape,
                      source: source, keepTokenOrder: keepTokenOrder, parallel: parallel)
    }

    public init(layer: Int, tokenMajorDelta delta: [Float], length L: Int, channels C: Int, A: [Float], aShape: [Int], source: String = "recording",
                keepTokenOrder: Bool = true, parallel: Bool = true) throws {
        guard L > 0, C > 0, delta.count == L * C else {
            throw SolverError.invalidDelta("\(source): layer \(layer): Δ has \(delta.count) values, expected L·C = \(L)·\(C)")
        }
        guard !aShape.isEmpty, aShape[0] == C, aShape.reduce(1, *) == A.count else {
            throw SolverError.invalidDelta("\(source): layer \(layer): A has shape \(aShape) (\(A.count) values), expected [\(C)] or [\(C), N]")
        }
        for (i, a) in A.enumerated() where !(a.isFinite && a <= 0) {
            throw SolverError.invalidDelta("\(source): layer \(layer): A[\(i)] = \(a) is not a finite value ≤ 0 (A = -exp(A_log))")
        }
        // First bad value in token order (the error names its position).
        if let bad = delta.withUnsafeBufferPointer({ SketchKernels.firstInvalidDelta($0.baseAddress!, count: $0.count) }) {
            throw SolverError.invalidDelta("\(source): layer \(layer): Δ[token \(bad / C), channel \(bad % C)] = \(delta[bad]); Δ = softplus(·) must be finite and ≥ 0 (check the runner's dt path)")
        }
        // Every value is written below (no zero fill of L·C floats first).
        var sorted = [Float](unsafeUninitializedCapacity: L * C) { _, initialised in initialised = L * C }
        var tokenOrder = [Float](repeating: 0, count: keepTokenOrder ? L * C : 0)
        sorted.withUnsafeMutableBufferPointer { sortedBuf in
        tokenOrder.withUnsafeMutableBufferPointer { tokenBuf in
            nonisolated(unsafe) let (sortedOut, tokenOut) = (sortedBuf, tokenBuf)
            // Groups of 8 channels are independent and write disjoint rows; a group reads Δ
            // one 32-byte run per token (a strided read per channel would touch a cache line per value)
            // into its sort keys ~bits(Δ + 0) (`+ 0` turns -0.0 into +0.0), [8, stride]. The rows are
            // padded by a cache line: with a stride of L = 2048 keys (8 KiB) all the rows would map to
            // the same L1 set and evict each other on every token (measured on L = 2048: 3.2 ns per value unpadded with 16 rows, 1.5 ns padded with 8).
            let group = 8, stride = L + 16
            delta.withUnsafeBufferPointer { delta in
                nonisolated(unsafe) let delta = delta
                forEachIndex((C + group - 1) / group, parallel: parallel) { g in
                    let c0 = g * group, width = min(group, C - c0)
                    let keys = UnsafeMutablePointer<UInt32>.allocate(capacity: width * stride)   // [width, stride]
                    let scratch = UnsafeMutablePointer<UInt32>.allocate(capacity: L)         // [L]
                    defer { keys.deallocate(); scratch.deallocate() }
                    SketchKernels.transposeToKeys(delta.baseAddress!, length: L, channels: C, first: c0, width: width, into: keys, rowStride: stride)
                    if keepTokenOrder {
                        for t in 0..<L { let from = t * C + c0; for j in 0..<width { tokenOut[(c0 + j) * L + t] = delta[from + j] } }
                    }
                    for j in 0..<width {
                        let row = keys + j * stride
                        KeySort.sortAscending(row, count: L, scratch: scratch)
                        SketchKernels.valuesFromKeys(row, count: L, into: sortedOut.baseAddress! + (c0 + j) * L)
                    }
                }
            }
        }}
        self.init(layer: layer, length: L, channels: C, sortedDelta: sorted, A: A, aShape: aShape, tokenOrderDelta: keepTokenOrder ? tokenOrder : nil)
    }
}


/// body(0 ..< n), on every core or on this thread.
func forEachIndex(_ n: Int, parallel: Bool, _ body: @Sendable (Int) -> Void) {
    if parallel { DispatchQueue.concurrentPerform(iterations: n, execute: body) } else { for i in 0..<n { body(i) } }
}
