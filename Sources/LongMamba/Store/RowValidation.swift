// Every row is checked where it is decoded, in one place per record type: a store altered
// outside the tool (a bad copy, another program's write, a hand edit after dropping the
// triggers) gives a `StoreError` naming the file, the row, the column and what was expected —
// never a trap, never an answer from rows that cannot be right. SQLite promises that a committed
// transaction survives; these checks promise that what is read back is what was written.
//
// Content hashes (docs/store-format.md "Content hashes") are verified too: a table's once per
// opened store (`CalibrationStore.verifyTable`), a recording's each time it is decoded.
import Foundation

extension ThresholdTableRecord {
    /// The table's parameters, checked against its columns.
    func validatedParameters(path: String) throws -> SolverParameters {
        let row = "table \(id ?? 0)"
        guard method == CalibrationStore.longMambaMethod else {
            throw StoreError.invalidRow(path: path, row: row, column: "method", problem: "'\(method)' is not a method this tool knows (longmamba); written by a newer tool?")
        }
        let p: SolverParameters
        do { p = try SolverParameters(canonicalJSON: parametersJSON) } catch {
            throw StoreError.invalidRow(path: path, row: row, column: "parameters_json",
                                        problem: "not the parameters object {aggregation, clamp_fraction, interval, max_length, training_length}: \(SystemMessage.of(error))")
        }
        do { try p.validate() } catch { throw StoreError.invalidRow(path: path, row: row, column: "parameters_json", problem: "\(error)") }
        // The columns repeat parameters_json (which is what the hash covers): they must agree.
        func agree(_ column: String, _ stored: String?, _ expected: String) throws {
            if let stored, stored != expected {
                throw StoreError.invalidRow(path: path, row: row, column: column, problem: "holds \(stored) but parameters_json says \(expected)")
            }
        }
        try agree("clamp_fraction", clampFraction.map { "\($0)" }, "\(p.clampFraction)")
        try agree("aggregation", aggregation, p.aggregation.rawValue)
        try agree("interval_tokens", intervalTokens.map(String.init), String(p.interval))
        try agree("max_length", maxLength.map(String.init), String(p.maxLength))
        try agree("training_length", trainingLength.map(String.init), String(p.trainingLength))
        try agree("length_count", String(lengthCount), String(p.lengths.count))
        guard layerCount >= 1, layerCount <= 1 << 16 else {
            throw StoreError.invalidRow(path: path, row: row, column: "layer_count", problem: "\(layerCount) is not a layer count (1 to 65536)")
        }
        return p
    }
}

extension TableLayerRecord {
    /// The layer's arrays, checked against the table's grid and their own counts.
    func validated(path: String, parameters p: SolverParameters) throws -> LayerTable {
        let row = "table \(tableID) layer \(layerIndex)"
        func bad(_ column: String, _ problem: String) -> StoreError { .invalidRow(path: path, row: row, column: column, problem: problem) }
        let T = p.lengths.count, C = channelCount
        guard C >= 1, C <= 1 << 24 else { throw bad("channel_count", "\(C) is not a channel count (1 to 16,777,216)") }
        guard lengthCount == T else { throw bad("length_count", "\(lengthCount), but the table's grid has \(T) lengths") }
        func size(_ column: String, _ blob: Data, _ count: Int, _ element: Int, _ shape: String) throws {
            guard blob.count == count * element else {
                throw bad(column, "holds \(blob.count) bytes, expected \(count * element) (\(shape) × \(element))")
            }
        }
        try size("lengths_i64", lengths, T, 8, "T=\(T)")
        try size("delta_thresholds_f32", deltaThresholds, T * C, 4, "T=\(T) × C=\(C)")
        try size("kept_fractions_f32", keptFractions, T * C, 4, "T=\(T) × C=\(C)")
        try size("decay_budgets_f32", decayBudgets, C, 4, "C=\(C)")
        try size("cumulative_decays_f32", cumulativeDecays, C, 4, "C=\(C)")
        let shape = try checkedAShape(aShapeJSON, channels: C) { bad("a_shape_json", $0) }
        try size("a_values_f32", aValues, shape.reduce(1, *), 4, shape.map(String.init).joined(separator: " × "))
        let table = layerTable
        guard table.lengths == p.lengths else {
            let at = zip(table.lengths, p.lengths).enumerated().first { $0.element.0 != $0.element.1 }
            throw bad("lengths_i64", "entry \(at?.offset ?? 0) is \(at?.element.0 ?? 0), but the table's grid (every \(p.interval) up to \(p.maxLength)) has \(at?.element.1 ?? 0)")
        }
        func values(_ column: String, _ v: [Float], _ rule: String, _ ok: (Float) -> Bool) throws {
            if let i = v.firstIndex(where: { !ok($0) }) {
                let position = v.count == T * C ? "row \(i / C) (S = \(p.lengths[i / C])) channel \(i % C)" : "channel \(i)"
                throw bad(column, "\(position) holds \(v[i]), expected \(rule)")
            }
        }
        try values("delta_thresholds_f32", table.deltaThreshold, "a finite threshold ≥ 0") { $0.isFinite && $0 >= 0 }
        try values("kept_fractions_f32", table.keptFraction, "a kept fraction in (0, 1]") { $0 > 0 && $0 <= 1 }
        try values("decay_budgets_f32", table.decayBudget, "a finite decay budget ≥ 0") { $0.isFinite && $0 >= 0 }
        try values("cumulative_decays_f32", table.cumulativeDecay, "a cumulative decay in [0, 1]") { $0 >= 0 && $0 <= 1 }
        try values("a_values_f32", table.A, "a finite A") { $0.isFinite }
        return table
    }
}

extension RecordingRecord {
    /// Checks the row's counts, sizes and content hash (before its blob is decoded).
    func validate(path: String, sampleLength: Int) throws {
        let row = "run \(runID) sample \(sampleIndex) layer \(layerIndex)"
        func bad(_ column: String, _ problem: String) -> StoreError { .invalidRow(path: path, row: row, column: column, problem: problem) }
        guard tokenCount == sampleLength else { throw bad("token_count", "\(tokenCount), but the run records L = \(sampleLength)") }
        guard channelCount >= 1, channelCount <= 1 << 24 else { throw bad("channel_count", "\(channelCount) is not a channel count") }
        guard [DeltaRepresentation.exactEncoding, DeltaRepresentation.sketchEncoding].contains(encoding) else {
            throw bad("encoding", "'\(encoding.prefix(40))' is not an encoding this tool knows (\(DeltaRepresentation.exactEncoding), \(DeltaRepresentation.sketchEncoding)); written by a newer tool?")
        }
        if encoding == DeltaRepresentation.exactEncoding, deltaBlob.count != 4 * tokenCount * channelCount {
            throw bad("delta_blob", "holds \(deltaBlob.count) bytes, expected \(4 * tokenCount * channelCount) (L=\(tokenCount) × C=\(channelCount) × 4)")
        }
        let shape = try checkedAShape(aShapeJSON, channels: channelCount) { bad("a_shape_json", $0) }
        guard aValues.count == 4 * shape.reduce(1, *) else {
            throw bad("a_values", "holds \(aValues.count) bytes, expected \(4 * shape.reduce(1, *)) (\(shape.map(String.init).joined(separator: " × ")) × 4)")
        }
        guard Self.contentHash(encoding: encoding, blob: deltaBlob, aValues: aValues) == contentHash else { throw StoreError.alteredRecording(path: path, run: runID, sample: sampleIndex, layer: layerIndex) }
    }
}

extension RunSampleRecord {
    /// The sampled token ids, checked against the run's L.
    func validatedTokens(path: String, sampleLength: Int) throws -> [Int32] {
        let row = "run \(runID) sample \(sampleIndex)"
        guard tokenCount == sampleLength else {
            throw StoreError.invalidRow(path: path, row: row, column: "token_count", problem: "\(tokenCount), but the run samples L = \(sampleLength) tokens")
        }
        guard tokenIDs.count == 4 * tokenCount else {
            throw StoreError.invalidRow(path: path, row: row, column: "token_ids_i32", problem: "holds \(tokenIDs.count) bytes, expected \(4 * tokenCount) (L=\(tokenCount) × 4)")
        }
        return tokens
    }
}

extension CalibrationRunInfo {
    /// The run's shape, checked (every count a command sizes buffers with).
    func validate(path: String) throws {
        let row = "run \(id ?? 0)"
        for (column, value, limit) in [("sample_count", sampleCount, 1 << 20), ("sample_length", sampleLength, 1 << 26), ("layer_count", layerCount, 1 << 16)]
        where value < 1 || value > limit {
            throw StoreError.invalidRow(path: path, row: row, column: column, problem: "\(value) is outside 1 to \(limit)")
        }
    }
}

/// A's shape from its JSON column: [C] or [C, N] with C the row's channel count (the one check
/// table layers and recordings share); `bad` makes the row's error from the problem.
private func checkedAShape(_ json: String, channels C: Int, _ bad: (String) -> StoreError) throws -> [Int] {
    guard let shape = JSONText.intArray(json), shape.first == C, shape.count <= 2, shape.allSatisfy({ $0 >= 1 && $0 <= 1 << 24 }) else {
        throw bad("'\(json.prefix(64))' is not [C] or [C, N] with C = \(C)")
    }
    return shape
}

/// SHA-256 of a table's content, fed layer by layer (docs/store-format.md "Content hashes"):
/// the writer and the verifier share it, and a verifier never holds every layer at once.
struct TableHasher {
    private var h = SHA256()
    init(method: String, parameters: SolverParameters, modelFingerprint: String) {
        add(method); add(parameters.canonicalJSON); add(modelFingerprint)
    }
    private mutating func add(_ s: String) { h.update(data: Data(s.utf8)); h.update(data: Data([0])) }
    mutating func add(_ l: LayerTable) {
        add("layer \(l.layer) channels \(l.channels) A \(l.aShape)")
        h.update(data: l.lengths.map { Int64($0) }.littleEndianData)
        for a in [l.deltaThreshold, l.keptFraction, l.decayBudget, l.cumulativeDecay, l.A] { h.update(data: a.littleEndianData) }
    }
    func finalize() -> String { h.finalize().hexString }
}
