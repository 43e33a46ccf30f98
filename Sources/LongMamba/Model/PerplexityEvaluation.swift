// `longmamba eval`: perplexity of vanilla and LongMamba inference on the same tokens at several
// lengths. A window of S tokens runs in chunks with carried state (memory stays bounded), and
// the LongMamba filter for S (the table row nearest S) is applied to every chunk of that window:
// the same as prefilling all S tokens at once.
import Foundation

/// Where LongMamba thresholds come from: a table in the store or an exported safetensors table.
public protocol ThresholdTableSource {
    var modelFingerprint: String? { get }
    var trainingLength: Int { get }
    var lengths: [Int] { get }
    /// Thresholds at the tabulated length nearest `length` (the lookup's rounding rule) and the
    /// global-channel mask for θ.
    func filter(length: Int, theta: Float) throws -> (filter: LongMambaFilter, tabulatedLength: Int)
}

/// A table stored in the SQLite store.
public struct StoredTableSource: ThresholdTableSource {
    public let store: CalibrationStore
    public let table: Int64
    private let info: ThresholdTableInfo
    public init(store: CalibrationStore, table: Int64) throws {
        self.store = store; self.table = table; info = try store.table(table)
    }
    public var modelFingerprint: String? { info.modelFingerprint }
    public var trainingLength: Int { info.parameters.trainingLength }
    public var lengths: [Int] { info.lengths }
    public func filter(length: Int, theta: Float) throws -> (filter: LongMambaFilter, tabulatedLength: Int) {
        let result = try store.lookup(table: table, length: length, theta: Double(theta))
        let layers = result.layers.map { LongMambaFilter.Layer(deltaThreshold: $0.deltaThreshold, globalChannel: $0.cumulativeDecay.map { $0 > theta }) }
        return (LongMambaFilter(layers: layers), result.length)
    }
}

/// A table exported with `longmamba export --format safetensors` (or written by another tool in
/// that format): lengths i64 [T], layer.{i}.threshold f32 [T, C], layer.{i}.cumulative_decay f32 [C].
public struct ExportedTableSource: ThresholdTableSource {
    public let file: SafetensorsFile
    public let lengths: [Int]
    public let layerCount: Int
    public init(path: String) throws {
        file = try SafetensorsFile(path: path)
        lengths = try file.integers("lengths")
        var n = 0
        while file.info("layer.\(n).threshold") != nil { n += 1 }
        guard n > 0 else { throw SafetensorsError.notATableExport(path: path) }
        layerCount = n
    }
    public var modelFingerprint: String? { file.metadata["model_fingerprint"] }
    public var trainingLength: Int { Int(file.metadata["training_length"] ?? "") ?? 0 }
    public func filter(length: Int, theta: Float) throws -> (filter: LongMambaFilter, tabulatedLength: Int) {
        guard let index = LengthRounding.nearestIndex(of: length, in: lengths) else {
            throw SafetensorsError.emptyTensor(path: file.path, tensor: "lengths")
        }
        var thresholds: [[Float]] = [], decays: [[Float]] = []
        for i in 0..<layerCount {
            let decay = try file.floats("layer.\(i).cumulative_decay")
            let all = try file.floats("layer.\(i).threshold")
            let C = decay.count
            guard all.count == lengths.count * C else {
                throw SafetensorsError.valueCountMismatch(path: file.path, tensor: "layer.\(i).threshold", count: all.count, rows: lengths.count, columns: C)
            }
            thresholds.append(Array(all[(index * C)..<((index + 1) * C)]))
            decays.append(decay)
        }
        return (try LongMambaFilter(deltaThresholds: thresholds, cumulativeDecays: decays, theta: theta), lengths[index])
    }
}

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
}

/// Everything `eval` measured, as written to JSON.
public struct PerplexityResults: Sendable, Codable {
    public var model: String
    public var modelFingerprint: String
    public var text: String
    public var theta: Double?
    public var table: String?
    public var filterFromLength: Int?
    public var points: [PerplexityPoint]

    public init(model: String, modelFingerprint: String, text: String, theta: Double?, table: String?, filterFromLength: Int?, points: [PerplexityPoint]) {
        self.model = model; self.modelFingerprint = modelFingerprint; self.text = text; self.theta = theta
        self.table = table; self.filterFromLength = filterFromLength; self.points = points
    }

    public static func load(_ path: String) throws -> PerplexityResults {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ModelRunError.unreadableResults(path: path)
        }
        do { return try JSONDecoder().decode(PerplexityResults.self, from: data) } catch {
            throw ModelRunError.notEvaluationResults(path: path, reason: error.localizedDescription)
        }
    }

    public func json() throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try e.encode(self)
    }

    public var csv: String {
        var s = "length,windows,vanilla_perplexity,longmamba_perplexity,tabulated_length,kept_share,global_channels\n"
        for p in points {
            s += "\(p.length),\(p.windows),\(p.vanillaPerplexity),\(p.longMambaPerplexity.map { "\($0)" } ?? ""),"
            s += "\(p.tabulatedLength.map(String.init) ?? ""),\(p.keptShare.map { "\($0)" } ?? ""),\(p.globalChannels.map(String.init) ?? "")\n"
        }
        return s
    }

    public var curve: CalibrationReport.PerplexityCurve {
        CalibrationReport.PerplexityCurve(lengths: points.map(\.length), vanilla: points.map(\.vanillaPerplexity),
                                          longMamba: points.map(\.longMambaPerplexity))
    }
}

public struct PerplexityEvaluation {
    public var model: MambaModel
    public var table: (any ThresholdTableSource)?
    public var theta: Float = 0.05
    /// Filter only windows of at least this many tokens (default 1.5 × the table's training
    /// length: the authors filter from 3k tokens on a 2k model).
    public var filterFromLength: Int?
    /// Use the largest tabulated length for longer windows instead of refusing.
    public var allowBeyondTable = false
    /// Windows per length (evenly spaced over the tokens; 1 = the first window).
    public var windows = 1
    /// Tokens per forward chunk (memory: chunk × vocabulary logits).
    public var chunk = 1024

    public init(model: MambaModel, table: (any ThresholdTableSource)? = nil) { self.model = model; self.table = table }

    /// Mean negative log-likelihood (nats) of tokens[1...] given their prefixes, and its count.
    func negativeLogLikelihood(_ tokens: [Int], deltaFilter: DeltaFilter?) throws -> (sum: Double, count: Int) {
        var state = SequenceState(layerCount: model.config.layerCount)
        var none = DiscardingRecorder()
        var sum = 0.0, count = 0
        let V = model.config.paddedVocabSize
        var start = 0
        while start < tokens.count {
            let end = min(tokens.count, start + chunk)
            let logits = try model.forward(tokens: Array(tokens[start..<end]), continuing: &state, recorder: &none,
                                           computeLogits: true, deltaFilter: deltaFilter)
            for t in start..<end where t + 1 < tokens.count {
                let row = (t - start) * V
                var maxLogit = -Float.infinity
                for v in 0..<V { maxLogit = max(maxLogit, logits[row + v]) }
                var z = 0.0
                for v in 0..<V { z += Foundation.exp(Double(logits[row + v] - maxLogit)) }
                sum += Foundation.log(z) + Double(maxLogit) - Double(logits[row + tokens[t + 1]])   // −log softmax
                count += 1
            }
            start = end
        }
        return (sum, count)
    }

    /// Evaluates every length on `windows` windows of `tokens`.
    public func run(tokens: [Int], lengths: [Int], progress: (String) -> Void = { _ in }) throws -> [PerplexityPoint] {
        guard theta > 0 else { throw LongMambaFilterError.invalidTheta(theta) }
        var points: [PerplexityPoint] = []
        for S in lengths {
            guard S >= 2 else { throw ModelRunError.lengthTooShort(length: S) }
            guard tokens.count >= S else {
                throw ModelRunError.notEnoughTokens(available: tokens.count, length: S)
            }
            let prefill = try table.map {
                try LongMambaPrefill(table: $0, model: model, length: S, theta: theta, filterFrom: filterFromLength, allowBeyondTable: allowBeyondTable)
            }
            let filter = prefill?.run?.filter
            let tabulated = prefill?.tabulatedLength
            let offsets = windows <= 1 || tokens.count == S ? [0] : (0..<windows).map { $0 * (tokens.count - S) / (windows - 1) }
            var vanilla = (sum: 0.0, count: 0), filtered = (sum: 0.0, count: 0)
            var kept = 0.0, runs = 0
            for (w, offset) in offsets.enumerated() {
                progress("length \(S): window \(w + 1)/\(offsets.count)")
                let window = Array(tokens[offset..<(offset + S)])
                let v = try negativeLogLikelihood(window, deltaFilter: nil)
                vanilla.sum += v.sum; vanilla.count += v.count
                if let filter {
                    let run = LongMambaFilterRun(filter: filter)
                    let f = try negativeLogLikelihood(window, deltaFilter: run.deltaFilter)
                    filtered.sum += f.sum; filtered.count += f.count
                    kept += run.keptShare; runs += 1
                }
            }
            var point = PerplexityPoint(length: S, windows: offsets.count, vanillaPerplexity: Foundation.exp(vanilla.sum / Double(vanilla.count)))
            if table != nil {
                // Below the filtering start LongMamba is vanilla.
                point.longMambaPerplexity = filter != nil ? Foundation.exp(filtered.sum / Double(filtered.count)) : point.vanillaPerplexity
                point.tabulatedLength = tabulated
                point.keptShare = runs > 0 ? kept / Double(runs) : 1
                point.globalChannels = filter?.globalChannelCounts.reduce(0, +)
            }
            points.append(point)
        }
        return points
    }
}
