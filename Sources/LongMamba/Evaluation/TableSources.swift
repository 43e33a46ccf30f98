// Where LongMamba thresholds come from at inference (a table in the store, or an exported
// safetensors table) and the one decision every prefill makes with them (`LongMambaPrefill`):
// filter or not at this length, with which table row, checked against the model.
import Foundation

/// Any table that changes the prefill: LongMamba thresholds (`ThresholdTableSource`) or
/// per-layer scales (`ScaleTableSource`), from the store or an export.
public protocol PrefillTableSource {
    var modelFingerprint: String? { get }
    /// The stored table's content hash (an export carries it as `content_hash`): what the
    /// results of an evaluation name, so the report can check they belong to its table.
    var contentHash: String? { get }
    var trainingLength: Int { get }
    var lengths: [Int] { get }
}

/// Where per-layer scales come from (delta_scale, a_power).
public protocol ScaleTableSource: PrefillTableSource {
    var scaleMethod: ScaleMethod { get }
    /// s_l of every layer at the calibrated length nearest `length` (the lookup's rounding rule).
    func scales(length: Int) throws -> (scales: LayerScales, tabulatedLength: Int)
}

/// Where LongMamba thresholds come from: a table in the store or an exported safetensors table.
public protocol ThresholdTableSource: PrefillTableSource {
    /// Thresholds at the tabulated length nearest `length` (the lookup's rounding rule) and the
    /// global-channel mask for θ, with what `method` needs (α row, decay budgets).
    func filter(length: Int, theta: Double, method: LongMambaMethod) throws -> (filter: LongMambaFilter, tabulatedLength: Int)
}

extension ThresholdTableSource {
    /// The dt_thre filter.
    public func filter(length: Int, theta: Double) throws -> (filter: LongMambaFilter, tabulatedLength: Int) {
        try filter(length: length, theta: theta, method: .dtThre)
    }
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
    public var contentHash: String? { info.contentHash }
    public var trainingLength: Int { info.parameters.trainingLength }
    public var lengths: [Int] { info.lengths }
    public func filter(length: Int, theta: Double, method: LongMambaMethod) throws -> (filter: LongMambaFilter, tabulatedLength: Int) {
        let result = try TableLookup(store: store).lookup(table: table, length: length, theta: theta)
        let layers = try result.layers.map { l in
            // What the method needs, and only that (an export gives the same: TableExport's tensors).
            LongMambaFilter.Layer(deltaThreshold: l.deltaThreshold, globalChannel: l.globalChannel, keptFraction: method == .alpha ? l.keptFraction : [],
                                  decayBudget: method == .bound || method == .norm ? try store.tableLayer(table: table, layer: l.layer).decayBudget : [])
        }
        return (LongMambaFilter(layers: layers, method: method), result.length)
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
    public var contentHash: String? { file.metadata["content_hash"] }
    public var trainingLength: Int { Int(file.metadata["training_length"] ?? "") ?? 0 }
    public func filter(length: Int, theta: Double, method: LongMambaMethod) throws -> (filter: LongMambaFilter, tabulatedLength: Int) {
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
        var filter = try LongMambaFilter(deltaThresholds: thresholds, cumulativeDecays: decays, theta: theta)
        filter.method = method
        // alpha needs the α row, bound and norm the decay budgets: exports carry both.
        for i in 0..<layerCount {
            let C = decays[i].count
            if method == .alpha {
                let all = try file.floats("layer.\(i).kept_fraction")
                guard all.count == lengths.count * C else {
                    throw SafetensorsError.valueCountMismatch(path: file.path, tensor: "layer.\(i).kept_fraction", count: all.count, rows: lengths.count, columns: C)
                }
                filter.layers[i].keptFraction = Array(all[(index * C)..<((index + 1) * C)])
            }
            if method == .bound || method == .norm {
                let budget = try file.floats("layer.\(i).decay_budget")
                guard budget.count == C else {
                    throw SafetensorsError.valueCountMismatch(path: file.path, tensor: "layer.\(i).decay_budget", count: budget.count, rows: 1, columns: C)
                }
                filter.layers[i].decayBudget = budget
            }
        }
        return (filter, lengths[index])
    }
}

/// A scale table in the store.
public struct StoredScaleSource: ScaleTableSource {
    public let info: ScaleTableInfo
    /// [layers][T]
    public let table: [[Float]]
    public init(store: CalibrationStore, table id: Int64) throws {
        table = try store.scales(table: id); info = try store.scaleTable(id)   // scales first: read and verified once
    }
    public var modelFingerprint: String? { info.modelFingerprint }
    public var contentHash: String? { info.contentHash }
    public var trainingLength: Int { info.parameters.trainingLength }
    public var lengths: [Int] { info.lengths }
    public var scaleMethod: ScaleMethod { info.method }
    public func scales(length: Int) throws -> (scales: LayerScales, tabulatedLength: Int) {
        LayerScales.row(of: table, lengths: lengths, method: scaleMethod, nearest: length)
    }
}

/// A scale table exported with `longmamba export --format safetensors`: lengths i64 [T],
/// layer.{i}.scale f32 [T], metadata `method`.
public struct ExportedScaleSource: ScaleTableSource {
    public let file: SafetensorsFile
    public let lengths: [Int]
    public let scaleMethod: ScaleMethod
    /// [layers][T]
    let table: [[Float]]
    public init(file: SafetensorsFile) throws {
        self.file = file
        lengths = try file.integers("lengths")
        guard !lengths.isEmpty else { throw SafetensorsError.emptyTensor(path: file.path, tensor: "lengths") }
        guard let method = ScaleMethod(rawValue: file.metadata["method"] ?? "") else {
            throw EvaluationError.unknownExportMethod(path: file.path, method: file.metadata["method"] ?? "(none)")
        }
        scaleMethod = method
        var rows: [[Float]] = []
        while file.info("layer.\(rows.count).scale") != nil {
            let row = try file.floats("layer.\(rows.count).scale")
            guard row.count == lengths.count else {
                throw SafetensorsError.valueCountMismatch(path: file.path, tensor: "layer.\(rows.count).scale", count: row.count, rows: 1, columns: lengths.count)
            }
            rows.append(row)
        }
        table = rows
    }
    public var modelFingerprint: String? { file.metadata["model_fingerprint"] }
    public var contentHash: String? { file.metadata["content_hash"] }
    public var trainingLength: Int { Int(file.metadata["training_length"] ?? "") ?? 0 }
    public func scales(length: Int) throws -> (scales: LayerScales, tabulatedLength: Int) {
        LayerScales.row(of: table, lengths: lengths, method: scaleMethod, nearest: length)
    }
}

extension LayerScales {
    /// s_l at the calibrated length nearest `length` (the lookup's rounding rule) of a table
    /// [layers][T] with ≥ 1 length, and that length.
    static func row(of table: [[Float]], lengths: [Int], method: ScaleMethod, nearest length: Int) -> (scales: LayerScales, tabulatedLength: Int) {
        let t = LengthRounding.nearestIndex(of: length, in: lengths)!
        return (LayerScales(method: method, scales: table.map { $0[t] }), lengths[t])
    }
}

extension PrefillTableSource {
    /// Refuses a table calibrated on another model (fingerprint mismatch) unless `force`.
    /// Done once per model, not per length: the fingerprint hashes every weight.
    public func checkModel(fingerprint: String, name: String = "this one", force: Bool) throws {
        if let tableFingerprint = modelFingerprint, tableFingerprint != fingerprint, !force {
            throw EvaluationError.tableForAnotherModel(table: tableFingerprint, model: name, modelFingerprint: fingerprint)
        }
    }
}

/// The settings every evaluation with a table shares (perplexity, passkey).
public protocol TableEvaluationSettings {
    var theta: Double { get set }
    /// Filter only sequences of at least this many tokens (nil: 1.5 × the table's L).
    var filterFromLength: Int? { get set }
    /// Past the table's largest length use its last row instead of refusing.
    var allowBeyondTable: Bool { get set }
    /// Tokens per forward chunk (a whole-prompt method prefills a filtered prompt in one piece).
    var chunk: Int { get set }
    /// How global channels are filtered.
    var method: LongMambaMethod { get set }
}

extension TableEvaluationSettings {
    public mutating func configure(theta: Double, filterFrom: Int?, allowBeyondTable: Bool, chunk: Int, method: LongMambaMethod = .dtThre) {
        self.theta = theta; filterFromLength = filterFrom; self.allowBeyondTable = allowBeyondTable; self.chunk = chunk
        self.method = method
    }
}

/// One LongMamba prefill of `length` tokens with a table: decides whether filtering applies
/// (sequences of at least `filterFrom` tokens), and builds the filter for the table row nearest
/// `length`, checked against the model's layers and channels. (The fingerprint check is
/// `ThresholdTableSource.checkModel`.)
public struct LongMambaPrefill {
    /// The default filter start: 1.5 × the table's training length (the authors filter from 3k
    /// tokens on a 2k model; their code uses `int(S / 1000) > 2` whatever L is).
    public static func defaultFilterStart(trainingLength: Int) -> Int { trainingLength * 3 / 2 }

    public let theta: Double
    public let filterFrom: Int
    /// The tabulated length whose row is applied; nil when the sequence is below the filter start.
    public private(set) var tabulatedLength: Int?
    /// Counts what the filter keeps; nil when no filtering applies (or the table holds scales).
    public private(set) var run: LongMambaFilterRun?
    /// A scale table's s_l for this length; nil below the start or for a threshold table.
    public private(set) var scales: LayerScales?

    /// - allowBeyondTable: past the table's largest length use its last row (otherwise refuse).
    public init(table: any PrefillTableSource, model: MambaModel, length: Int, theta: Double,
                filterFrom: Int? = nil, allowBeyondTable: Bool = true, method: LongMambaMethod = .dtThre) throws {
        guard theta > 0 else { throw EvaluationError.nonPositiveTheta(theta) }
        self.theta = theta
        self.filterFrom = filterFrom ?? Self.defaultFilterStart(trainingLength: table.trainingLength)
        guard length >= self.filterFrom else { return }
        if length > (table.lengths.last ?? 0) && !allowBeyondTable {
            throw table is any ScaleTableSource ? EvaluationError.beyondScaleTable(length: length, largest: table.lengths.last ?? 0)
                                                : EvaluationError.beyondTable(length: length, largest: table.lengths.last ?? 0)
        }
        if let table = table as? any ScaleTableSource {
            guard method == .dtThre else { throw EvaluationError.methodOfScaleTable(method: method.rawValue, table: table.scaleMethod.rawValue) }
            let s = try table.scales(length: length)
            guard s.scales.scales.count == model.config.layerCount else {
                throw ModelRunError.scaleLayerMismatch(scales: s.scales.scales.count, modelLayers: model.config.layerCount)
            }
            scales = s.scales
            tabulatedLength = s.tabulatedLength
        } else if let table = table as? any ThresholdTableSource {
            let f = try table.filter(length: length, theta: theta, method: method)
            try f.filter.validate(for: model.config)
            run = LongMambaFilterRun(filter: f.filter)
            tabulatedLength = f.tabulatedLength
        }
    }

    /// Whether this prefill changes the model (a filter or scales apply at this length).
    public var isActive: Bool { run != nil || scales != nil }

    /// What a recording made with this prefill says about it.
    public func metadata(tableName: String) -> [String: String] {
        var m = ["longmamba_table": tableName, "longmamba_theta": "\(theta)", "longmamba_filter_from": "\(filterFrom)"]
        if let tabulatedLength { m["longmamba_tabulated_length"] = "\(tabulatedLength)" }
        if let run { m["longmamba_global_channels"] = "\(run.filter.globalChannelCounts)" }
        if let scales { m["longmamba_scale_method"] = scales.method.rawValue; m["longmamba_scales"] = "\(scales.scales)" }
        return m
    }
}
