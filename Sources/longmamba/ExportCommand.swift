import ArgumentParser
import Foundation
import LongMamba

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a table as safetensors, JSON, or the authors' PyTorch artifact directories.",
        discussion: """
            longmamba-artifacts keys each length as "{n}k" (n = S / 1000), as the authors' loader reads \
            them, so it needs a table whose every length is a whole number of thousands (solve with \
            --interval 1000 or a multiple). Without --theta no θ travels with the table: the backend \
            must choose one (tune's choice: `longmamba tune … --best`). --raw-dt with --model adds, per \
            layer and length, the thresholds on the raw dt that fused kernels see before their softplus.
            """)

    @Option(help: "SQLite database.") var db: String
    @Option(help: "Table id.") var table: Int64
    @Option(help: "safetensors, json or longmamba-artifacts (lengths must be whole thousands).") var format: ExportFormat
    @Option(help: "Output file, - for standard output (a directory for longmamba-artifacts).") var out: String
    @Option(help: "The channel threshold θ > 0 chosen for this table (e.g. by `tune`): recorded in the export's metadata.") var theta: Double?
    @Option(name: .customLong("raw-dt-model"), help: "Model directory: also export thresholds in raw-dt space (softplus⁻¹(τ) − dt_bias per channel) for fused-kernel runtimes.")
    var rawDtModel: String?
    @Flag(help: "Export for a model whose fingerprint differs from the table's (with --raw-dt-model).") var force = false
    @Option(help: "The authors' mode chosen for this table (dt_thre, alpha, bound, norm, channelwise_topk): recorded in the metadata with its rule (every export lists all modes' rules).") var method: LongMambaMethod?

    func validate() throws {
        if let theta { try checkTheta(theta) }
        if out == "-" && format == .longmambaArtifacts { throw ValidationError("--format longmamba-artifacts writes a directory; --out - (standard output) needs safetensors or json") }
    }

    func run() throws {
        let store = try CalibrationStore(path: db, readOnly: true)
        let rawDt = try rawDtModel.map { try RawDeltaThresholds(store: store, table: table, modelDirectory: $0, force: force) }
        if out == "-" {
            // Written whole to a temporary file first, so a failure prints nothing half-written.
            let temporary = FileManager.default.temporaryDirectory.appendingPathComponent("longmamba-export-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: temporary) }
            try TableExport.export(store: store, table: table, format: format, to: temporary, theta: theta, rawDeltaThresholds: rawDt, mode: method)
            guard let data = FileManager.default.contents(atPath: temporary) else { throw OutputError.cannotWrite(path: "-", reason: "the export could not be read back") }
            FileHandle.standardOutput.write(data)
        } else {
            try TableExport.export(store: store, table: table, format: format, to: out, theta: theta, rawDeltaThresholds: rawDt, mode: method)
            FileHandle.standardError.write(Data("wrote table \(table) as \(format.rawValue) to \(out)\n".utf8))
        }
        if theta == nil, case .thresholds = try store.tableKind(table) {
            FileHandle.standardError.write(Data("note: no θ travels with this export (pass --theta, e.g. the one `longmamba tune --best` prints)\n".utf8))
        }
    }
}
