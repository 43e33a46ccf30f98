// Why `report` refused its inputs. An evaluation file drawn into a table's report must have
// measured that table, on that model, at the report's θ: otherwise the page would show one
// table's results under another's heading.
import Foundation

public enum ReportError: Error, CustomStringConvertible, Sendable, Equatable {
    case nonPositiveTheta(Double)
    /// `path` was measured on another model than the table's.
    case resultsOfAnotherModel(path: String, measured: String, tableModel: String)
    /// `path` measured another table (`measured`: the table it names).
    case resultsOfAnotherTable(path: String, measured: String, table: Int64)
    /// `path` measured the table at another θ.
    case resultsAtAnotherTheta(path: String, measured: Double, theta: Double)
    case cannotWrite(path: String, reason: String)

    public var description: String {
        switch self {
        case let .nonPositiveTheta(t): return "θ must be > 0, got \(t)"
        case let .resultsOfAnotherModel(path, measured, tableModel):
            return "\(path) was measured on model \(measured.prefix(12)), but the table was calibrated on \(tableModel.prefix(12)); refusing to draw it in this table's report"
        case let .resultsOfAnotherTable(path, measured, table):
            return "\(path) measured table \(measured), not table \(table); refusing to draw it under table \(table)'s heading (hint: report --table of the table it measured, or evaluate this table with `longmamba eval`)"
        case let .resultsAtAnotherTheta(path, measured, theta):
            return "\(path) measured θ = \(measured), the report is drawn at θ = \(theta) (hint: pass --theta \(measured), or evaluate at θ = \(theta))"
        case let .cannotWrite(path, reason): return "\(path): cannot write: \(reason)"
        }
    }
}

/// What an evaluation file says it measured (perplexity and passkey results alike).
public protocol MeasuredTable {
    var modelFingerprint: String { get }
    /// "db#id" or an exported file; nil: vanilla only.
    var table: String? { get }
    var tableContentHash: String? { get }
    var theta: Double? { get }
    /// The method, where not dt_thre (a mode, or a scale table's delta_scale / a_power).
    var method: String? { get }
}

extension PerplexityResults: MeasuredTable {}
extension PasskeyResults: MeasuredTable {}

extension CalibrationReport {
    /// Refuses results (read from `path`) that did not measure `table` on its model at `theta`.
    /// Results of older tools name no content hash: their "db#id" is compared instead.
    /// Results of a per-layer scale method must have measured one of `scaleTables` (the run's
    /// scale tables, drawn beside this table's methods); θ does not apply to them.
    public static func check(_ results: some MeasuredTable, path: String, table info: ThresholdTableInfo, theta: Double,
                             scaleTables: [ScaleTableInfo] = []) throws {
        guard results.modelFingerprint == info.modelFingerprint else {
            throw ReportError.resultsOfAnotherModel(path: path, measured: results.modelFingerprint, tableModel: info.modelFingerprint)
        }
        guard let measured = results.table else { return }   // vanilla only: no table, no θ
        if let method = results.method, ScaleMethod(rawValue: method) != nil {
            guard scaleTables.contains(where: { $0.method.rawValue == method && $0.contentHash == results.tableContentHash }) else {
                throw ReportError.resultsOfAnotherTable(path: path, measured: measured, table: info.id)
            }
            return
        }
        if let hash = results.tableContentHash {
            guard hash == info.contentHash else { throw ReportError.resultsOfAnotherTable(path: path, measured: measured, table: info.id) }
        } else if let id = measured.split(separator: "#").last.flatMap({ Int64($0) }), measured.contains("#"), id != info.id {
            throw ReportError.resultsOfAnotherTable(path: path, measured: measured, table: info.id)
        }
        // θ is compared as the global-channel rule compares it: in float32.
        if let t = results.theta, Float(t) != Float(theta) {
            throw ReportError.resultsAtAnotherTheta(path: path, measured: t, theta: theta)
        }
    }
}
