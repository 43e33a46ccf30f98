import Foundation
import Testing
@testable import LongMamba
import LongMambaKernels

@Suite struct RecordingTests {
    func layer(_ rng: inout SolverRNG, L: Int, C: Int, layerIndex: Int = 0) throws -> SortedDeltaLayer {
        var delta = [Float](repeating: 0, count: L * C)
        for c in 0..<C {
            let mu = -5 + 4 * rng.uniform(), sigma = 0.5 + 2 * rng.uniform()
            let row = rng.delta(L, mu: mu, sigma: sigma)
            for t in 0..<L { delta[t * C + c] = row[t] }
        }
        return try SortedDeltaLayer(layer: layerIndex, tokenMajorDelta: delta, length: L, channels: C, A: (0..<C).map { -Float($0 + 1) / 4 }, aShape: [C])
    }

    @Test func exactBlobRoundTripsBitForBit() throws {
        var rng = SolverRNG(1)
        let l = try layer(&rng, L: 50, C: 3)
        let blob = try DeltaBlob.encode(l, as: .exact)
        let back = try DeltaBlob.decode(blob, encoding: DeltaRepresentation.exactEncoding, layer: 0, length: 50, channels: 3, A: l.A, aShape: l.aShape)
        #expect(back == l)
    }

    @Test func sketchKeepsEveryValueWithinHalfAStepInLogAndFitsItsBudget() throws {
        var rng = SolverRNG(2)
        let L = 2048, C = 8
        var l = try layer(&rng, L: L, C: C)
        // add zeros and ties to one channel
        var sorted = l.sortedDelta
        for i in 0..<100 { sorted[L - 1 - i] = 0 }
        for i in 0..<50 { sorted[i] = sorted[50] }
        l = SortedDeltaLayer(layer: 0, length: L, channels: C, sortedDelta: sorted, A: l.A, aShape: l.aShape)
        for budget in [300, DeltaRepresentation.defaultSketchBytes, 1500] {
            for c in 0..<C {
                let row = l.sortedDelta[(c * L)..<((c + 1) * L)]
                let record = DeltaSketch.encode(sortedDescending: row, budget: budget)
                #expect(record.count <= budget)
                var reader = BitReader(record)
                let e = Int(try reader.read(bits: 5))
                var reader2 = BitReader(record)
                let back = try DeltaSketch.decode(&reader2, length: L)
                let (e1, e2) = DeltaSketch.exponents(e)
                let cut = DeltaSketch.split(length: L, positives: row.filter { $0 > 0 }.count)
                for (i, (x, y)) in zip(row, back).enumerated() {
                    // |ln Δ̂ − ln Δ| ≤ q/2 in each zone
                    let halfStep = exp2(-Double(i < cut ? e1 : e2)) / 2
                    if x == 0 { #expect(y == 0) } else {
                        #expect(abs(log(Double(y)) - log(Double(x))) <= halfStep + 1e-6, "channel \(c) position \(i)")
                    }
                }
                #expect(zip(back, back.dropFirst()).allSatisfy { $0 >= $1 })
            }
        }
    }

    @Test func sketchSizeIsCountedExactlyAndTheFinestFittingStepIsChosen() throws {
        var rng = SolverRNG(12)
        for trial in 0..<12 {
            let L = [7, 300, 2048][trial % 3]
            var row = rng.delta(L, mu: rng.uniform() * 6 - 5, sigma: rng.uniform() * 3)
            if trial % 4 == 0 { for i in 0..<(L / 5) { row[i] = 0 } }
            row.sort(by: >)
            let positives = row.prefix { $0 > 0 }.map { log(Double($0)) }[...]
            for e in 0...DeltaSketch.finestExponent {
                let written = DeltaSketch.encode(positives: positives, length: L, exponent: e).count
                #expect(DeltaSketch.encodedBytes(positives: positives, length: L, exponent: e) == written, "L \(L) e \(e)")
            }
            let budget = 200
            let record = DeltaSketch.encode(sortedDescending: row[...], budget: budget)
            var reader = BitReader(record)
            let e = Int(try reader.read(bits: 5))
            #expect(record.count <= budget || e == 0)
            if e < DeltaSketch.finestExponent {
                #expect(DeltaSketch.encodedBytes(positives: positives, length: L, exponent: e + 1) > budget, "L \(L): e \(e) is not the finest step that fits")
            }
        }
    }

    @Test func vectorisedSketchEncoderWritesTheSameBytesAsThePlainOne() {
        var rng = SolverRNG(31)
        var rows: [[Float]] = []
        for trial in 0..<40 {
            let L = [1, 2, 7, 129, 300, 2048, 4096][trial % 7]
            var row = rng.delta(L, mu: rng.uniform() * 8 - 6, sigma: rng.uniform() * 3)
            switch trial % 5 {
            case 0: for i in 0..<(L / 3) { row[i] = 0 }                                     // zeros
            case 1: for i in 0..<L where i % 3 == 0 { row[i] = row[0] }                     // ties
            case 2: for i in 0..<min(L, 40) { row[i] = Float(bitPattern: UInt32(1 + i * 977)) }  // subnormals
            case 3: for i in 0..<L { row[i] = 1.5 }                                         // one value
            default: break
            }
            rows.append(row.sorted(by: >))
        }
        rows.append([])
        rows.append([Float](repeating: 0, count: 64))
        rows.append([Float.greatestFiniteMagnitude, 1, Float.leastNonzeroMagnitude])
        for (r, row) in rows.enumerated() {
            for budget in [1, 40, 200, DeltaRepresentation.defaultSketchBytes, 5000] {
                let fast = DeltaSketch.encode(sortedDescending: row[...], budget: budget)
                let plain = DeltaSketch.referenceEncode(sortedDescending: row[...], budget: budget)
                #expect(fast == plain, "row \(r) (L \(row.count)) budget \(budget): \(fast.count) vs \(plain.count) bytes")
            }
        }
    }

    @Test func sketchLogarithmKernelIsTheScalarLogarithm() {
        var rng = SolverRNG(15)
        var x = (0..<5000).map { _ in Float(exp(rng.uniform() * 80 - 40)) }
        x += [Float.leastNonzeroMagnitude, Float.leastNormalMagnitude, 1, 1.4142135, 1.4142137, Float.greatestFiniteMagnitude, 3e-42]
        var out = [Double](repeating: 0, count: x.count)
        SketchKernels.logarithms(x, count: x.count, into: &out)
        for (v, l) in zip(x, out) { #expect(l == DeltaSketch.logarithm(v), "x = \(v)") }
    }

    @Test func sketchLogarithmAgreesWithTheSystemLogarithm() {
        var rng = SolverRNG(14)
        var worst = 0.0
        for _ in 0..<200_000 {
            let x = Float(exp(rng.uniform() * 60 - 40))   // 4e-18 … 2e8
            worst = max(worst, abs(DeltaSketch.logarithm(x) - log(Double(x))))
        }
        for x: Float in [1, 2, 0.5, .leastNormalMagnitude, .leastNonzeroMagnitude, 1.4142135, 1.4142137, .greatestFiniteMagnitude] {
            worst = max(worst, abs(DeltaSketch.logarithm(x) - log(Double(x))))
        }
        #expect(worst < 1e-13, "worst difference \(worst)")
    }

    @Test func bitReaderReadsBackWhatTheWriterWrote() throws {
        var rng = SolverRNG(13)
        var writer = BitWriter()
        var written: [(value: UInt64, bits: Int, rice: Int?)] = []
        for _ in 0..<5000 {
            if rng.int(0...1) == 0 {
                let bits = rng.int(1...64)
                let value = bits == 64 ? rng.next() : rng.next() & ((1 << UInt64(bits)) - 1)
                writer.write(value, bits: bits); written.append((value, bits, nil))
            } else {
                let k = rng.int(0...12)
                let value = rng.next() % (rng.int(0...1) == 0 ? 40 : 1 << 20)
                writer.writeRice(value, k: k); written.append((value, 0, k))
            }
        }
        var reader = BitReader(writer.finish())
        for (i, w) in written.enumerated() {
            let back = try w.rice.map { try reader.readRice(k: $0) } ?? reader.read(bits: w.bits)
            #expect(back == w.value, "item \(i)")
        }
        // Past the end: truncated at the byte after the last one.
        var short = BitReader(Data([0xFF, 0xFF]))
        #expect(throws: DeltaBlobError.truncated(byte: 2)) { try short.readRice(k: 0) }
        var exact = BitReader(Data([0xA5]))
        #expect(try exact.read(bits: 8) == 0xA5)
        #expect(throws: DeltaBlobError.truncated(byte: 1)) { try exact.read(bits: 1) }
    }

    /// 1.4B Mamba-1 (48 layers × 4096 channels × 5 samples × 2048 tokens) fits in 512 MB by construction;
    /// the thresholds re-solved from the sketch stay close to the exact ones (measured, see the report).
    @Test func sketchSizeBoundAndThresholdErrorOnMambaOneShapedData() throws {
        var rng = SolverRNG(3)
        let L = 2048, C = 24, K = 2
        let budget = DeltaRepresentation.defaultSketchBytes
        let exact = try (0..<K).map { _ in try layer(&rng, L: L, C: C) }
        // A 1.4B Mamba-1 run (48 layers × 4096 channels × 5 samples) at the measured blob size per
        // channel, plus A [4096, 16] f32 with each (sample, layer), fits in 512 MiB.
        let blobBytes = try exact.map { try DeltaBlob.encode($0, as: .sketch(bytesPerChannel: budget)).count }.max()!
        let perChannel = (blobBytes + C - 1) / C
        #expect(perChannel <= budget)
        #expect(48 * 4096 * 5 * perChannel + 48 * 5 * 4096 * 16 * 4 <= 512 * 1024 * 1024, "\(perChannel) B per channel")
        let sketched = try exact.map {
            try DeltaBlob.decode(try DeltaBlob.encode($0, as: .sketch(bytesPerChannel: budget)), encoding: DeltaRepresentation.sketchEncoding, layer: 0, length: L, channels: C, A: $0.A, aShape: $0.aShape)
        }
        var worst = 0.0, total = 0.0, count = 0
        for p in [0.05, 0.2] {
            for aggregation in Aggregation.allCases {
                let params = SolverParameters(clampFraction: p, aggregation: aggregation, interval: 1000, maxLength: 256_000, trainingLength: L)
                // Compare like with like: both solved from sorted curves (D summed over the sorted curve).
                let a = try DeltaThresholdSolver.solveLayer(samples: exact.map { SortedDeltaLayer(layer: 0, length: L, channels: C, sortedDelta: $0.sortedDelta, A: $0.A, aShape: $0.aShape) }, parameters: params)
                let b = try DeltaThresholdSolver.solveLayer(samples: sketched, parameters: params)
                for (x, y) in zip(a.deltaThreshold, b.deltaThreshold) where x > 0 {
                    let rel = Double(abs(x - y) / x)
                    worst = max(worst, rel); total += rel; count += 1
                }
            }
        }
        let mean = total / Double(count)
        print("sketch \(budget) B/channel: threshold relative error mean \(mean), max \(worst) over \(count) entries")
        #expect(mean < 1e-3)
        #expect(worst < 1e-2)
    }
}

@Suite struct RecorderTests {
    @Test func runnerRecorderFeedsTheStoreAndOnlyCompleteRunsSolve() throws {
        let dir = SyntheticRecordings.tempDir()
        let path = "\(dir)/cal.sqlite"
        let store = try CalibrationStore(path: path)
        let (L, C) = (40, 3)
        let sequences = (0..<2).map { k in (0..<L).map { Int32(k * L + $0) } }
        let run = try store.beginRun(NewRun(fingerprint: "runner-test", architecture: "mamba2", sampleCount: 2, sampleLength: L, layerCount: 2),
                                     sequences: sequences).run
        #expect(try store.sequences(run: run) == sequences)
        var rng = SolverRNG(4)
        var direct: [[SortedDeltaLayer]] = [[], []]
        for s in 0..<2 {
            var recorder = EncodingRecorder(sample: s, representation: .exact, layerCount: 2)
            for i in 0..<2 {
                let d = LayerDelta(layer: i, delta: rng.delta(L * C), length: L, channels: C, A: [-1, -2, -3], aShape: [C])
                try recorder.record(d)
                direct[i].append(try SortedDeltaLayer(layerDelta: d))
            }
            #expect(throws: StoreError.runNotComplete(path: path, run: run, status: .recording)) {
                try TableService(store: store).solve(run: run, clampFraction: 0.1, aggregation: .max, interval: 100, maxLength: 300)
            }
            #expect(throws: StoreError.incompleteRecordings(path: path, run: run, stored: 2 * s, expected: 4)) { try store.finishRun(run) }
            try store.commitSample(run: run, sample: s, layers: recorder.layers)
            #expect(try store.recordedSamples(run: run) == Set(0...s))
        }
        var bad = EncodingRecorder(sample: 0, representation: .exact, layerCount: 2)
        #expect(throws: SolverError.invalidDelta("sample 0: layer 0: Δ[token 0, channel 0] = -1.0; Δ = softplus(·) must be finite and ≥ 0 (check the runner's dt path)")) {
            try bad.record(LayerDelta(layer: 0, delta: [Float](repeating: -1, count: L * C), length: L, channels: C, A: [-1, -2, -3], aShape: [C]))
        }
        // A sample of the wrong length or outside the run is refused before anything is written.
        let short = try EncodedLayer(try SortedDeltaLayer(layerDelta: LayerDelta(layer: 1, delta: rng.delta(10 * C), length: 10, channels: C, A: [-1, -2, -3], aShape: [C])), as: .exact)
        #expect(throws: StoreError.sampleLengthMismatch(path: path, run: run, sample: 1, layer: 1, expected: L, found: 10)) {
            try store.commitSample(run: run, sample: 1, layers: [short])
        }
        #expect(throws: StoreError.sampleOutOfRange(path: path, run: run, sample: 2, layer: 1, sampleCount: 2, layerCount: 2)) {
            try store.commitSample(run: run, sample: 2, layers: [short])
        }
        try store.finishRun(run)
        // Committing again what is stored is a no-op (a second process of the same calibration);
        // a different Δ for a stored sample is refused, and nothing is added to a complete run.
        try store.commitSample(run: run, sample: 0, layers: [])
        let other = try EncodedLayer(try SortedDeltaLayer(layerDelta: LayerDelta(layer: 1, delta: rng.delta(L * C), length: L, channels: C, A: [-1, -2, -3], aShape: [C])), as: .exact)
        #expect(throws: StoreError.recordingDiffers(source: "this process", target: path, sample: 0, layer: 1)) { try store.commitSample(run: run, sample: 0, layers: [other]) }
        let id = try TableService(store: store).solve(run: run, clampFraction: 0.1, aggregation: .max, interval: 100, maxLength: 300)
        let params = try store.table(id).parameters
        for i in 0..<2 {
            #expect(try store.tableLayer(table: id, layer: i) == DeltaThresholdSolver.solveLayer(samples: direct[i], parameters: params))
        }
    }
}
