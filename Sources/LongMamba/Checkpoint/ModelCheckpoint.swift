// A model directory: config.json plus weights (model.safetensors, sharded safetensors with
// model.safetensors.index.json, or PyTorch pytorch_model.bin[.index.json]), memory-mapped.
//
// All layout quirks live in `sanitize`: tensor names are mapped to one canonical naming (the
// state-spaces one, `backbone.embedding.weight`), and loading fails on missing or unexpected
// tensors and on shapes that disagree with the config.
import Foundation

/// Why a checkpoint directory was refused. `path` is the file at fault (a weight file, an index)
/// or the directory when the fault is the set of tensors as a whole.
public enum CheckpointError: Error, CustomStringConvertible, Sendable, Equatable {
    /// No readable config.json (`path`: where it was looked for).
    case missingConfig(path: String)
    /// A weight index that is not {"weight_map": {tensor: file}}.
    case invalidIndex(path: String)
    /// A shard named in the index that lies outside the directory.
    case shardOutsideDirectory(path: String, shard: String)
    /// No weight file in the directory.
    case noWeights(directory: String)
    /// Two tensors with the same canonical name (`previous` in `previousPath` came first).
    case duplicateTensor(path: String, tensor: String, previous: String, previousPath: String)
    /// No embedding (`found`: the first canonical names found, sorted, at most five).
    case missingEmbedding(directory: String, found: [String])
    case embeddingShape(path: String, tensor: String, shape: [Int], vocabSize: Int, dModel: Int)
    /// A tensor the config does not imply (`more`: how many other unexpected tensors there are).
    case unexpectedTensor(path: String, tensor: String, architecture: Architecture, layers: Int, more: Int)
    case missingTensor(directory: String, tensor: String)
    /// A tensor whose shape is not the one the config implies (`expected`).
    case shapeMismatch(path: String, tensor: String, shape: [Int], expected: [Int])
    case notFloatingPoint(path: String, tensor: String, dtype: DType)
    /// Weight matrices stored in different dtypes (`other` in `otherPath` is `otherDType`), e.g. shards
    /// from two different exports mixed in one directory.
    case mixedDTypes(path: String, tensor: String, dtype: DType, otherPath: String, other: String, otherDType: DType)
    case notMatrix(directory: String, tensor: String)
    case rowOutOfRange(directory: String, tensor: String, row: Int, rows: Int)
    /// Zamba2: the tensors of `layer` are those of a hybrid layer (`tensorsSayHybrid`) but the
    /// config's schedule says otherwise, or the other way round.
    case layerScheduleMismatch(path: String, tensor: String, layer: Int, tensorsSayHybrid: Bool)

    public var path: String {
        switch self {
        case let .missingConfig(path), let .invalidIndex(path), let .shardOutsideDirectory(path, _), let .noWeights(path),
             let .duplicateTensor(path, _, _, _), let .missingEmbedding(path, _), let .embeddingShape(path, _, _, _, _),
             let .unexpectedTensor(path, _, _, _, _), let .missingTensor(path, _), let .shapeMismatch(path, _, _, _),
             let .notFloatingPoint(path, _, _), let .notMatrix(path, _), let .rowOutOfRange(path, _, _, _),
             let .mixedDTypes(path, _, _, _, _, _), let .layerScheduleMismatch(path, _, _, _):
            return path
        }
    }

    /// The tensor at fault, if the failure is about one.
    public var tensor: String? {
        switch self {
        case .missingConfig, .invalidIndex, .shardOutsideDirectory, .noWeights:
            return nil
        case .missingEmbedding:
            return "backbone.embedding.weight"
        case let .duplicateTensor(_, tensor, _, _), let .embeddingShape(_, tensor, _, _, _), let .unexpectedTensor(_, tensor, _, _, _),
             let .missingTensor(_, tensor), let .shapeMismatch(_, tensor, _, _), let .notFloatingPoint(_, tensor, _),
             let .notMatrix(_, tensor), let .rowOutOfRange(_, tensor, _, _), let .mixedDTypes(_, tensor, _, _, _, _),
             let .layerScheduleMismatch(_, tensor, _, _):
            return tensor
        }
    }

    /// What to do about it, where there is something to say.
    public var hint: String? {
        switch self {
        case .missingConfig:
            return "pass a model directory holding config.json and the weights"
        case .mixedDTypes:
            return "re-export the checkpoint in one dtype, or check that every shard comes from the same export"
        case .noWeights:
            return "expected model.safetensors, model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json"
        case let .missingEmbedding(_, found):
            return "tensor names found: \(found.joined(separator: ", "))…"
        case .layerScheduleMismatch:
            return "config.json's layers_block_type / hybrid_layer_ids must match the checkpoint's layers"
        case let .missingTensor(_, tensor) where tensor.contains("_adapter_list."):
            return "the config declares adapters (use_shared_attention_adapter / adapter_rank) that the checkpoint lacks"
        default:
            return nil
        }
    }

    /// What is wrong, without the path, tensor and hint.
    private var reason: String {
        switch self {
        case .missingConfig:
            return "cannot read config.json"
        case .invalidIndex:
            return "not a valid index: expected {\"weight_map\": {tensor: file}}"
        case let .shardOutsideDirectory(_, shard):
            return "shard name '\(shard)' points outside the directory"
        case .noWeights:
            return "no weights found"
        case let .duplicateTensor(_, _, previous, previousPath):
            return "duplicate of '\(previous)' in \(previousPath)"
        case .missingEmbedding:
            return "missing"
        case let .embeddingShape(_, _, shape, vocabSize, dModel):
            return "shape \(shape) does not fit vocab_size \(vocabSize) × d_model \(dModel)"
        case let .unexpectedTensor(_, _, architecture, layers, more):
            return "unexpected tensor for a \(architecture.rawValue) model with \(layers) layers" + (more > 0 ? " (and \(more) more)" : "")
        case .missingTensor:
            return "missing from the checkpoint"
        case let .shapeMismatch(_, _, shape, expected):
            return "shape \(shape) but the config implies \(expected)"
        case let .notFloatingPoint(_, _, dtype):
            return "dtype \(dtype.rawValue) is not a floating-point type"
        case let .mixedDTypes(_, _, dtype, otherPath, other, otherDType):
            return "stored as \(dtype.rawValue), but '\(other)' in \(otherPath) is \(otherDType.rawValue)"
        case .notMatrix:
            return "missing or not 2-D"
        case let .rowOutOfRange(_, _, row, rows):
            return "row \(row) out of range 0..<\(rows)"
        case let .layerScheduleMismatch(_, _, layer, tensorsSayHybrid):
            return tensorsSayHybrid ? "layer \(layer) has the tensors of a hybrid layer (shared block in front), but config.json's schedule makes it a plain Mamba layer"
                                    : "layer \(layer) has the tensors of a plain Mamba layer, but config.json's schedule makes it a hybrid layer"
        }
    }

    public var description: String {
        var s = tensor.map { "\(path): tensor '\($0)': \(reason)" } ?? "\(path): \(reason)"
        if let hint { s += " (hint: \(hint))" }
        return s
    }
}

/// A loaded (mapped, validated) checkpoint directory.
public struct ModelCheckpoint: Sendable {
    public let directory: String
    public let config: ModelConfig
    /// config.json exactly as read (stored with tables for provenance).
    public let configData: Data
    /// Files the tensors come from.
    public let weightFiles: [String]
    private let sources: [any TensorSource]
    /// Canonical name → (source, tensor).
    private let entries: [String: (source: Int, info: TensorInfo)]

    public init(directory: String) throws {
        let dir = URL(fileURLWithPath: directory)
        let configPath = dir.appendingPathComponent("config.json").path
        guard let configData = FileManager.default.contents(atPath: configPath) else {
            throw CheckpointError.missingConfig(path: configPath)
        }
        var config = try ModelConfig.parse(configData, path: configPath)
        let files = try Self.weightFiles(in: dir)
        var sources: [any TensorSource] = []
        var raw: [(String, Int, TensorInfo)] = []
        for file in files {
            let source = try Self.openTensorFile(file)
            for info in source.tensors { raw.append((info.name, sources.count, info)) }
            sources.append(source)
        }
        let entries = try Self.sanitize(raw, config: &config, files: files, directory: directory)
        self.directory = directory
        self.config = config
        self.configData = configData
        self.weightFiles = files
        self.sources = sources
        self.entries = entries
    }

    /// Weight files of a directory, in a fixed order.
    static func weightFiles(in dir: URL) throws -> [String] {
        let fm = FileManager.default
        for index in ["model.safetensors.index.json", "pytorch_model.bin.index.json"] {
            let indexPath = dir.appendingPathComponent(index).path
            guard let data = fm.contents(atPath: indexPath) else { continue }
            guard let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
                  let map = json["weight_map"] as? [String: String]
            else { throw CheckpointError.invalidIndex(path: indexPath) }
            let shards = Set(map.values).sorted()
            for shard in shards where shard.contains("/") || shard.hasPrefix(".") {
                throw CheckpointError.shardOutsideDirectory(path: indexPath, shard: shard)
            }
            return shards.map { dir.appendingPathComponent($0).path }
        }
        for single in ["model.safetensors", "pytorch_model.bin", "consolidated.safetensors"] {
            let p = dir.appendingPathComponent(single).path
            if fm.fileExists(atPath: p) { return [p] }
        }
        throw CheckpointError.noWeights(directory: dir.path)
    }

    static func openTensorFile(_ path: String) throws -> any TensorSource {
        if path.hasSuffix(".safetensors") { return try SafetensorsFile(path: path) }
        return try TorchCheckpoint(path: path)
    }

    /// Maps every tensor name to the canonical (state-spaces) one and checks the set and shapes
    /// against the config. The one place that knows about checkpoint-layout quirks.
    static func sanitize(_ raw: [(String, Int, TensorInfo)], config: inout ModelConfig, files: [String], directory: String) throws -> [String: (source: Int, info: TensorInfo)] {
        var entries: [String: (source: Int, info: TensorInfo)] = [:]
        for (name, source, info) in raw {
            var canonical = name
            if config.architecture == .zamba2 {
                guard let mapped = try zamba2CanonicalName(name, config: config, path: files[source]) else { continue }   // a tied copy
                canonical = mapped
            } else {
                if canonical.hasPrefix("model.") { canonical.removeFirst("model.".count) }          // Codestral
                if canonical.hasPrefix("backbone.embeddings.") {                                   // transformers
                    canonical = "backbone.embedding." + canonical.dropFirst("backbone.embeddings.".count)
                }
            }
            if let previous = entries[canonical] {
                throw CheckpointError.duplicateTensor(path: files[source], tensor: name, previous: previous.info.name, previousPath: files[previous.source])
            }
            entries[canonical] = (source, info)
        }
        // The embedding fixes the padded vocabulary.
        guard let embedding = entries["backbone.embedding.weight"] else {
            throw CheckpointError.missingEmbedding(directory: directory, found: Array(entries.keys.sorted().prefix(5)))
        }
        let rows = embedding.info.shape.first ?? 0
        guard embedding.info.shape.count == 2, rows >= config.vocabSize, embedding.info.shape[1] == config.dModel else {
            throw CheckpointError.embeddingShape(path: files[embedding.source], tensor: embedding.info.name, shape: embedding.info.shape,
                                                 vocabSize: config.vocabSize, dModel: config.dModel)
        }
        config.paddedVocabSize = rows

        let expected = expectedShapes(config)
        if config.tieEmbeddings { entries.removeValue(forKey: "lm_head.weight") }  // a tied copy, if saved
        let unexpected = entries.keys.filter { expected[$0] == nil }.sorted()
        if let first = unexpected.first {
            let e = entries[first]!
            throw CheckpointError.unexpectedTensor(path: files[e.source], tensor: e.info.name, architecture: config.architecture,
                                                   layers: config.layerCount, more: unexpected.count - 1)
        }
        for (name, shape) in expected.sorted(by: { $0.key < $1.key }) {
            guard let e = entries[name] else {
                throw CheckpointError.missingTensor(directory: directory, tensor: name)
            }
            // conv1d weights are saved [C, 1, K]; accept [C, K] too.
            let actual = e.info.shape.count == 3 && e.info.shape[1] == 1 && shape.count == 2 ? [e.info.shape[0], e.info.shape[2]] : e.info.shape
            guard actual == shape else {
                throw CheckpointError.shapeMismatch(path: files[e.source], tensor: e.info.name, shape: e.info.shape, expected: shape)
            }
            guard e.info.dtype.isFloatingPoint else {
                throw CheckpointError.notFloatingPoint(path: files[e.source], tensor: e.info.name, dtype: e.info.dtype)
            }
        }
        // Weight matrices share one dtype (vectors such as A_log or norms may be kept in f32).
        let matrices = expected.filter { $0.value.count == 2 && !$0.key.hasSuffix("conv1d.weight") }.keys.sorted()
        if let first = matrices.first.flatMap({ entries[$0] }) {
            for name in matrices.dropFirst() {
                guard let e = entries[name], e.info.dtype != first.info.dtype else { continue }
                throw CheckpointError.mixedDTypes(path: files[e.source], tensor: e.info.name, dtype: e.info.dtype,
                                                  otherPath: files[first.source], other: first.info.name, otherDType: first.info.dtype)
            }
        }
        return entries
    }

    /// Canonical tensor names and shapes a config implies.
    static func expectedShapes(_ c: ModelConfig) -> [String: [Int]] {
        var s: [String: [Int]] = [
            "backbone.embedding.weight": [c.paddedVocabSize, c.dModel],
            "backbone.norm_f.weight": [c.dModel],
        ]
        if !c.tieEmbeddings { s["lm_head.weight"] = [c.paddedVocabSize, c.dModel] }
        if let shared = c.sharedBlocks {
            for (name, shape) in zamba2SharedShapes(c, shared) { s[name] = shape }
        }
        for i in 0..<c.layerCount {
            let p = "backbone.layers.\(i)."
            s[p + "norm.weight"] = [c.dModel]
            let m = p + "mixer."
            switch c.architecture {
            case .mamba, .falconMamba:
                s[m + "in_proj.weight"] = [2 * c.dInner, c.dModel]
                s[m + "conv1d.weight"] = [c.dInner, c.dConv]
                s[m + "x_proj.weight"] = [c.dtRank + 2 * c.dState, c.dInner]
                s[m + "dt_proj.weight"] = [c.dInner, c.dtRank]
                s[m + "dt_proj.bias"] = [c.dInner]
                s[m + "A_log"] = [c.dInner, c.dState]
                s[m + "D"] = [c.dInner]
                s[m + "out_proj.weight"] = [c.dModel, c.dInner]
                if c.convBias { s[m + "conv1d.bias"] = [c.dInner] }
                if c.projectionBias { s[m + "in_proj.bias"] = [2 * c.dInner]; s[m + "out_proj.bias"] = [c.dModel] }
            case .mamba2, .zamba2:
                let convDim = c.dInner + 2 * c.groupCount * c.dState
                s[m + "in_proj.weight"] = [c.dInner + convDim + c.headCount, c.dModel]
                s[m + "conv1d.weight"] = [convDim, c.dConv]
                s[m + "dt_bias"] = [c.headCount]
                s[m + "A_log"] = [c.headCount]
                s[m + "D"] = [c.headCount]
                s[m + "norm.weight"] = [c.dInner]
                s[m + "out_proj.weight"] = [c.dModel, c.dInner]
                if c.convBias { s[m + "conv1d.bias"] = [convDim] }
                if c.projectionBias { s[m + "in_proj.bias"] = [c.dInner + convDim + c.headCount]; s[m + "out_proj.bias"] = [c.dModel] }
            }
        }
        return s
    }

    /// Zamba2 (transformers' Zamba2ForCausalLM) names onto the canonical ones: the embedding, final
    /// norm and every layer's Mamba mixer and pre-norm (`model.layers.{i}.mamba.*` and, in hybrid
    /// layers, `model.layers.{i}.mamba_decoder.mamba.*`) take the Mamba-2 names; the shared blocks,
    /// their adapters and the per-layer linear keep transformers' names (block b lives under the
    /// b-th hybrid layer). A later hybrid layer's copy of a tied block returns nil (dropped, as
    /// transformers ties it on load). A layer whose tensors contradict the schedule is refused.
    static func zamba2CanonicalName(_ name: String, config: ModelConfig, path: String) throws -> String? {
        switch name {
        case "model.embed_tokens.weight": return "backbone.embedding.weight"
        case "model.final_layernorm.weight": return "backbone.norm_f.weight"
        default: break
        }
        let parts = name.split(separator: ".", maxSplits: 3, omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "model", parts[1] == "layers", let layer = Int(parts[2]), layer >= 0, layer < config.layerCount,
              let shared = config.sharedBlocks else { return name }
        let rest = String(parts[3])
        let hybridIndex = shared.hybridIndex(ofLayer: layer)
        let isHybridTensor = rest.hasPrefix("mamba_decoder.") || rest.hasPrefix("shared_transformer.") || rest == "linear.weight"
        let isPlainTensor = rest.hasPrefix("mamba.") || rest == "input_layernorm.weight"
        if (isHybridTensor && hybridIndex == nil) || (isPlainTensor && hybridIndex != nil) {
            throw CheckpointError.layerScheduleMismatch(path: path, tensor: name, layer: layer, tensorsSayHybrid: isHybridTensor)
        }
        let mixer = rest.hasPrefix("mamba_decoder.") ? String(rest.dropFirst("mamba_decoder.".count)) : rest
        if mixer.hasPrefix("mamba.") { return "backbone.layers.\(layer).mixer." + mixer.dropFirst("mamba.".count) }
        if mixer == "input_layernorm.weight" { return "backbone.layers.\(layer).norm.weight" }
        if rest.hasPrefix("shared_transformer."), let j = hybridIndex, j >= shared.blockCount { return nil }   // tied copy of block j mod blocks
        return name
    }

    /// Where shared block b's tensors live: under the b-th hybrid layer (transformers saves a tied
    /// block once, under the first layer that runs it).
    static func zamba2BlockPrefix(_ shared: SharedBlockConfig, block b: Int) -> String {
        "model.layers.\(shared.hybridLayers[b]).shared_transformer."
    }

    /// The shared blocks' tensors, their adapters and the per-layer linears, with shapes.
    static func zamba2SharedShapes(_ c: ModelConfig, _ a: SharedBlockConfig) -> [String: [Int]] {
        let D = c.dModel, D2 = 2 * c.dModel, I = a.mlpWidth, r = a.adapterRank
        let qWidth = a.attentionHeads * a.attentionHeadDim, kvWidth = a.keyValueHeads * a.attentionHeadDim
        var s: [String: [Int]] = [:]
        for b in 0..<min(a.blockCount, a.hybridLayers.count) {
            let p = zamba2BlockPrefix(a, block: b)
            s[p + "input_layernorm.weight"] = [D2]                              // RMSNorm over [h | h₀]
            s[p + "self_attn.q_proj.weight"] = [qWidth, D2]
            s[p + "self_attn.k_proj.weight"] = [kvWidth, D2]
            s[p + "self_attn.v_proj.weight"] = [kvWidth, D2]
            s[p + "self_attn.o_proj.weight"] = [D, qWidth]
            s[p + "pre_ff_layernorm.weight"] = [D]
            s[p + "feed_forward.gate_up_proj.weight"] = [2 * I, D]
            s[p + "feed_forward.down_proj.weight"] = [D, I]
            if a.mlpBias { s[p + "feed_forward.gate_up_proj.bias"] = [2 * I]; s[p + "feed_forward.down_proj.bias"] = [D] }
            for j in stride(from: b, to: a.hybridLayers.count, by: a.blockCount) {
                s[p + "feed_forward.gate_up_proj_adapter_list.\(j).0.weight"] = [r, D]
                s[p + "feed_forward.gate_up_proj_adapter_list.\(j).1.weight"] = [2 * I, r]
                if a.attentionAdapters {
                    for x in ["q", "k", "v"] {
                        s[p + "self_attn.linear_\(x)_adapter_list.\(j).0.weight"] = [r, D2]
                        s[p + "self_attn.linear_\(x)_adapter_list.\(j).1.weight"] = [D2, r]
                    }
                }
            }
        }
        for layer in a.hybridLayers { s["model.layers.\(layer).linear.weight"] = [D, D] }
        return s
    }

    /// Info of a canonical tensor.
    public func info(_ name: String) throws -> TensorInfo {
        guard let e = entries[name] else { throw CheckpointError.missingTensor(directory: directory, tensor: name) }
        return e.info
    }

    /// The distinct dtypes of the stored tensors, sorted by name.
    public var weightDTypes: [DType] { Set(entries.values.map(\.info.dtype)).sorted { $0.rawValue < $1.rawValue } }

    /// A tensor converted to f32 (a fresh copy). The tensor's pages are then dropped from this
    /// process (they stay in the page cache), so converting a 7B checkpoint layer by layer keeps
    /// the resident set at one layer instead of growing to the whole file.
    public func floats(_ name: String) throws -> [Float] {
        guard let e = entries[name] else { throw CheckpointError.missingTensor(directory: directory, tensor: name) }
        var out = [Float](repeating: 0, count: e.info.elementCount)
        out.withUnsafeMutableBufferPointer { _ = convertToFloat32(sources[e.source].bytes(of: e.info), dtype: e.info.dtype, into: $0) }
        sources[e.source].release(e.info)
        return out
    }

    /// A weight matrix for the matrix products: f32 tensors are used in place in the mapping
    /// (no copy; the pages are shared with the page cache), others are converted to f32.
    public func matrix(_ name: String) throws -> WeightMatrix {
        guard let e = entries[name] else { throw CheckpointError.missingTensor(directory: directory, tensor: name) }
        let bytes = sources[e.source].bytes(of: e.info)
        if e.info.dtype == .f32, let base = bytes.baseAddress, Int(bitPattern: base) % MemoryLayout<Float>.alignment == 0 {
            return WeightMatrix(mapped: base.assumingMemoryBound(to: Float.self), count: e.info.elementCount, keepAlive: sources[e.source])
        }
        return WeightMatrix(owned: try floats(name))
    }

    /// Rows `rows` of a 2-D tensor converted to f32: [rows.count, columns] (embedding lookup
    /// without converting the whole matrix).
    public func floatRows(_ name: String, rows: [Int]) throws -> [Float] {
        guard let e = entries[name], e.info.shape.count == 2 else {
            throw CheckpointError.notMatrix(directory: directory, tensor: name)
        }
        let columns = e.info.shape[1], rowBytes = columns * e.info.dtype.byteSize
        let bytes = sources[e.source].bytes(of: e.info)
        var out = [Float](repeating: 0, count: rows.count * columns)
        try out.withUnsafeMutableBufferPointer { dst in
            for (i, r) in rows.enumerated() {
                guard r >= 0 && r < e.info.shape[0] else {
                    throw CheckpointError.rowOutOfRange(directory: directory, tensor: name, row: r, rows: e.info.shape[0])
                }
                let src = UnsafeRawBufferPointer(rebasing: bytes[(r * rowBytes)..<((r + 1) * rowBytes)])
                convertToFloat32(src, dtype: e.info.dtype, into: UnsafeMutableBufferPointer(rebasing: dst[(i * columns)..<((i + 1) * columns)]))
            }
        }
        return out
    }

    /// Identity of the model: SHA-256 over the canonical config, every tensor's name, shape and
    /// dtype, and the bytes of every tensor (in name order). Same weights in another layout or
    /// shard split give the same fingerprint; the same weights in another dtype do not.
    public func fingerprint() -> String {
        var hasher = SHA256()
        let configJSON = (try? JSONEncoder.sortedKeys.encode(FingerprintConfig(config))) ?? Data()
        hasher.update(data: configJSON)
        for name in entries.keys.sorted() {
            let e = entries[name]!
            hasher.update(data: Data("\n\(name)|\(e.info.dtype.rawValue)|\(e.info.shape)".utf8))
            hasher.update(bufferPointer: sources[e.source].bytes(of: e.info))
            // Hashing reads every page of the file: drop them again, or the resident set of a
            // 7B checkpoint would grow to the whole checkpoint.
            sources[e.source].release(e.info)
        }
        return hasher.finalize().hexString
    }
}

/// The config fields that define the computation (not the layout the file used).
private struct FingerprintConfig: Encodable {
    let architecture: String, dModel: Int, layers: Int, vocab: Int, dState: Int, dConv: Int, dInner: Int
    let dtRank: Int, headDim: Int, heads: Int, groups: Int, eps: Float, dtLimit: [String]
    /// Zamba2 only (absent, so other fingerprints are unchanged, for the other families).
    let sharedBlocks: SharedBlockConfig?
    init(_ c: ModelConfig) {
        sharedBlocks = c.sharedBlocks
        architecture = c.architecture.rawValue; dModel = c.dModel; layers = c.layerCount; vocab = c.paddedVocabSize
        dState = c.dState; dConv = c.dConv; dInner = c.dInner; dtRank = c.dtRank; headDim = c.headDim
        heads = c.headCount; groups = c.groupCount; eps = c.normEpsilon
        dtLimit = ["\(c.dtLimitLower)", "\(c.dtLimitUpper)"]
    }
}

extension JSONEncoder {
    static var sortedKeys: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }
}

/// A weight matrix in f32: either a view into the checkpoint's mapping or a converted copy.
public struct WeightMatrix: @unchecked Sendable {
    private let owned: [Float]
    private let mapped: UnsafePointer<Float>?
    public let count: Int
    /// Keeps the mapping alive as long as a view into it exists.
    private let keepAlive: (any TensorSource)?

    init(owned: [Float]) { self.owned = owned; mapped = nil; count = owned.count; keepAlive = nil }
    init(mapped: UnsafePointer<Float>, count: Int, keepAlive: any TensorSource) {
        owned = []; self.mapped = mapped; self.count = count; self.keepAlive = keepAlive
    }

    /// Whether the values are read from the mapped file in place.
    public var isMapped: Bool { mapped != nil }

    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        if let mapped { return try body(UnsafeBufferPointer(start: mapped, count: count)) }
        return try owned.withUnsafeBufferPointer(body)
    }
}
