// `longmamba eval`: perplexity of vanilla and LongMamba inference on the same tokens at several
// lengths. A window of S tokens runs in chunks with carried state (memory stays bounded), and
// the LongMamba filter for S (the table row nearest S) is applied to every chunk of that window:
// the same as prefilling all S tokens at once.
import Foundation
import LongMambaKernels

/// One evaluated length.
public struct PerplexityPoint: Sendable, Codable, Equatable {
    public var length: Int
    public var windows: Int
    public var vanillaPerplexity: Double
    public var longMambaPerplexity: Double?
    /// Table row used (nearest tabulated length), when filtering applied.
    public var tabulatedLength: Int?
    /// Share of Δ kept in global channels (1 = nothing filtered).
    public var keptShare: Double?
    public var globalChannels: Int?
    /// With `--by-position N`: perplexity of the predictions of positions [start, end) of the window.
    public var byPosition: [PositionBucket]?
}

/// Perplexity over one span of positions inside the windows of one length.
public struct PositionBucket: Sendable, Codable, Equatable {
    public var start: Int
    public var end: Int
    public var vanillaPerplexity: Double
    public var longMambaPerplexity: Double?
}

/// Everything `eval` measured, as written to JSON.
public struct PerplexityResults: Sendable, Codable {
    public var model: String
    public var modelFingerprint: String
    public var text: String
    public var theta: Double?
    public var table: String?
    /// Content hash of the table applied (nil: vanilla only, or results of an older tool).
    public var tableContentHash: String?
    public var filterFromLength: Int?
    /// How global channels were filtered, where not dt_thre (absent: dt_thre, or results of an older tool).
    public var method: String?
    public var points: [PerplexityPoint]

    public init(model: String, modelFingerprint: String, text: String, theta: Double?, table: String?, tableContentHash: String? = nil,
                filterFromLength: Int?, points: [PerplexityPoint]) {
        self.model = model; self.modelFingerprint = modelFingerprint; self.text = text; self.theta = theta
        self.table = table; self.tableContentHash = tableContentHash; self.filterFromLength = filterFromLength; self.points = points
    }

    /// Reads snake_case keys, and the camelCase keys of files written before (unchanged by the conversion).
    static var decoder: JSONDecoder { let d = JSONDecoder(); d.keyDecodingStrategy = .convertFromSnakeCase; return d }

    public static func load(_ path: String) throws -> PerplexityResults {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw EvaluationError.unreadableResults(path: path)
        }
        do { return try Self.decoder.decode(PerplexityResults.self, from: data) } catch {
            throw EvaluationError.notEvaluationResults(path: path, detail: SystemMessage.of(error))
        }
    }

    public func json() throws -> Data {
        // snake_case keys, as every JSON the tool writes (lookup, recording, exports).
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        e.keyEncodingStrategy = .convertToSnakeCase
        return try e.encode(self)
    }

    public var csv: String {
        if points.contains(where: { $0.byPosition != nil }) {
            // --by-position: one row per (length, bucket of positions).
            var s = "length,position_start,position_end,vanilla_perplexity,longmamba_perplexity\n"
            for p in points { for b in p.byPosition ?? [] {
                s += "\(p.length),\(b.start),\(b.end),\(b.vanillaPerplexity),\(b.longMambaPerplexity.map { "\($0)" } ?? "")\n"
            } }
            return s
        }
        var s = "length,windows,vanilla_perplexity,longmamba_perplexity,tabulated_length,kept_share,global_channels\n"
        for p in points {
            s += "\(p.length),\(p.windows),\(p.vanillaPerplexity),\(p.longMambaPerplexity.map { "\($0)" } ?? ""),"
            s += "\(p.tabulatedLength.map(String.init) ?? ""),\(p.keptShare.map { "\($0)" } ?? ""),\(p.globalChannels.map(String.init) ?? "")\n"
        }
        return s
    }

    public var curve: CalibrationReport.PerplexityCurve {
        CalibrationReport.PerplexityCurve(lengths: points.map(\.length), vanilla: points.map(\.vanillaPerplexity),
                                          longMamba: points.map(\.longMambaPerplexity), method: method)
    }
}

public struct PerplexityEvaluation: TableEvaluationSettings {
    public var model: MambaModel
    public var table: (any PrefillTableSource)?
    public var theta: Double = GlobalChannels.defaultTheta
    /// Filter only windows of at least this many tokens (default 1.5 × the table's training
    /// length: the authors filter from 3k tokens on a 2k model).
    public var filterFromLength: Int?
    /// Use the largest tabulated length for longer windows instead of refusing.
    public var allowBeyondTable = false
    /// Windows per length (evenly spaced over the tokens; 1 = the first window).
    public var windows = 1
    /// Tokens per forward chunk (memory: chunk × vocabulary logits).
    public var chunk = 1024
    /// Also report perplexity in buckets of this many positions (nil: only the whole window).
    public var bucketSize: Int?
    /// false: skip the vanilla pass (`tune` stores vanilla once); vanilla figures are then NaN.
    public var includeVanilla = true
    /// How global channels are filtered; a whole-prompt method runs each filtered window in one piece.
    public var method = LongMambaMethod.dtThre

    public init(model: MambaModel, table: (any PrefillTableSource)? = nil) { self.model = model; self.table = table }

    /// Mean negative log-likelihood (nats) of tokens[1...] given their prefixes, and its count;
    /// `positions[t]` += −log p(token t+1 | tokens ≤ t) when given.
    func negativeLogLikelihood(_ tokens: [Int], deltaFilter: DeltaFilter?, layerScales: LayerScales? = nil, positions: UnsafeMutablePointer<Double>? = nil,
                               wholePrompt: Bool = false) throws -> (sum: Double, count: Int) {
        let chunk = wholePrompt ? tokens.count : self.chunk
        var state = SequenceState(layerCount: model.config.layerCount)
        var none = DiscardingRecorder()
        var sum = 0.0, count = 0
        let V = model.config.paddedVocabSize
        var start = 0
        while start < tokens.count {
            let end = min(tokens.count, start + chunk)
            let logits = try model.forward(tokens: Array(tokens[start..<end]), continuing: &state, recorder: &none,
                                           computeLogits: true, deltaFilter: deltaFilter, layerScales: layerScales)
            // Positions start..<scored have a next token to predict (all but the prompt's last).
            let scored = min(end, tokens.count - 1)
            if scored > start {
                let targets = Array(tokens[(start + 1)...scored])               // [scored − start]
                var nll = [Double](repeating: 0, count: scored - start)              // [scored − start]
                logits.withUnsafeBufferPointer { x in targets.withUnsafeBufferPointer { y in nll.withUnsafeMutableBufferPointer { out in
                    negativeLogLikelihoods(x.baseAddress!, rows: scored - start, vocab: V, targets: y.baseAddress!, into: out.baseAddress!)
                }}}
                // Summed in position order on this thread: the total does not depend on the cores.
                for (i, value) in nll.enumerated() {
                    sum += value
                    positions?[start + i] += value
                }
                count += scored - start
            }
            start = end
        }
        return (sum, count)
    }

    /// Evaluates every length on `windows` windows of `tokens`.
    public func run(tokens: [Int], lengths: [Int], progress: (String) -> Void = { _ in }) throws -> [PerplexityPoint] {
        guard theta > 0 else { throw EvaluationError.nonPositiveTheta(theta) }
        if let bucketSize, bucketSize < 1 { throw EvaluationError.badBucketSize(bucketSize) }
        var points: [PerplexityPoint] = []
        for S in lengths {
            guard S >= 2 else { throw EvaluationError.lengthTooShort(S) }
            guard tokens.count >= S else {
                throw EvaluationError.textTooShort(tokens: tokens.count, length: S)
            }
            let prefill = try table.map {
                try LongMambaPrefill(table: $0, model: model, length: S, theta: theta, filterFrom: filterFromLength, allowBeyondTable: allowBeyondTable, method: method)
            }
            let filter = prefill?.run?.filter
            let scales = prefill?.scales   // a scale table's s_l at S (filter is then nil)
            let active = prefill?.isActive ?? false
            let tabulated = prefill?.tabulatedLength
            let offsets = windows <= 1 || tokens.count == S ? [0] : (0..<windows).map { $0 * (tokens.count - S) / (windows - 1) }
            var vanilla = (sum: 0.0, count: 0), filtered = (sum: 0.0, count: 0)
            var kept = 0.0, runs = 0
            // Σ over windows of −log p at each position: [S − 1] (only when bucketing)
            let positions = bucketSize == nil ? 0 : S - 1
            var vanillaAt = [Double](repeating: 0, count: positions), filteredAt = [Double](repeating: 0, count: positions)
            for (w, offset) in offsets.enumerated() {
                progress("length \(S): window \(w + 1)/\(offsets.count)")
                let window = Array(tokens[offset..<(offset + S)])
                if includeVanilla || !active {  // below the filter start LongMamba is this same pass
                    let v = try vanillaAt.withUnsafeMutableBufferPointer { try negativeLogLikelihood(window, deltaFilter: nil, positions: positions > 0 ? $0.baseAddress : nil) }
                    vanilla.sum += v.sum; vanilla.count += v.count
                }
                if let scales {
                    let f = try filteredAt.withUnsafeMutableBufferPointer { try negativeLogLikelihood(window, deltaFilter: nil, layerScales: scales,
                                                                                                             positions: positions > 0 ? $0.baseAddress : nil) }
                    filtered.sum += f.sum; filtered.count += f.count
                    kept += 1; runs += 1
                } else if let filter {
                    let run = LongMambaFilterRun(filter: filter)
                    let f = try filteredAt.withUnsafeMutableBufferPointer { try negativeLogLikelihood(window, deltaFilter: run.deltaFilter, positions: positions > 0 ? $0.baseAddress : nil,
                                                                                                             wholePrompt: method.needsWholePrompt) }
                    if run.piecewise { throw EvaluationError.wholePromptInPieces(method: filter.method.rawValue) }
                    filtered.sum += f.sum; filtered.count += f.count
                    kept += run.keptShare; runs += 1
                }
            }
            var point = PerplexityPoint(length: S, windows: offsets.count, vanillaPerplexity: includeVanilla || !active ? Foundation.exp(vanilla.sum / Double(vanilla.count)) : .nan)
            if table != nil {
                // Below the filtering start LongMamba is vanilla.
                point.longMambaPerplexity = active ? Foundation.exp(filtered.sum / Double(filtered.count)) : point.vanillaPerplexity
                point.tabulatedLength = tabulated
                point.keptShare = runs > 0 ? kept / Double(runs) : 1
                point.globalChannels = filter?.globalChannelCounts.reduce(0, +)
            }
            if let N = bucketSize {
                point.byPosition = stride(from: 0, to: S - 1, by: N).map { start in
                    let end = min(S - 1, start + N), n = Double((end - start) * offsets.count)
                    var b = PositionBucket(start: start, end: end, vanillaPerplexity: Foundation.exp(vanillaAt[start..<end].reduce(0, +) / n))
                    if table != nil {
                        b.longMambaPerplexity = active ? Foundation.exp(filteredAt[start..<end].reduce(0, +) / n) : b.vanillaPerplexity
                    }
                    return b
                }
            }
            points.append(point)
        }
        return points
    }
}
