// A Hugging Face `tokenizer.json` with a byte-level BPE model (GPT-2, GPT-NeoX, Pythia, Mamba).
// The pipeline is HF's: split out added tokens → NFC → split out normalized added tokens →
// ByteLevel pre-tokenizer (GPT-2 regex) → BPE merges. Anything outside that subset is refused
// with `TokenizerError.unsupported` rather than tokenized differently.

import Foundation

/// A byte-level BPE tokenizer loaded from a Hugging Face `tokenizer.json`.
public struct BPETokenizer: Sendable {
    /// Where the tokenizer was loaded from (for messages and provenance).
    public let source: String
    /// SHA-256 of the file's bytes, lowercase hex: the tokenizer's identity in provenance.
    public let sha256: String
    /// Distinct tokens in the model vocabulary plus added tokens (HF `get_vocab_size()`).
    public let vocabularySize: Int
    /// Id of `<|endoftext|>` when the tokenizer has it.
    public let eosTokenId: Int?
    /// The largest id the tokenizer can produce (model vocabulary and added tokens).
    public var largestTokenId: Int { tokens.count - 1 }

    let model: BPEModel
    let normalizeNFC: Bool
    let addPrefixSpace: Bool
    let useRegex: Bool
    let rawAddedTokens: AddedTokenMatcher
    let normalizedAddedTokens: AddedTokenMatcher
    /// Token string of each id (nil for unused ids) and the bytes it decodes to.
    let tokens: [String?]
    let decodedBytes: [[UInt8]]
    let specialIds: Set<Int>

    /// Where a model directory keeps its tokenizer (Hugging Face layout).
    public static func defaultPath(modelDirectory: String) -> String {
        URL(fileURLWithPath: modelDirectory).appendingPathComponent("tokenizer.json").path
    }

    /// Loads `tokenizer.json` from a file.
    public init(contentsOf path: String) throws {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw TokenizerError.unreadable(path: path, reason: "\(error.localizedDescription)")
        }
        try self.init(data: data, source: path)
    }

    /// Parses the contents of a `tokenizer.json`; `source` names it in errors.
    public init(data: Data, source: String) throws {
        self.source = source
        sha256 = SHA256.hash(data: data).hexString
        func malformed(_ reason: String) -> TokenizerError { .malformed(path: source, reason: reason) }
        func unsupported(_ component: String, _ hint: String) -> TokenizerError {
            .unsupported(path: source, component: component, hint: hint)
        }
        let file: TokenizerFile
        switch TokenizerFile.decode(data) {
        case .success(let f): file = f
        case .failure(.notAnObject): throw malformed("top level is not a JSON object")
        case .failure(.notJSON(let reason)): throw malformed("not valid JSON (\(reason))")
        }

        if file.truncation { throw unsupported("truncation (non-null)", "Save the tokenizer with truncation disabled; it would change encode results.") }
        if file.padding { throw unsupported("padding (non-null)", "Save the tokenizer with padding disabled; it would change encode results.") }

        // Normalizer: none or NFC.
        if let n = file.normalizer {
            guard let type = n.type else { throw malformed("normalizer has no type") }
            guard type == "NFC" else {
                throw unsupported("normalizer '\(type)'", "Only NFC (or no normalizer) is implemented.")
            }
            normalizeNFC = true
        } else {
            normalizeNFC = false
        }

        // Pre-tokenizer: ByteLevel.
        guard let pre = file.preTokenizer, let preType = pre.type else {
            throw unsupported("pre_tokenizer 'null'", "A ByteLevel pre-tokenizer is required.")
        }
        guard preType == "ByteLevel" else {
            throw unsupported("pre_tokenizer '\(preType)'", "Only ByteLevel is implemented.")
        }
        addPrefixSpace = pre.addPrefixSpace ?? true
        useRegex = pre.useRegex ?? true

        // Decoder: ByteLevel. Post-processor: none or ByteLevel (which only moves offsets).
        let decoderType = file.decoder?.type ?? "null"
        guard decoderType == "ByteLevel" else {
            throw unsupported("decoder '\(decoderType)'", "Only the ByteLevel decoder is implemented.")
        }
        if let post = file.postProcessor {
            let type = post.type ?? "?"
            guard type == "ByteLevel" else {
                throw unsupported("post_processor '\(type)'", "Only ByteLevel (or none) is implemented; others add tokens.")
            }
        }

        // Model: BPE without dropout, prefixes/suffixes or byte fallback.
        guard let m = file.model else { throw malformed("no model object") }
        let modelType = m.type ?? (m.hasMergesKey ? "BPE" : "?")
        guard modelType == "BPE" else {
            throw unsupported("model '\(modelType)'", "Only BPE is implemented.")
        }
        if let dropout = m.dropout, dropout > 0 {
            throw unsupported("BPE dropout \(dropout)", "Dropout makes encoding random; save without it.")
        }
        for (key, value) in [("continuing_subword_prefix", m.continuingSubwordPrefix), ("end_of_word_suffix", m.endOfWordSuffix)] {
            if let s = value, !s.isEmpty {
                throw unsupported("BPE \(key) '\(s)'", "Byte-level BPE does not use it.")
            }
        }
        if m.byteFallback == true {
            throw unsupported("BPE byte_fallback", "Only plain byte-level BPE is implemented.")
        }
        guard let vocabObject = m.vocab else { throw malformed("model.vocab is missing") }
        var vocab: [String: Int32] = [:]
        vocab.reserveCapacity(vocabObject.count)
        var maxId = -1
        for (token, value) in vocabObject {
            guard let id = value, id >= 0, id < Int(Int32.max) else {
                throw malformed("vocab entry '\(token)' has no valid id")
            }
            vocab[token] = Int32(id)
            maxId = max(maxId, id)
        }

        var byteIds = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            byteIds[b] = vocab[String(Character(ByteLevel.byteToScalar[b]))] ?? -1
        }

        guard let mergeList = m.merges else { throw malformed("model.merges is missing") }
        var merges = MergeTable(capacity: mergeList.count)
        for (rank, entry) in mergeList.enumerated() {
            let left: String, right: String
            switch entry {
            case .joined(let s):
                let parts = s.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw malformed("merge \(rank) '\(s)' is not two tokens separated by one space") }
                left = String(parts[0]); right = String(parts[1])
            case let .pair(a, b):
                left = a; right = b
            case .invalid:
                throw malformed("merge \(rank) is neither \"a b\" nor [a, b]")
            }
            guard let a = vocab[left], let b = vocab[right] else {
                throw malformed("merge \(rank) uses a token missing from the vocabulary ('\(left)' '\(right)')")
            }
            guard let merged = vocab[left + right] else {
                throw malformed("merge \(rank) result '\(left + right)' is missing from the vocabulary")
            }
            _ = merges.insert(a, b, rank: Int32(rank), merged: merged)
        }
        var unknownId: Int32?
        if let unk = m.unkToken {
            guard let id = vocab[unk] else { throw malformed("unk_token '\(unk)' is not in the vocabulary") }
            unknownId = id
        }
        model = BPEModel(
            byteIds: byteIds, merges: merges, unknownId: unknownId,
            fuseUnknown: m.fuseUnk ?? false,
            wholeWordIds: m.ignoreMerges ?? false ? vocab : nil)

        // Added tokens.
        var raw = AddedTokenMatcher()
        var normalized = AddedTokenMatcher()
        var special = Set<Int>()
        var allTokens = vocab
        var added: [(content: String, id: Int)] = []
        for entry in file.addedTokens {
            guard let content = entry.content, let id = entry.id, id >= 0, id < Int(Int32.max) else {
                throw malformed("an added token has no content or id")
            }
            for (option, set) in [("single_word", entry.singleWord), ("lstrip", entry.lstrip), ("rstrip", entry.rstrip)] where set == true {
                throw unsupported("added token option \(option) (token '\(content)')", "Only plain added tokens are implemented.")
            }
            let isNormalized = entry.normalized ?? !(entry.special ?? false)
            if isNormalized {
                let text = normalizeNFC ? NFC.normalize(content) : content
                normalized.add(Array(text.utf8), id: Int32(id))
            } else {
                raw.add(Array(content.utf8), id: Int32(id))
            }
            if entry.special == true { special.insert(id) }
            if allTokens[content] == nil { allTokens[content] = Int32(id) }
            maxId = max(maxId, id)
            added.append((content, id))
        }
        rawAddedTokens = raw
        normalizedAddedTokens = normalized
        specialIds = special
        vocabularySize = allTokens.count

        // Ids index a dense table: a file claiming an id far beyond its token count is damaged
        // (a table that large would exhaust memory before any error could be shown).
        let idLimit = max(1 << 20, 4 * allTokens.count)
        guard maxId < idLimit else {
            throw malformed("token id \(maxId) is far beyond the \(allTokens.count) tokens the file defines (ids must be dense)")
        }
        var tokens = [String?](repeating: nil, count: maxId + 1)
        for (token, id) in vocab { tokens[Int(id)] = token }
        for (content, id) in added { tokens[id] = content }
        self.tokens = tokens
        decodedBytes = tokens.map { $0.map(ByteLevel.decodedBytes(ofToken:)) ?? [] }
        eosTokenId = allTokens["<|endoftext|>"].map(Int.init)
    }

    /// A reusable encoder whose piece cache persists across calls (faster for many texts).
    public func makeEncoder() -> TokenEncoder { TokenEncoder(tokenizer: self) }

    /// Token ids of `text`, as Hugging Face `Tokenizer.encode(text).ids`.
    public func encode(_ text: String) -> [Int] {
        var encoder = makeEncoder()
        return encoder.encode(text)
    }

    /// Token ids of UTF-8 bytes. Invalid UTF-8 throws naming the byte offset unless `lossy`, in
    /// which case each maximal invalid subsequence becomes U+FFFD (Python's errors='replace').
    public func encode(utf8 bytes: [UInt8], lossy: Bool = false, source: String = "input") throws -> [Int] {
        var encoder = makeEncoder()
        return try encoder.encode(utf8: bytes, lossy: lossy, source: source)
    }

    /// Text of `ids` (ByteLevel decoder; invalid byte sequences become U+FFFD like HF).
    /// Special tokens are dropped unless `skipSpecialTokens` is false, matching HF's default.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = true) throws -> String {
        var bytes: [UInt8] = []
        for id in ids {
            guard id >= 0, id < tokens.count, tokens[id] != nil else {
                throw TokenizerError.unknownTokenId(id: id, vocabularySize: tokens.count)
            }
            if skipSpecialTokens && specialIds.contains(id) { continue }
            bytes.append(contentsOf: decodedBytes[id])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The vocabulary string of a token id.
    public func token(forId id: Int) -> String? {
        id >= 0 && id < tokens.count ? tokens[id] : nil
    }
}

/// Encodes texts with a cache of already-merged pieces that lives as long as the encoder.
public struct TokenEncoder {
    public let tokenizer: BPETokenizer
    private var cache = PieceCache()
    private var scratch = MergeScratch()
    private var out: [Int32] = []
    private var prefixed: [UInt8] = []

    init(tokenizer: BPETokenizer) { self.tokenizer = tokenizer }

    public mutating func encode(_ text: String) -> [Int] {
        encodeInt32(text).map(Int.init)
    }

    public mutating func encode(utf8 bytes: [UInt8], lossy: Bool = false, source: String = "input") throws -> [Int] {
        if let bad = bytes.withUnsafeBufferPointer(UTF8Check.firstInvalidOffset) {
            guard lossy else { throw TokenizerError.invalidUTF8(source: source, byteOffset: bad) }
            return encode(String(decoding: bytes, as: UTF8.self))
        }
        return encode(String(decoding: bytes, as: UTF8.self))
    }

    /// Token ids as Int32 (what the sampler stores).
    public mutating func encodeInt32(_ text: String) -> [Int32] {
        out.removeAll(keepingCapacity: true)
        var text = text
        text.withUTF8 { raw in
            tokenizer.rawAddedTokens.split(raw) { segment in
                switch segment {
                case .token(let id): out.append(id)
                case .text(let range): normalizeAndEncode(UnsafeBufferPointer(rebasing: raw[range]))
                }
            }
        }
        return out
    }

    private mutating func normalizeAndEncode(_ raw: UnsafeBufferPointer<UInt8>) {
        if tokenizer.normalizeNFC, NFC.mayChange(raw) {
            let nfc = NFC.normalize(utf8: raw)
            nfc.withUnsafeBufferPointer { splitNormalized($0) }
        } else {
            splitNormalized(raw)
        }
    }

    private mutating func splitNormalized(_ s: UnsafeBufferPointer<UInt8>) {
        tokenizer.normalizedAddedTokens.split(s) { segment in
            switch segment {
            case .token(let id): out.append(id)
            case .text(let range): preTokenize(UnsafeBufferPointer(rebasing: s[range]))
            }
        }
    }

    private mutating func preTokenize(_ s: UnsafeBufferPointer<UInt8>) {
        if tokenizer.addPrefixSpace, s.first != 0x20 {
            prefixed.removeAll(keepingCapacity: true)
            prefixed.append(0x20)
            prefixed.append(contentsOf: s)
            let copy = prefixed
            copy.withUnsafeBufferPointer { splitAndMerge($0) }
        } else {
            splitAndMerge(s)
        }
    }

    private mutating func splitAndMerge(_ s: UnsafeBufferPointer<UInt8>) {
        guard tokenizer.useRegex else { return encodePiece(s) }
        GPT2Split.split(s) { range in encodePiece(UnsafeBufferPointer(rebasing: s[range])) }
    }

    private mutating func encodePiece(_ piece: UnsafeBufferPointer<UInt8>) {
        guard piece.count > 1, piece.count <= PieceCache.maxPieceBytes else {
            return tokenizer.model.encodePiece(piece, into: &out, scratch: &scratch)
        }
        let h = PieceCache.hash(piece)
        if cache.lookup(piece, hash: h, into: &out) { return }
        let start = out.count
        tokenizer.model.encodePiece(piece, into: &out, scratch: &scratch)
        cache.insert(piece, hash: h, ids: out[start...])
    }
}
