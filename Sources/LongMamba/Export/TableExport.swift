// Exports of a stored table:
//   safetensors          lengths i64 [T]; layer.{i}.threshold / kept_fraction f32 [T, C];
//                        layer.{i}.decay_budget / cumulative_decay f32 [C]; layer.{i}.A (its shape);
//                        __metadata__: every table field, plus "longmamba_table" = all of them as one JSON
//   json                 the same content for any language
//   longmamba-artifacts  the directories the authors' PyTorch code loads:
//                        tA_prod/tA_prod_layer_{i}.pt (a [C]), decay/decay_layer_{i}.pt (D [C]),
//                        A/A_layer_{i}.pt, alpha/alpha_layer_{i}.pt and delta_t-thre/delta_t-thre_layer_{i}.pt
//                        (dicts "{n}k" → [C], n = S / 1000), and longmamba-table.json: the table's metadata
//                        and the rules the authors' code applies to these files (row choice, filter start)
import Foundation

public enum ExportFormat: String, Sendable, CaseIterable {
    case safetensors
    case json
    case longmambaArtifacts = "longmamba-artifacts"
}

/// Why an export was refused; every case names the file or directory.
public enum ExportError: Error, CustomStringConvertible, Sendable, Equatable {
    /// Writing `path` failed (`reason`: the system's message).
    case cannotWrite(path: String, reason: String)
    case cannotCreateDirectory(path: String, reason: String)
    /// A tabulated length the authors' "{n}k" keys cannot name.
    case lengthNotThousands(directory: String, length: Int)
    /// A format that has no place for the table's method (the authors' layout and scale tables).
    case methodNotInFormat(path: String, method: String, format: String)

    public var path: String {
        switch self {
        case let .cannotWrite(path, _), let .cannotCreateDirectory(path, _), let .lengthNotThousands(path, _), let .methodNotInFormat(path, _, _): return path
        }
    }

    public var description: String {
        switch self {
        case let .cannotWrite(path, reason):
            return "\(path): cannot write: \(reason)"
        case let .cannotCreateDirectory(path, reason):
            return "\(path): cannot create directory: \(reason)"
        case let .methodNotInFormat(path, method, format):
            return "\(path): a table of \(method) scales (one per layer) has no \(format) form (the authors' code has no such method); export it as safetensors or json"
        case let .lengthNotThousands(directory, length):
            return "\(directory): length \(length) is not a whole number of thousands; the authors' files key lengths as \"{n}k\". Solve with --interval 1000 (or a multiple)."
        }
    }
}

public enum TableExport {
    /// Writes table `id` of `store` to `path` in `format`. `theta`: the channel threshold chosen
    /// for this table (e.g. by `tune`), recorded with the global-channel count of each layer so a
    /// backend gets the table and θ together.
    /// `rawDeltaThresholds`: also write each layer's thresholds in raw-dt space
    /// (`layer.{i}.raw_dt_threshold`, for fused-kernel runtimes; see `RawDeltaThresholds`).
    /// `mode`: the authors' mode chosen for this table (e.g. by `tune --method`), recorded with its
    /// rule; every export also lists every mode's rule (`modes`).
    public static func export(store: CalibrationStore, table id: Int64, format: ExportFormat, to path: String, theta: Double? = nil,
                              rawDeltaThresholds: RawDeltaThresholds? = nil, mode: LongMambaMethod? = nil) throws {
        if case .scales = try store.tableKind(id) {
            guard rawDeltaThresholds == nil, theta == nil, mode == nil else { throw StoreError.notAThresholdTable(path: store.path, id: id, method: try store.scaleTable(id).method.rawValue) }
            return try ScaleTableExport.export(store: store, table: id, format: format, to: path)
        }
        let info = try store.table(id)
        var metadata = try store.tableMetadata(id)
        // Zamba2: say that layer i is the model's layer i (hybrid layers included) and which are hybrid.
        if metadata["architecture"] == Architecture.zamba2.rawValue, let json = metadata["model_config"],
           let config = try? ModelConfig.parse(Data(json.utf8), path: "model_config") {
            metadata.merge(config.layerIndexMetadata) { own, _ in own }
        }
        let layers = try (0..<info.layerCount).map { try store.tableLayer(table: id, layer: $0) }
        if rawDeltaThresholds != nil { metadata["raw_dt_threshold"] = RawDeltaThresholds.rule }
        metadata["modes"] = JSONText.canonical(object: LookupResult.modeRules)
        if let mode { metadata["mode"] = mode.rawValue; metadata["apply"] = LookupResult.modeRules[mode.rawValue] }
        if let theta {
            metadata["theta"] = "\(theta)"
            metadata["global_channels_at_theta"] = "[" + layers.map { String(GlobalChannels.count(cumulativeDecay: $0.cumulativeDecay, theta: theta)) }.joined(separator: ",") + "]"
        }
        switch format {
        case .safetensors: try writeSafetensors(layers: layers, metadata: metadata, rawDeltaThresholds: rawDeltaThresholds, to: path)
        case .json: try writeJSON(layers: layers, metadata: metadata, rawDeltaThresholds: rawDeltaThresholds, to: path)
        case .longmambaArtifacts:
            try writeArtifacts(layers: layers, metadata: metadata, trainingLength: info.parameters.trainingLength, rawDeltaThresholds: rawDeltaThresholds, to: path)
        }
    }

    /// Metadata keys whose values are numbers, and those whose values are JSON documents: the
    /// JSON exports write them typed (safetensors' `__metadata__` holds strings only, by its format).
    static let numericKeys: Set<String> = ["table_id", "clamp_fraction", "interval", "max_length", "training_length", "layer_count",
                                           "length_count", "schema_version", "run_id", "sample_count", "recorded_length", "seed", "theta"]
    static let documentKeys: Set<String> = ["parameters", "model_config", "corpus_provenance", "recording_metadata", "modes",
                                            "global_channels_at_theta", "hybrid_layers"]

    /// The metadata as one JSON object, numbers as numbers and JSON documents as objects/arrays
    /// (a value that does not parse stays a string; an empty numeric value is null).
    static func metadataJSON(_ metadata: [String: String]) -> String {
        var object: [String: Any] = [:]
        for (key, value) in metadata {
            if numericKeys.contains(key) {
                if value.isEmpty { object[key] = NSNull() } else if let i = Int64(value) { object[key] = i } else if let d = Double(value), d.isFinite { object[key] = d } else { object[key] = value }
            } else if documentKeys.contains(key), let doc = try? JSONSerialization.jsonObject(with: Data(value.utf8), options: [.fragmentsAllowed]) {
                object[key] = doc
            } else {
                object[key] = value
            }
        }
        return JSONText.canonical(object: object)
    }

    public static func writeSafetensors(layers: [LayerTable], metadata: [String: String], rawDeltaThresholds: RawDeltaThresholds? = nil, to path: String) throws {
        var m = metadata
        m["longmamba_table"] = metadataJSON(metadata)
        var w = SafetensorsWriter(metadata: m)
        let lengths = layers.first?.lengths ?? []
        w.add("lengths", shape: [lengths.count], int64s: lengths.map { Int64($0) })
        for l in layers {
            w.add("layer.\(l.layer).threshold", shape: [l.lengths.count, l.channels], floats: l.deltaThreshold)
            w.add("layer.\(l.layer).kept_fraction", shape: [l.lengths.count, l.channels], floats: l.keptFraction)
            w.add("layer.\(l.layer).decay_budget", shape: [l.channels], floats: l.decayBudget)
            w.add("layer.\(l.layer).cumulative_decay", shape: [l.channels], floats: l.cumulativeDecay)
            w.add("layer.\(l.layer).A", shape: l.aShape, floats: l.A)
            if let raw = rawDeltaThresholds?.layers[l.layer] {
                w.add("layer.\(l.layer).raw_dt_threshold", shape: [l.lengths.count, l.channels], floats: raw)
            }
        }
        do { try w.write(to: path) } catch { throw ExportError.cannotWrite(path: path, reason: SystemMessage.of(error)) }
    }

    /// Floats as their shortest round-tripping decimal (Swift's Float description); the
    /// non-finite values JSON has no number for as the strings "inf", "-inf" and "nan" (as
    /// `lookup` writes them; numpy and torch parse them).
    static func append(_ values: ArraySlice<Float>, to s: inout String) {
        s += "["
        var first = true
        for v in values {
            if !first { s += "," }
            first = false
            s += v.isFinite ? "\(v)" : v.isNaN ? "\"nan\"" : v > 0 ? "\"inf\"" : "\"-inf\""
        }
        s += "]"
    }

    public static func writeJSON(layers: [LayerTable], metadata: [String: String], rawDeltaThresholds: RawDeltaThresholds? = nil, to path: String) throws {
        var s = "{\"format\":\"longmamba-table\",\"metadata\":" + metadataJSON(metadata)
        let lengths = layers.first?.lengths ?? []
        s += ",\"lengths\":[" + lengths.map(String.init).joined(separator: ",") + "],\"layers\":["
        for (n, l) in layers.enumerated() {
            if n > 0 { s += "," }
            s += "{\"layer\":\(l.layer),\"channels\":\(l.channels)"
            var perLength = [("threshold", l.deltaThreshold), ("kept_fraction", l.keptFraction)]
            if let raw = rawDeltaThresholds?.layers[l.layer] { perLength.append(("raw_dt_threshold", raw)) }
            for (name, values) in perLength {
                s += ",\"\(name)\":["
                for t in 0..<l.lengths.count {
                    if t > 0 { s += "," }
                    append(values[(t * l.channels)..<((t + 1) * l.channels)], to: &s)
                }
                s += "]"
            }
            s += ",\"decay_budget\":"; append(l.decayBudget[...], to: &s)
            s += ",\"cumulative_decay\":"; append(l.cumulativeDecay[...], to: &s)
            s += ",\"A_shape\":[" + l.aShape.map(String.init).joined(separator: ",") + "],\"A\":"; append(l.A[...], to: &s)
            s += "}"
        }
        s += "]}\n"
        do { try Data(s.utf8).write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw ExportError.cannotWrite(path: path, reason: SystemMessage.of(error))
        }
    }

    /// The authors' key for a length: "{n}k" with n = S / 1000 (lengths must be whole thousands).
    public static func artifactKey(_ length: Int) -> String { "\(length / 1000)k" }

    /// The rules the authors' inference code (mamba2.py, load_align_target.py) applies to these
    /// files, stated in the export so that a user knows what their run will do.
    static func artifactRules(trainingLength: Int) -> [String: String] {
        [
            "row_choice": "min(keys, key=lambda x: abs(S - x)): the nearest length; exactly halfway takes the shorter (the same rule as longmamba lookup)",
            "filter_start": "their code filters when int(S / 1000) > 2, i.e. from S = 3000 tokens, whatever the training length; longmamba eval/record default: 1.5 × L = \(LongMambaPrefill.defaultFilterStart(trainingLength: trainingLength)) tokens (--filter-from)",
            "global_channel": "a_c > θ on tA_prod (θ: their --channel_threshold, 0.05 for mamba2-1.3b)",
        ]
    }

    public static func writeArtifacts(layers: [LayerTable], metadata: [String: String] = [:], trainingLength: Int = 0,
                                      rawDeltaThresholds: RawDeltaThresholds? = nil, to dir: String) throws {
        let lengths = layers.first?.lengths ?? []
        if let bad = lengths.first(where: { $0 % 1000 != 0 }) {
            throw ExportError.lengthNotThousands(directory: dir, length: bad)
        }
        let fm = FileManager.default
        for sub in ["tA_prod", "decay", "A", "alpha", "delta_t-thre"] + (rawDeltaThresholds == nil ? [] : ["raw_dt-thre"]) {
            do { try fm.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true) } catch {
                throw ExportError.cannotCreateDirectory(path: "\(dir)/\(sub)", reason: SystemMessage.of(error))
            }
        }
        for l in layers {
            let C = l.channels
            let i = l.layer
            try TorchSave.write(.tensor(TorchTensor(floats: l.cumulativeDecay, shape: [C])), to: "\(dir)/tA_prod/tA_prod_layer_\(i).pt")
            try TorchSave.write(.tensor(TorchTensor(floats: l.decayBudget, shape: [C])), to: "\(dir)/decay/decay_layer_\(i).pt")
            try TorchSave.write(.tensor(TorchTensor(floats: l.A, shape: l.aShape)), to: "\(dir)/A/A_layer_\(i).pt")
            func perLength(_ values: [Float]) -> TorchValue {
                .dict(l.lengths.enumerated().map { (t, S) in
                    (key: artifactKey(S), value: .tensor(TorchTensor(floats: Array(values[(t * C)..<((t + 1) * C)]), shape: [C])))
                })
            }
            try TorchSave.write(perLength(l.keptFraction), to: "\(dir)/alpha/alpha_layer_\(i).pt")
            try TorchSave.write(perLength(l.deltaThreshold), to: "\(dir)/delta_t-thre/delta_t-thre_layer_\(i).pt")
            if let raw = rawDeltaThresholds?.layers[i] { try TorchSave.write(perLength(raw), to: "\(dir)/raw_dt-thre/raw_dt-thre_layer_\(i).pt") }
        }
        let description = "{\"format\":\"longmamba-artifacts\",\"metadata\":" + metadataJSON(metadata)
            + ",\"inference_rules\":" + metadataJSON(artifactRules(trainingLength: trainingLength)) + "}\n"
        do { try Data(description.utf8).write(to: URL(fileURLWithPath: "\(dir)/longmamba-table.json"), options: .atomic) } catch {
            throw ExportError.cannotWrite(path: "\(dir)/longmamba-table.json", reason: SystemMessage.of(error))
        }
    }
}
