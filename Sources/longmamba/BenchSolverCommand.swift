import ArgumentParser
import Dispatch
import Foundation
import LongMamba

struct BenchSolverCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-solver",
        abstract: "Time the fast solver on a Mamba-1-1.4B-shaped synthetic recording; compare with the naive method on a subset.")

    @Option(help: "Layers.") var layers: Int = 48
    @Option(help: "Channels per layer (Mamba-1-1.4B: d_inner = 4096).") var channels: Int = 4096
    @Option(help: "Samples K.") var samples: Int = 5
    @Option(name: [.customLong("length"), .customLong("tokens")], help: "Tokens per sample L, k = ×1000 (--tokens: the old spelling).") var lengthOption: TokenCount = TokenCount(2048)
    @Option(name: .customLong("interval"), help: "Tabulation interval, k = ×1000.") var intervalOption: TokenCount = TokenCount(1000)
    @Option(name: .customLong("max-length"), help: "Longest tabulated length, k = ×1000.") var maxLengthOption: TokenCount = TokenCount(256_000)
    var tokens: Int { lengthOption.value }
    var interval: Int { intervalOption.value }
    var maxLength: Int { maxLengthOption.value }
    @Option(help: "Clamp fraction p.") var clamp: Double = 0.2
    @Option(name: .customLong("naive-channels"), help: "Channels of layer 0 also solved with the naive method.") var naiveChannels: Int = 4
    @Flag(help: "Also time the path users take: encode the samples as calibrate stores them (sketch), write a store, and solve the stored run (decode + solve + save).")
    var stored = false

    /// Synthetic Δ = softplus(μ_c + σ_c·z) with per-channel μ, σ; deterministic per (layer, sample, channel).
    static func syntheticRow(layer: Int, sample: Int, channel: Int, tokens L: Int) -> [Float] {
        var rng = SplitMix64(seed: UInt64(truncatingIfNeeded: (layer &* 1_000_003 &+ channel) &* 7919) &+ UInt64(sample) &* 0x9E37_79B9_7F4A_7C15)
        func next() -> Double { Double(rng.next() >> 11) / Double(1 << 53) }
        var chState = UInt64(truncatingIfNeeded: layer &* 31 &+ channel &* 131)
        chState = chState &* 0x9E37_79B9_7F4A_7C15
        let mu = -5 + 4 * Double(chState >> 11) / Double(1 << 53)
        let sigma = 0.5 + 2 * Double((chState &* 0xBF58_476D_1CE4_E5B9) >> 11) / Double(1 << 53)
        return (0..<L).map { _ in
            let z = (-2 * Foundation.log(max(next(), 1e-300))).squareRoot() * Foundation.cos(2 * .pi * next())
            return Float(Foundation.log1p(Foundation.exp(mu + sigma * z)))
        }
    }

    /// One synthetic recorded layer, sorted per channel as the store hands it to the solver.
    func syntheticLayer(layer: Int, sample s: Int) -> SortedDeltaLayer {
        let (L, C) = (tokens, channels)
        var sorted = [Float](repeating: 0, count: L * C)
        sorted.withUnsafeMutableBufferPointer { buf in
            nonisolated(unsafe) let out = buf
            DispatchQueue.concurrentPerform(iterations: C) { c in
                var row = BenchSolverCommand.syntheticRow(layer: layer, sample: s, channel: c, tokens: L)
                DeltaSort.sortDescending(&row)
                for t in 0..<L { out[c * L + t] = row[t] }
            }
        }
        return SortedDeltaLayer(layer: layer, length: L, channels: C, sortedDelta: sorted, A: (0..<(C * 16)).map { -Float($0 % 16 + 1) }, aShape: [C, 16])
    }

    func run() throws {
        let params = SolverParameters(clampFraction: clamp, aggregation: .max, interval: interval, maxLength: maxLength, trainingLength: tokens)
        try params.validate()
        let (L, C) = (tokens, channels)
        print("bench-solver: \(layers) layers × \(C) channels × \(samples) samples × \(L) tokens, lengths \(interval)…\(maxLength) (\(params.lengths.count)), p = \(clamp), \(ProcessInfo.processInfo.activeProcessorCount) cores")
        var prepTime = 0.0, solveTime = 0.0
        for layer in 0..<layers {
            let t0 = Date()
            // Synthetic recording, already sorted per channel as the store hands it to the solver.
            let sampleLayers: [SortedDeltaLayer] = (0..<samples).map { syntheticLayer(layer: layer, sample: $0) }
            let t1 = Date()
            let table = try DeltaThresholdSolver.solveLayer(samples: sampleLayers, parameters: params, method: .fast)
            let t2 = Date()
            prepTime += t1.timeIntervalSince(t0); solveTime += t2.timeIntervalSince(t1)
            if layer == 0 {
                print(String(format: "layer 0: synthetic Δ + sort %.2f s, fast solve %.2f s", t1.timeIntervalSince(t0), t2.timeIntervalSince(t1)))
                if naiveChannels > 0 {
                    let n = min(naiveChannels, C)
                    let lengths = params.lengths
                    let tn = Date()
                    var equal = true
                    for c in 0..<n {
                        let per = sampleLayers.map { sl in
                            DeltaThresholdSolver.solveChannel(sortedDescending: sl.sortedDelta[(c * L)..<((c + 1) * L)], A: sl.A[(c * 16)..<((c + 1) * 16)],
                                                              lengths: lengths, clampFraction: clamp, trainingLength: L, method: .naive)
                        }
                        let agg = DeltaThresholdSolver.aggregate(per, .max)
                        for t in lengths.indices where agg.deltaThreshold[t] != table.deltaThreshold[t * C + c] || agg.keptFraction[t] != table.keptFraction[t * C + c] { equal = false }
                    }
                    let naive = Date().timeIntervalSince(tn)
                    // How the fast search proved its crossings on this subset.
                    var proofs = [String: Int]()
                    for c in 0..<n {
                        for sl in sampleLayers {
                            let k = DeltaThresholdSolver.clampCount(length: L, clampFraction: clamp)
                            let curve = DeltaThresholdSolver.clamped(sortedDescending: sl.sortedDelta[(c * L)..<((c + 1) * L)], clampCount: k)
                            let D = DeltaThresholdSolver.decayBudget(curve)
                            for S in lengths where S > L { proofs[DeltaThresholdSolver.crossingProof(curve: curve, budget: D, length: S), default: 0] += 1 }
                        }
                    }
                    print("fast search proofs on the subset: " + proofs.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
                    let perChannel = naive / Double(n)
                    let fastPerChannel = t2.timeIntervalSince(t1) / Double(C) * Double(ProcessInfo.processInfo.activeProcessorCount)
                    print(String(format: "naive on %d channels × %d samples (1 core): %.2f s = %.3f s per channel; fast: %.5f s per channel per core; speed-up ≈ %.0f×; naive == fast on the subset: %@",
                                 n, samples, naive, perChannel, fastPerChannel, perChannel / fastPerChannel, equal ? "yes" : "NO"))
                    print(String(format: "naive extrapolated to the whole model on these cores: %.1f h", perChannel * Double(C * layers) / Double(ProcessInfo.processInfo.activeProcessorCount) / 3600))
                }
            }
        }
        print(String(format: "total: synthetic Δ + sort %.1f s, fast solve %.1f s (%.2f s per layer)", prepTime, solveTime, solveTime / Double(layers)))
        if stored { try storedRun(params) }
    }

    /// calibrate's representation and store, then `TableService.solve` as `calibrate`/`solve --run` run it.
    func storedRun(_ params: SolverParameters) throws {
        let L = tokens
        // calibrate's choice for Mamba-1's d_inner channels (the synthetic samples carry no token order for `exact`).
        let representation = DeltaRepresentation.sketch(bytesPerChannel: DeltaRepresentation.defaultSketchBytes)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("bench-solver-\(ProcessInfo.processInfo.processIdentifier)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try CalibrationStore(path: directory.appendingPathComponent("bench.sqlite").path)
        var new = NewRun(fingerprint: "bench-solver", architecture: "mamba", sampleCount: samples, sampleLength: L, layerCount: layers)
        new.description = "bench-solver synthetic"
        let run = try store.beginRun(new, sequences: Array(repeating: Array(repeating: Int32(0), count: L), count: samples)).run
        var encodeTime = 0.0, commitTime = 0.0
        var encoded = [[EncodedLayer]](repeating: [], count: samples)
        for layer in 0..<layers {
            for s in 0..<samples {
                let sample = syntheticLayer(layer: layer, sample: s)
                let t0 = Date()
                encoded[s].append(try EncodedLayer(sample, as: representation))
                encodeTime += Date().timeIntervalSince(t0)
            }
        }
        let t0 = Date()
        for s in 0..<samples { try store.commitSample(run: run, sample: s, layers: encoded[s]) }
        try store.finishRun(run)
        commitTime = Date().timeIntervalSince(t0)
        encoded = []
        let bytes = try store.recordingBytes(run: run)
        let t1 = Date()
        for layer in 0..<layers { _ = try store.layerSamples(run: run, layer: layer) }
        let decodeTime = Date().timeIntervalSince(t1)
        let t2 = Date()
        _ = try TableService(store: store).solve(run: run, parameters: params)
        let solveTime = Date().timeIntervalSince(t2)
        print(String(format: "stored run (%@, %.0f MB): encode %.1f s (%.3f s per layer and sample), commit %.1f s; decode alone %.1f s; stored-run solve (decode + solve + save) %.1f s (%.2f s per layer)",
                     representation.encodingName, Double(bytes) / 1e6, encodeTime, encodeTime / Double(layers * samples), commitTime, decodeTime, solveTime, solveTime / Double(layers)))
    }
}
