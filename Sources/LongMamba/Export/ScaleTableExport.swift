// A per-layer scale table (delta_scale, a_power) without SQLite: safetensors (`lengths` i64 [T],
// `layer.{i}.scale` f32 [T]) or JSON, with metadata that says what a backend does with it. The
// authors' artifact layout has no such method: refused.
import Foundation

extension ScaleMethod {
    /// What a backend does with s_l(S), in one line (exports' `apply` metadata, `lookup`).
    public var rule: String {
        switch self {
        case .deltaScale: return "prefill only, from the filter start: Δ := s_l · Δ in every channel of layer l, after softplus and dt_limit; s_l from the calibrated length nearest S"
        case .aPower: return "prefill only, from the filter start: A := −exp(s_l · A_log) for every entry of layer l; s_l from the calibrated length nearest S"
        }
    }
}

public enum ScaleTableExport {
    /// The table's metadata as strings.
    public static func metadata(store: CalibrationStore, table id: Int64) throws -> [String: String] {
        let t = try store.scaleTable(id)
        let run = try store.run(t.runID)
        return [
            "table_id": String(id), "method": t.method.rawValue, "row_kind": TableRowKind.perLayer.rawValue, "apply": t.method.rule,
            "parameters": t.parametersJSON, "training_length": String(t.parameters.trainingLength), "filter_from_default": String(t.parameters.trainingLength * 3 / 2),
            "layer_count": String(t.layerCount), "length_count": String(t.lengths.count), "content_hash": t.contentHash,
            "tool": ToolInfo.name, "tool_version": t.toolVersion, "schema_version": String(CalibrationStore.schemaVersion), "created_at": t.createdAt,
            "model_fingerprint": t.modelFingerprint, "architecture": t.architecture, "run_id": String(t.runID),
            "calibration_key": run.calibrationKey ?? "",
        ]
    }

    public static func export(store: CalibrationStore, table id: Int64, format: ExportFormat, to path: String) throws {
        let scales = try store.scales(table: id)   // read and verified once; the row reads below skip it
        let info = try store.scaleTable(id)
        let metadata = try metadata(store: store, table: id)
        switch format {
        case .safetensors:
            var m = metadata
            m["longmamba_table"] = TableExport.metadataJSON(metadata)
            var w = SafetensorsWriter(metadata: m)
            w.add("lengths", shape: [info.lengths.count], int64s: info.lengths.map { Int64($0) })
            for (l, row) in scales.enumerated() { w.add("layer.\(l).scale", shape: [row.count], floats: row) }
            do { try w.write(to: path) } catch { throw ExportError.cannotWrite(path: path, reason: SystemMessage.of(error)) }
        case .json:
            var s = "{\"format\":\"longmamba-table\",\"metadata\":" + TableExport.metadataJSON(metadata)
            s += ",\"lengths\":[" + info.lengths.map(String.init).joined(separator: ",") + "],\"layers\":["
            for (l, row) in scales.enumerated() {
                s += (l > 0 ? "," : "") + "{\"layer\":\(l),\"scale\":"
                TableExport.append(row[...], to: &s)
                s += "}"
            }
            s += "]}\n"
            do { try Data(s.utf8).write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
                throw ExportError.cannotWrite(path: path, reason: SystemMessage.of(error))
            }
        case .longmambaArtifacts:
            throw ExportError.methodNotInFormat(path: path, method: info.method.rawValue, format: format.rawValue)
        }
    }

    /// `lookup` of a scale table: s_l at the calibrated length nearest `length`, as JSON.
    public static func lookupJSON(store: CalibrationStore, table id: Int64, length: Int, layer: Int? = nil) throws -> String {
        let scales = try store.scales(table: id)
        let info = try store.scaleTable(id)
        let t = LengthRounding.nearestIndex(of: length, in: info.lengths)!
        guard length > 0 else { throw LookupError.nonPositiveLength(length) }
        let layers = layer.map { [$0] } ?? Array(0..<info.layerCount)
        if let layer, !(0..<info.layerCount).contains(layer) {
            throw LookupError.noSuchLayer(path: store.path, table: id, layer: layer, layerCount: info.layerCount)
        }
        var s = "{\"table\":\(id),\"method\":\"\(info.method.rawValue)\",\"length\":\(length),\"tabulated_length\":\(info.lengths[t]),"
        s += "\"beyond_table\":\(length > info.lengths.last!),\"filter_from_default\":\(info.parameters.trainingLength * 3 / 2),"
        s += "\"apply\":\"\(info.method.rule)\",\"layers\":["
        for (n, l) in layers.enumerated() { s += (n > 0 ? "," : "") + "{\"layer\":\(l),\"scale\":\(scales[l][t])}" }
        return s + "]}"
    }
}
