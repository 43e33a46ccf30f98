import ArgumentParser
import Foundation
import LongMamba

struct LookupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lookup",
        abstract: "Thresholds at the tabulated length nearest to S and the global-channel mask (a_c > θ), as JSON (a scale table: each layer's scale).",
        discussion: "Rounding: \(LengthRounding.tieRule).")

    @Option(help: "SQLite database.") var db: String
    @Option(help: "Table id.") var table: Int64
    @Option(help: "Sequence length S in tokens (k = ×1000, e.g. 16k).") var length: TokenCount
    @Option(help: "Only this layer.") var layer: Int?
    @Option(help: "Channel threshold θ > 0: channels with cumulative decay a_c > θ are global.") var theta: Double = GlobalChannels.defaultTheta

    func validate() throws { try checkTheta(theta) }

    func run() throws {
        let store = try CalibrationStore(path: db, readOnly: true)
        if case .scales = try store.tableKind(table) {   // one scale per layer: θ does not apply
            print(try ScaleTableExport.lookupJSON(store: store, table: table, length: length.value, layer: layer))
            return
        }
        print(try TableLookup(store: store).lookup(table: table, length: length.value, layer: layer, theta: theta).json())
    }
}
