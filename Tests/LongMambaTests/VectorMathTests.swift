import Foundation
import Testing
@testable import LongMamba
@testable import LongMambaKernels

@Suite struct VectorMathTests {
    @Test func vectorExpLogAndSoftplusMatchLibm() {
        var worstExp: Float = 0, worstSoftplus: Float = 0, worstLog: Float = 0
        var x: Float = -80
        while x < 80 {
            let v = Vec16((0..<16).map { x + Float($0) * 0.0037 })
            let args = Vec16((0..<16).map { Foundation.exp(v[$0] * 0.5) + 0.01 })
            let e = exp16(v), s = softplus16(v), l = log16(args)
            for i in 0..<16 {
                worstExp = max(worstExp, abs(e[i] - Foundation.exp(v[i])) / Foundation.exp(v[i]))
                let sp = softplus(v[i])
                worstSoftplus = max(worstSoftplus, abs(s[i] - sp) / max(sp, .leastNormalMagnitude))
                let reference = Foundation.log(args[i])
                worstLog = max(worstLog, abs(l[i] - reference) / max(abs(reference), 1e-3))
            }
            x += 0.0613
        }
        #expect(worstExp < 4e-7)
        #expect(worstSoftplus < 1e-6)
        #expect(worstLog < 1e-6)
    }

    /// Δ = clamp(softplus(dt + bias)) of both mixers: the vector helper against its plain twin, on a
    /// strided dt (Mamba-2 reads the dt columns of in_proj's output) with channel counts that leave
    /// a short last block, with and without a dt limit.
    @Test(arguments: [5, 16, 24, 48])
    func softplusDeltaMatchesItsPlainFormula(channels: Int) {
        let rows = 37, stride = channels + 11
        let dt: [Float] = (0..<(rows * stride)).map { (i: Int) -> Float in Float((i * 7919) % 1000) / 1000 * 50 - 25 }   // [-25, 25)
        let bias = (0..<channels).map { Float($0) * 0.1 - 1 }
        for limit in [nil, (lower: Float(0.01), upper: Float(3))] as [(lower: Float, upper: Float)?] {
            let fast = softplusDelta(dt, rows: rows, channels: channels, stride: stride, bias: bias, limit: limit)
            let plain = referenceSoftplusDelta(dt, rows: rows, channels: channels, stride: stride, bias: bias, limit: limit)
            #expect(fast.count == rows * channels)
            var worst: Float = 0
            for i in fast.indices { worst = max(worst, abs(fast[i] - plain[i]) / max(plain[i], .leastNormalMagnitude)) }
            #expect(worst < 1e-6, "channels \(channels), limit \(String(describing: limit))")
            if let limit { #expect(fast.allSatisfy { $0 >= limit.lower && $0 <= limit.upper }) }
        }
        // A broken dt path stays visible: NaN is not clamped into range.
        var broken = dt
        broken[stride + channels - 1] = .nan
        let delta = softplusDelta(broken, rows: rows, channels: channels, stride: stride, bias: bias, limit: (0, .infinity))
        #expect(delta[2 * channels - 1].isNaN)
        #expect(delta.filter(\.isNaN).count == 1)
    }
}

/// SHA-256 from the system's libcrypto: the FIPS 180-2 vectors, streaming equal to one-shot,
/// and a copied hasher independent of the original (swift-crypto's value semantics).
/// −log softmax at each position (perplexity, scale calibration): the 16-lane kernel on all cores
/// against the plain f64 formula, on vocabularies that leave a short last block or none, with a
/// wide spread of logits; rows with NaN or ±∞ take the plain formula and give its value exactly.
@Suite struct NegativeLogLikelihoodTests {
    @Test(arguments: [1, 15, 16, 17, 300, 2048, 50_280])
    func vectorKernelMatchesThePlainFormula(vocab V: Int) {
        let rows = 40
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15 &+ UInt64(V)
        func uniform() -> Float { state = state &* 6364136223846793005 &+ 1442695040888963407; return Float(state >> 40) / Float(1 << 24) }
        // Rows of growing spread: from nearly flat to logits 120 apart (exp(x − m) underflows).
        var logits = [Float](repeating: 0, count: rows * V)
        for r in 0..<rows { for v in 0..<V { logits[r * V + v] = (uniform() - 0.5) * Float(r) * 3 + 7 } }
        let targets = (0..<rows).map { ($0 * 7919) % V }
        var fast = [Double](repeating: .nan, count: rows)
        logits.withUnsafeBufferPointer { x in targets.withUnsafeBufferPointer { y in fast.withUnsafeMutableBufferPointer { out in
            negativeLogLikelihoods(x.baseAddress!, rows: rows, vocab: V, targets: y.baseAddress!, into: out.baseAddress!)
        }}}
        var worst = 0.0
        for r in 0..<rows {
            let plain = logits.withUnsafeBufferPointer { referenceNegativeLogLikelihood($0.baseAddress! + r * V, vocab: V, target: targets[r]) }
            #expect(plain.isFinite && fast[r].isFinite)
            worst = max(worst, abs(fast[r] - plain) / max(1, abs(plain)))
        }
        #expect(worst < 1e-6, "worst relative difference \(worst)")
    }

    @Test func rowsWithNonFiniteLogitsGiveThePlainFormulasValue() {
        let V = 37
        var logits = (0..<(4 * V)).map { Float($0 % 11) * 0.3 }
        logits[0 * V + 5] = .nan            // row 0: NaN → NaN
        logits[1 * V + 36] = .infinity      // row 1 (in the short last block): +∞ → NaN (∞ − ∞)
        logits[2 * V + 3] = -.infinity      // row 2: −∞ is a token of probability 0; the row stays finite
        let targets = [1, 2, 4, 6]
        var fast = [Double](repeating: 0, count: 4)
        logits.withUnsafeBufferPointer { x in targets.withUnsafeBufferPointer { y in fast.withUnsafeMutableBufferPointer { out in
            negativeLogLikelihoods(x.baseAddress!, rows: 4, vocab: V, targets: y.baseAddress!, into: out.baseAddress!)
        }}}
        let plain = (0..<4).map { r in logits.withUnsafeBufferPointer { referenceNegativeLogLikelihood($0.baseAddress! + r * V, vocab: V, target: targets[r]) } }
        #expect(fast[0].isNaN && plain[0].isNaN)
        #expect(fast[1].isNaN && plain[1].isNaN)
        #expect(fast[2].isFinite && fast[2] == plain[2])
        #expect(abs(fast[3] - plain[3]) < 1e-6)
    }
}

@Suite struct SHA256Tests {
    @Test func knownVectorsStreamingAndCopies() {
        #expect(SHA256.hash(data: Data()).hexString == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hash(data: Data("abc".utf8)).hexString == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let long = Data("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        #expect(SHA256.hash(data: long).hexString == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        var h = SHA256()
        for chunk in stride(from: 0, to: long.count, by: 5) { h.update(data: long[chunk..<min(long.count, chunk + 5)]) }
        var copy = h
        #expect(h.finalize() == SHA256.hash(data: long))
        copy.update(data: Data("x".utf8))
        #expect(copy.finalize() == SHA256.hash(data: long + Data("x".utf8)))
        #expect(h.finalize() == SHA256.hash(data: long))   // the original is unchanged by its copy
    }
}

@Suite struct StateSpaceDualScanLaneTests {
    /// The fast SSD scan with 8 lanes (AVX2 builds) and 16 lanes (AVX-512 builds) computes every
    /// head-dim row with the same operations in the same order: the same bits, and the plain
    /// recurrence's values, for an odd length (the last-token path) and a carried state.
    @Test func eightAndSixteenLanesGiveTheSameBitsAsEachOtherAndTheReferenceValues() {
        let shape = SSDShape(heads: 4, headDim: 32, stateSize: 16, groups: 2)
        let L = 37
        var rng = SplitMix64(seed: 11)
        func uniform(_ lo: Float, _ hi: Float) -> Float { lo + (hi - lo) * Float(rng.next() >> 40) / Float(1 << 24) }
        let xBC = (0..<(L * shape.convDim)).map { _ in uniform(-1, 1) }
        let delta = (0..<(L * shape.heads)).map { _ in uniform(0.001, 0.3) }
        let A = (0..<shape.heads).map { _ in -uniform(0.5, 8) }, D = (0..<shape.heads).map { _ in uniform(-1, 1) }
        let initial = (0..<(shape.heads * shape.headDim * shape.stateSize)).map { _ in uniform(-0.5, 0.5) }
        func run(_ lanes: Int?) -> (y: [Float], state: [Float]) {
            var y = [Float](repeating: 0, count: L * shape.dInner), state = initial
            var scratch = [Float](repeating: 0, count: shape.scratchCount(length: L))
            if let lanes {
                StateSpaceDualScan.fast(xBC: xBC, delta: delta, length: L, shape: shape, A: A, D: D, ssm: &state, into: &y, scratch: &scratch, lanes: lanes)
            } else {
                StateSpaceDualScan.reference(xBC: xBC, delta: delta, length: L, shape: shape, A: A, D: D, ssm: &state, into: &y)
            }
            return (y, state)
        }
        let eight = run(8), sixteen = run(16), plain = run(nil)
        #expect(eight.y == sixteen.y && eight.state == sixteen.state)
        let worst = zip(eight.y, plain.y).map { abs($0 - $1) / max(1, abs($1)) }.max()!
        #expect(worst < 1e-5, "largest relative difference \(worst)")
        #expect(zip(eight.state, plain.state).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($1)) })
    }
}
