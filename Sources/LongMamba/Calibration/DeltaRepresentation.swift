// How recorded Δ is kept in the store, so sweeps over p, aggregation and lengths never re-run the model.
//
// exact (encoding "exact-f32-v1"): Δ of every channel in token order, f32 [C, L] little-endian.
//   Lossless; the solver sorts it and sums D in torch's order (bit parity with the authors' code).
//   Used for Mamba-2 (channels are heads: small) and whenever asked for.
//
// sketch (encoding "logrice-v1"): per channel, the sorted Δ quantised in the log domain,
//   code_i = round(ln Δ_(i) / q),  q = 2^-e,  Δ̂_(i) = exp(code_i · q)   ⇒  |ln Δ̂ − ln Δ| ≤ q/2,
//   stored as the first code plus the gaps code_(i-1) − code_i ≥ 0 (sorted ⇒ non-negative),
//   Rice-coded in blocks of 128 gaps with the best Rice parameter per block. Zeros are counted.
//   The top half of the row uses q = 2^-e, the bottom half 2^-(e-3); e is the finest step
//   (from 20 down to 0) whose encoding fits the byte budget per channel, so the size is bounded by
//   construction; the error follows from the budget (see RecordingTests).
//
// Measured (one Mamba-1-1.4B-shaped layer: 4096 channels × 5 samples × 2048 tokens of synthetic
// softplus-normal Δ, default 460 B budget): 419 B per channel and sample on average; with A
// (256 KiB per recording) 48 layers store 48 × 9.9 MB ≈ 475 MB (453 MiB). Thresholds re-solved from
// the sketch vs exact: p = 0.2 / max: mean 9.2e-4, median 7.9e-4, p99 3.4e-3, max 1.7e-2 relative
// (37% of entries > 1e-3); p = 0.05 / mean: mean 3.8e-4, p99 1.4e-3, max 5.0e-3 (5% > 1e-3).
// The 1e-3 target is NOT met everywhere at this size: most entries sit on the clamp value, whose
// error is the top zone's q₁/2 ≈ 1e-3; the rest are one-point shifts of the crossing. A larger
// budget (--sketch-bytes) or `--representation exact` trades size for error.
import Dispatch
import Foundation
import LongMambaKernels

/// Which stored form to use for a layer's Δ.
public enum DeltaRepresentation: Sendable, Equatable, Codable {
    case exact
    /// Bounded sketch: at most `bytesPerChannel` bytes per channel and sample (plus a 5-byte header).
    case sketch(bytesPerChannel: Int)

    public static let exactEncoding = "exact-f32-v1"
    public static let sketchEncoding = "logrice-v1"
    /// Default budget: a 1.4B Mamba-1 calibration (48 layers × 4096 channels × 5 samples) stays under 512 MB
    /// by construction: 983,040 × 460 B of Δ + 240 × 256 KiB of A (stored with each recording) = 515 MB = 491 MiB.
    public static let defaultSketchBytes = 460

    /// Exact for Mamba-2 (heads) and small layers, a sketch for Mamba-1's many channels.
    public static func automatic(architecture: String?, channels: Int) -> DeltaRepresentation {
        if architecture == "mamba2" || channels <= 256 { return .exact }
        return .sketch(bytesPerChannel: defaultSketchBytes)
    }

    public var encodingName: String {
        switch self {
        case .exact: return DeltaRepresentation.exactEncoding
        case .sketch: return DeltaRepresentation.sketchEncoding
        }
    }
}

/// Why a stored Δ blob could not be encoded or decoded.
public enum DeltaBlobError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The exact representation was asked of a layer without token-order Δ.
    case tokenOrderMissing(layer: Int)
    /// An exact blob whose size is not L·C·4 bytes.
    case exactSizeMismatch(layer: Int, bytes: Int, expected: Int)
    /// An encoding name this version does not know.
    case unknownEncoding(layer: Int, encoding: String)
    /// A sketch record with more positive values than the row has.
    case tooManyPositives(claimed: Int, length: Int)
    /// A sketch blob that ends inside a record.
    case truncated(byte: Int)
    /// A Rice quotient that cannot come from the encoder.
    case corruptRiceCode(bit: Int)
    /// A decoded value that is not a step size (negative, NaN or infinite): a damaged blob.
    case invalidDelta(layer: Int, channel: Int, position: Int, value: Float)

    public var description: String {
        switch self {
        case let .tokenOrderMissing(layer):
            return "stored Δ blob: layer \(layer): the exact representation needs Δ in token order, which this input does not carry"
        case let .exactSizeMismatch(layer, bytes, expected):
            return "stored Δ blob: layer \(layer): exact blob has \(bytes) bytes, expected L·C·4 = \(expected)"
        case let .unknownEncoding(layer, encoding):
            return "stored Δ blob: layer \(layer): unknown encoding '\(encoding)' (known: \(DeltaRepresentation.exactEncoding), \(DeltaRepresentation.sketchEncoding)); written by a newer tool?"
        case let .tooManyPositives(claimed, length):
            return "stored Δ blob: sketch record claims \(claimed) positive values but L = \(length)"
        case let .truncated(byte):
            return "stored Δ blob: sketch blob ends early at byte \(byte) (truncated?)"
        case let .corruptRiceCode(bit):
            return "stored Δ blob: corrupt Rice code at bit \(bit)"
        case let .invalidDelta(layer, channel, position, value):
            return "stored Δ blob: layer \(layer), channel \(channel), position \(position): Δ = \(value) is not a step size (finite, ≥ 0); the blob is damaged"
        }
    }
}

/// Encodes and decodes one layer of one sample.
public enum DeltaBlob {
    /// Encodes a layer (from its sorted and, for exact, token-order Δ).
    public static func encode(_ layer: SortedDeltaLayer, as representation: DeltaRepresentation, parallel: Bool = true) throws -> Data {
        let L = layer.length, C = layer.channels
        switch representation {
        case .exact:
            guard let tokenOrder = layer.tokenOrderDelta else {
                throw DeltaBlobError.tokenOrderMissing(layer: layer.layer)
            }
            return tokenOrder.withUnsafeBytes { Data($0) }
        case .sketch(let budget):
            // Channels are independent: encode them in parallel, concatenate in channel order.
            var records = [Data](repeating: Data(), count: C)
            records.withUnsafeMutableBufferPointer { buf in
                nonisolated(unsafe) let out = buf
                forEachIndex(C, parallel: parallel) { c in
                    out[c] = DeltaSketch.encode(sortedDescending: layer.sortedDelta[(c * L)..<((c + 1) * L)], budget: budget)
                }
            }
            var out = Data(capacity: records.reduce(0) { $0 + $1.count })
            for r in records { out.append(r) }
            return out
        }
    }

    /// Decodes a layer blob written by `encode`.
    public static func decode(_ data: Data, encoding: String, layer: Int, length L: Int, channels C: Int, A: [Float], aShape: [Int]) throws -> SortedDeltaLayer {
        switch encoding {
        case DeltaRepresentation.exactEncoding:
            guard data.count == L * C * 4 else {
                throw DeltaBlobError.exactSizeMismatch(layer: layer, bytes: data.count, expected: L * C * 4)
            }
            var tokenOrder = [Float](repeating: 0, count: L * C)
            _ = tokenOrder.withUnsafeMutableBytes { data.copyBytes(to: $0) }
            if let bad = tokenOrder.firstIndex(where: { !($0 >= 0 && $0.isFinite) }) {
                throw DeltaBlobError.invalidDelta(layer: layer, channel: bad / L, position: bad % L, value: tokenOrder[bad])
            }
            var sorted = tokenOrder
            for c in 0..<C {
                var row = Array(sorted[(c * L)..<((c + 1) * L)])
                DeltaSort.sortDescending(&row)
                sorted.replaceSubrange((c * L)..<((c + 1) * L), with: row)
            }
            return SortedDeltaLayer(layer: layer, length: L, channels: C, sortedDelta: sorted, A: A, aShape: aShape, tokenOrderDelta: tokenOrder)
        case DeltaRepresentation.sketchEncoding:
            var sorted = [Float](repeating: 0, count: L * C)
            var reader = BitReader(data)
            for c in 0..<C {
                let row = try DeltaSketch.decode(&reader, length: L)
                if let bad = row.firstIndex(where: { !$0.isFinite }) {
                    throw DeltaBlobError.invalidDelta(layer: layer, channel: c, position: bad, value: row[bad])
                }
                sorted.replaceSubrange((c * L)..<((c + 1) * L), with: row)
            }
            return SortedDeltaLayer(layer: layer, length: L, channels: C, sortedDelta: sorted, A: A, aShape: aShape)
        default:
            throw DeltaBlobError.unknownEncoding(layer: layer, encoding: encoding)
        }
    }
}

/// The log-quantised, Rice-coded sorted Δ of one channel.
///
/// Two zones: the top half of the sorted row (where clamp values and most crossings lie) uses
/// the step q₁ = 2^-e, the bottom half q₂ = 2^-(e-3) (it mostly enters through sums, and its
/// rounding errors average out). e is the largest value (finest steps) that fits the budget.
public enum DeltaSketch {
    static let blockSize = 128
    static let finestExponent = 20
    static let zoneExponentDrop = 3

    /// Encodes a descending row with the finest steps that fit `budget` bytes (byte-aligned record).
    /// The vectorised loops of SketchKernels on per-row buffers; `referenceEncode` is the same
    /// encoder written plainly, and the tests check that both write the same bytes.
    public static func encode(sortedDescending row: ArraySlice<Float>, budget: Int) -> Data {
        var encoder = RowEncoder(row)
        // Same search as referenceEncode: from e = 8, jump by the estimate of one bit per value per step.
        var e = 8
        let size8 = encoder.bytes(exponent: e)
        e = min(finestExponent, max(0, e + Int((Double(budget - size8) * 8 / Double(max(encoder.n, 1))).rounded(.down))))
        var size = e == 8 ? size8 : encoder.bytes(exponent: e)
        while size > budget && e > 0 { e -= 1; size = encoder.bytes(exponent: e) }
        while e < finestExponent, encoder.bytes(exponent: e + 1) <= budget { e += 1 }
        return encoder.write(exponent: e)
    }

    /// One row's logarithms, and the codes, gaps and Rice parameters of the last two exponents
    /// counted (the search ends by counting e + 1 and then writes e: neither is quantised twice).
    struct RowEncoder {
        let length: Int
        /// Positive values (the row is descending: zeros sit at the end).
        let n: Int
        let cut: Int
        var logs: [Double]
        /// Codes, gaps and each block's Rice parameter at one exponent.
        struct Quantised {
            var exponent = -1
            var codes: [Int32]
            var gaps: [UInt32]
            /// k of each block of each zone, in writing order.
            var riceParameters: [Int] = []
        }
        var current: Quantised
        var previous: Quantised
        /// Sizes counted so far, by exponent (the search asks for some twice).
        var counted = [Int](repeating: -1, count: DeltaSketch.finestExponent + 1)

        init(_ row: ArraySlice<Float>) {
            length = row.count
            // First zero by bisection (descending, non-negative).
            var lo = row.startIndex, hi = row.endIndex
            while lo < hi { let mid = (lo + hi) / 2; if row[mid] > 0 { lo = mid + 1 } else { hi = mid } }
            n = lo - row.startIndex
            cut = DeltaSketch.split(length: length, positives: n)
            let count = n
            logs = [Double](unsafeUninitializedCapacity: count) { buf, initialised in
                if count > 0 {
                    row.withUnsafeBufferPointer { x in SketchKernels.logarithms(x.baseAddress!, count: count, into: buf.baseAddress!) }
                }
                initialised = count
            }
            current = Quantised(codes: [Int32](repeating: 0, count: n), gaps: [UInt32](repeating: 0, count: n))
            previous = Quantised(codes: [Int32](repeating: 0, count: n), gaps: [UInt32](repeating: 0, count: n))
        }

        /// The zones as ranges of positions, with their exponents.
        func zones(_ e: Int) -> [(Range<Int>, Int)] {
            let (e1, e2) = DeltaSketch.exponents(e)
            return [(0..<cut, e1), (cut..<n, e2)]
        }

        /// The blocks of Rice-coded gaps of a zone (its first code is stored whole).
        static func blocks(_ zone: Range<Int>) -> StrideTo<Int> { stride(from: zone.lowerBound + 1, to: zone.upperBound, by: DeltaSketch.blockSize) }

        /// `DeltaSketch.riceParameter` over the gaps of positions `block` (same search, same result).
        static func riceParameter(_ q: Quantised, _ block: Range<Int>) -> (k: Int, bits: Int) {
            q.gaps.withUnsafeBufferPointer { g in
                let p = g.baseAddress! + block.lowerBound
                let span = Int64(q.codes[block.lowerBound - 1]) - Int64(q.codes[block.upperBound - 1])
                let mean = span / Int64(block.count)
                var k = mean > 0 ? min(23, Int64.bitWidth - 1 - mean.leadingZeroBitCount) : 0
                var best = SketchKernels.riceBits(p, count: block.count, k: k)
                while k > 0 { let b = SketchKernels.riceBits(p, count: block.count, k: k - 1); if b <= best { best = b; k -= 1 } else { break } }
                while k < 23 { let b = SketchKernels.riceBits(p, count: block.count, k: k + 1); if b < best { best = b; k += 1 } else { break } }
                return (k, best)
            }
        }

        /// Quantises the row at exponent e into `current` (the last one moves to `previous`) and
        /// returns the record's size in bits.
        mutating func quantise(exponent e: Int) -> Int {
            swap(&current, &previous)
            current.exponent = e
            current.riceParameters.removeAll(keepingCapacity: true)
            var bits = 5 + 32
            for (zone, ez) in zones(e) where !zone.isEmpty {
                let scale = Foundation.exp2(Double(ez))
                logs.withUnsafeBufferPointer { l in current.codes.withUnsafeMutableBufferPointer { c in current.gaps.withUnsafeMutableBufferPointer { g in
                    SketchKernels.quantise(l.baseAddress! + zone.lowerBound, count: zone.count, scale: scale,
                                           codes: c.baseAddress! + zone.lowerBound, gaps: g.baseAddress! + zone.lowerBound)
                }}}
                bits += 64
                for start in RowEncoder.blocks(zone) {
                    let (k, blockBits) = RowEncoder.riceParameter(current, start..<min(zone.upperBound, start + DeltaSketch.blockSize))
                    current.riceParameters.append(k)
                    bits += 5 + blockBits
                }
            }
            return bits
        }

        /// The record's size at exponent e (as `encodedBytes`).
        mutating func bytes(exponent e: Int) -> Int {
            if counted[e] < 0 { counted[e] = (quantise(exponent: e) + 7) / 8 }
            return counted[e]
        }

        /// The record at exponent e (as `encode(positives:length:exponent:)`).
        mutating func write(exponent e: Int) -> Data {
            // The record's size is counted by the same code that writes it (tested against the plain encoder).
            if current.exponent != e {
                if previous.exponent == e { swap(&current, &previous) } else { counted[e] = (quantise(exponent: e) + 7) / 8 }
            }
            let size = bytes(exponent: e)
            let q = current
            var out = Data(count: size + 16)
            let written = out.withUnsafeMutableBytes { raw -> Int in
                var w = BitPacker(raw.bindMemory(to: UInt8.self).baseAddress!)
                w.write(UInt64(e), bits: 5)
                w.write(UInt64(n) >> 16, bits: 16); w.write(UInt64(n) & 0xFFFF, bits: 16)
                var block = 0
                for (zone, _) in zones(e) where !zone.isEmpty {
                    let first = UInt64(bitPattern: Int64(q.codes[zone.lowerBound]))
                    w.write(first >> 32, bits: 32); w.write(first & 0xFFFF_FFFF, bits: 32)
                    for start in RowEncoder.blocks(zone) {
                        let k = q.riceParameters[block]; block += 1
                        w.write(UInt64(k), bits: 5)
                        q.gaps.withUnsafeBufferPointer { g in w.writeRice(g.baseAddress! + start, count: min(zone.upperBound, start + DeltaSketch.blockSize) - start, k: k) }
                    }
                }
                return w.finish()
            }
            assert(written == size, "sketch record: wrote \(written) bytes, counted \(size)")
            return out.prefix(written)
        }
    }

    /// The plain encoder: `encode(sortedDescending:budget:)` without the kernels (for the tests).
    static func referenceEncode(sortedDescending row: ArraySlice<Float>, budget: Int) -> Data {
        // ln Δ once per channel; every exponent tried below quantises the same logarithms.
        let positives = row.prefix { $0 > 0 }.map { DeltaSketch.logarithm($0) }[...]
        // The largest e (finest step) that fits. The size grows with e by about one bit per value
        // per step (codes double, so do the gaps and the Rice remainders), so start from that
        // estimate and walk to the exact answer; sizes are counted, not written.
        let n = max(positives.count, 1)
        var e = 8
        let size8 = encodedBytes(positives: positives, length: row.count, exponent: e)
        e = min(finestExponent, max(0, e + Int((Double(budget - size8) * 8 / Double(n)).rounded(.down))))
        var size = encodedBytes(positives: positives, length: row.count, exponent: e)
        while size > budget && e > 0 { e -= 1; size = encodedBytes(positives: positives, length: row.count, exponent: e) }
        while e < finestExponent, encodedBytes(positives: positives, length: row.count, exponent: e + 1) <= budget { e += 1 }
        return encode(positives: positives, length: row.count, exponent: e)
    }

    /// The size `encode(positives:length:exponent:)` would return, without writing it.
    static func encodedBytes(positives: ArraySlice<Double>, length L: Int, exponent e: Int) -> Int {
        let cut = split(length: L, positives: positives.count)
        let (e1, e2) = exponents(e)
        let base = positives.startIndex
        let bits = 5 + 32 + zoneBits(positives[base..<(base + cut)], exponent: e1) + zoneBits(positives[(base + cut)...], exponent: e2)
        return (bits + 7) / 8
    }

    /// ln x for a positive finite float, within 1e-13 of `Foundation.log` (tested) at a fraction
    /// of its cost: x = m·2^k with m in [√½, √2), ln x = k·ln 2 + 2·atanh(s), s = (m−1)/(m+1),
    /// |s| ≤ 0.1716, the series to s^17 (next term < 3e-16). The sketch's codes round ln x / q
    /// with q ≥ 2^-20, so the difference can only move a value that sits on a rounding boundary.
    @inline(__always)
    static func logarithm(_ x: Float) -> Double {
        let bits = x.bitPattern
        var k = Int((bits >> 23) & 0xff) - 127
        var m = Double(Float(bitPattern: (bits & 0x007f_ffff) | 0x3f80_0000))   // [1, 2)
        if (bits >> 23) & 0xff == 0 { return Foundation.log(Double(x)) }           // subnormal
        if m > 1.4142135623730951 { m /= 2; k += 1 }
        let s = (m - 1) / (m + 1), s2 = s * s
        // 2·(s + s³/3 + s⁵/5 + … + s¹⁷/17), Horner in s².
        var p = 2.0 / 17
        p = p * s2 + 2.0 / 15; p = p * s2 + 2.0 / 13; p = p * s2 + 2.0 / 11; p = p * s2 + 2.0 / 9
        p = p * s2 + 2.0 / 7; p = p * s2 + 2.0 / 5; p = p * s2 + 2.0 / 3; p = p * s2 + 2
        return Double(k) * 0.6931471805599453 + s * p
    }

    /// The quantisation exponents (top zone, bottom zone) for a top-zone exponent e.
    static func exponents(_ e: Int) -> (Int, Int) { (e, max(e - zoneExponentDrop, 0)) }

    /// Positions [0, split) form the top zone.
    static func split(length L: Int, positives n: Int) -> Int { min(n, (L + 1) / 2) }

    /// `positives`: ln Δ of the positive values, in descending order.
    static func encode(positives: ArraySlice<Double>, length L: Int, exponent e: Int) -> Data {
        var w = BitWriter()
        w.write(UInt64(e), bits: 5)
        w.write(UInt64(positives.count), bits: 32)
        let cut = split(length: L, positives: positives.count)
        let (e1, e2) = exponents(e)
        let base = positives.startIndex
        writeZone(positives[base..<(base + cut)], exponent: e1, to: &w)
        writeZone(positives[(base + cut)...], exponent: e2, to: &w)
        return w.finish()
    }

    /// code_i = round(ln Δ_(i) / q), non-increasing (equal values may round apart: kept equal).
    static func codes(_ logValues: ArraySlice<Double>, exponent e: Int) -> [Int64] {
        let scale = Foundation.exp2(Double(e))   // 1/q, exact: x/q == x·2^e
        var codes = logValues.map { Int64(($0 * scale).rounded()) }
        for i in 1..<codes.count where codes[i] > codes[i - 1] { codes[i] = codes[i - 1] }
        return codes
    }

    /// Best Rice parameter k for the gaps codes[i−1] − codes[i], i in `block`, and its bit count
    /// bits(k) = Σ (1 + k + (g >> k)). bits falls then rises with k (Σ g>>k shrinks, n·k grows), so
    /// a local search from k ≈ log2(mean gap) finds the smallest k of least cost.
    static func riceParameter(_ codes: [Int64], block: Range<Int>) -> (k: Int, bits: Int) {
        @inline(__always) func bits(_ k: Int) -> Int {
            var total = block.count * (1 + k)
            for i in block { total += Int((codes[i - 1] - codes[i]) >> Int64(k)) }
            return total
        }
        let span = codes[block.lowerBound - 1] - codes[block.upperBound - 1]   // Σ gaps
        let mean = span / Int64(block.count)
        var k = mean > 0 ? min(23, Int64.bitWidth - 1 - mean.leadingZeroBitCount) : 0
        var best = bits(k)
        while k > 0 { let b = bits(k - 1); if b <= best { best = b; k -= 1 } else { break } }
        while k < 23 { let b = bits(k + 1); if b < best { best = b; k += 1 } else { break } }
        return (k, best)
    }

    /// Bits `writeZone` writes for these values.
    static func zoneBits(_ logValues: ArraySlice<Double>, exponent e: Int) -> Int {
        guard !logValues.isEmpty else { return 0 }
        let codes = codes(logValues, exponent: e)
        var bits = 64, i = 1
        while i < codes.count {
            let end = min(codes.count, i + blockSize)
            bits += 5 + riceParameter(codes, block: i..<end).bits
            i = end
        }
        return bits
    }

    /// First code, then the Rice-coded gaps per block of 128 with the block's best parameter.
    static func writeZone(_ logValues: ArraySlice<Double>, exponent e: Int, to w: inout BitWriter) {
        guard !logValues.isEmpty else { return }
        let codes = codes(logValues, exponent: e)
        w.write(UInt64(bitPattern: codes[0]), bits: 64)
        var i = 1
        while i < codes.count {
            let end = min(codes.count, i + blockSize)
            let k = riceParameter(codes, block: i..<end).k
            w.write(UInt64(k), bits: 5)
            for j in i..<end { w.writeRice(UInt64(codes[j - 1] - codes[j]), k: k) }
            i = end
        }
    }

    static func readZone(_ r: inout BitReader, count: Int, exponent e: Int, into out: inout [Float], at start: Int) throws {
        guard count > 0 else { return }
        let q = Foundation.exp2(-Double(e))
        var code = Int64(bitPattern: try r.read(bits: 64))
        out[start] = Float(Foundation.exp(Double(code) * q))
        var i = 1
        while i < count {
            let end = min(count, i + blockSize)
            let k = Int(try r.read(bits: 5))
            for j in i..<end {
                // Gaps are ≥ 0 and codes fit Int64 when the encoder wrote them; anything else is damage.
                let gap = try r.readRice(k: k)
                let (next, overflow) = code.subtractingReportingOverflow(Int64(truncatingIfNeeded: gap))
                guard gap <= UInt64(Int64.max), !overflow else { throw DeltaBlobError.corruptRiceCode(bit: r.bitPosition) }
                code = next
                // A zero gap repeats the value (no exp needed).
                out[start + j] = gap == 0 ? out[start + j - 1] : Float(Foundation.exp(Double(code) * q))
            }
            i = end
        }
    }

    /// Decodes one channel's record (L values, descending, zeros last).
    static func decode(_ r: inout BitReader, length L: Int) throws -> [Float] {
        let e = Int(try r.read(bits: 5))
        let n = Int(try r.read(bits: 32))
        guard n <= L else { throw DeltaBlobError.tooManyPositives(claimed: n, length: L) }
        var out = [Float](repeating: 0, count: L)
        let cut = split(length: L, positives: n)
        let (e1, e2) = exponents(e)
        try readZone(&r, count: cut, exponent: e1, into: &out, at: 0)
        try readZone(&r, count: n - cut, exponent: e2, into: &out, at: cut)
        // Zone boundary: the bottom zone's coarser rounding may round up past the top zone's last value.
        for i in max(cut, 1)..<max(n, 1) where out[i] > out[i - 1] { out[i] = out[i - 1] }
        r.alignToByte()
        return out
    }
}

/// MSB-first bit packing, the plain version (the reference encoder, tests); the fast encoder
/// writes the same bits with LongMambaKernels.BitPacker.
struct BitWriter {
    private var bytes: [UInt8] = []
    /// Pending bits, most significant first; `used` of them are valid.
    private var accumulator: UInt64 = 0
    private var used = 0

    mutating func writeBit(_ bit: Bool) { write(bit ? 1 : 0, bits: 1) }

    /// Writes the low `bits` bits of `value`, most significant first.
    mutating func write(_ value: UInt64, bits: Int) {
        var remaining = bits
        while remaining > 0 {
            let take = min(remaining, 56 - used)
            let chunk = (value >> UInt64(remaining - take)) & ((1 << UInt64(take)) &- 1)
            accumulator = (accumulator << UInt64(take)) | chunk
            used += take
            remaining -= take
            while used >= 8 {
                bytes.append(UInt8(truncatingIfNeeded: accumulator >> UInt64(used - 8)))
                used -= 8
            }
            accumulator &= (1 << UInt64(used)) &- 1
        }
    }

    /// Rice code: quotient in unary (ones then a zero), remainder in k bits.
    mutating func writeRice(_ value: UInt64, k: Int) {
        var quotient = value >> UInt64(k)
        while quotient >= 32 { write(0xFFFF_FFFF, bits: 32); quotient -= 32 }
        write(((1 << quotient) &- 1) << 1, bits: Int(quotient) + 1)   // quotient ones, then a zero
        if k > 0 { write(value & ((1 << UInt64(k)) - 1), bits: k) }
    }

    /// Pads to a whole byte (each channel record is byte-aligned).
    mutating func finish() -> Data {
        if used > 0 { bytes.append(UInt8(truncatingIfNeeded: accumulator << UInt64(8 - used))); accumulator = 0; used = 0 }
        return Data(bytes)
    }
}

struct BitReader {
    private let bytes: [UInt8]
    private(set) var bitPosition = 0

    init(_ data: Data) { bytes = [UInt8](data) }

    /// Bits left to read.
    private var remaining: Int { bytes.count * 8 - bitPosition }

    /// The next 57 or more bits, most significant first (zeros past the end: callers check `remaining`).
    @inline(__always) private func peek() -> UInt64 {
        let byte = bitPosition >> 3
        var w: UInt64 = 0
        if byte + 8 <= bytes.count {
            w = bytes.withUnsafeBytes { UInt64(bigEndian: $0.loadUnaligned(fromByteOffset: byte, as: UInt64.self)) }
        } else {
            for i in 0..<8 { w = (w << 8) | UInt64(byte + i < bytes.count ? bytes[byte + i] : 0) }
        }
        return w << UInt64(bitPosition & 7)
    }

    mutating func readBit() throws -> Bool { try read(bits: 1) == 1 }

    /// The next `bits` (≤ 64) bits as an integer, most significant first.
    mutating func read(bits: Int) throws -> UInt64 {
        if bits == 0 { return 0 }
        if bits > 56 {
            let high = try read(bits: bits - 32)
            return (high << 32) | (try read(bits: 32))
        }
        // The reader fails at the first bit past the end, which lies in byte `bytes.count`.
        guard bits <= remaining else { throw DeltaBlobError.truncated(byte: bytes.count) }
        let v = peek() >> UInt64(64 - bits)
        bitPosition += bits
        return v
    }

    /// Rice code: ones (the quotient) up to a zero, then k bits of remainder.
    mutating func readRice(k: Int) throws -> UInt64 {
        var quotient: UInt64 = 0
        while true {
            let left = remaining
            let ones = min((~peek()).leadingZeroBitCount, 56)
            guard ones < left else { throw DeltaBlobError.truncated(byte: bytes.count) }  // no terminating zero
            quotient += UInt64(ones)
            guard quotient < 1 << 40 else { throw DeltaBlobError.corruptRiceCode(bit: bitPosition + ones) }
            if ones < 56 { bitPosition += ones + 1; break }
            bitPosition += ones
        }
        let remainder = k > 0 ? try read(bits: k) : 0
        return (quotient << UInt64(k)) | remainder
    }

    mutating func alignToByte() { bitPosition = (bitPosition + 7) & ~7 }
}
