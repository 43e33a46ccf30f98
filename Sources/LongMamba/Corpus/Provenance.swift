// What a sample was made from, precisely enough to find every document again. Codable so it
// can be written as provenance.json and later stored with the table.

/// How documents become sequences.
public enum Packing: String, Sendable, Codable, CaseIterable {
    /// One document with at least L tokens per sequence, cut at a seeded offset.
    case document
    /// Documents joined with EOS after each (as in pre-training), cut into consecutive L-token sequences.
    case packed
}

/// Sampling parameters; together with the corpus files and tokenizer they fix the sample.
public struct SamplerOptions: Sendable, Codable, Equatable {
    public var count: Int
    public var length: Int
    public var seed: UInt64
    public var packing: Packing
    /// Only documents whose `pile_set_name` is one of these (empty: all).
    public var subsets: [String]
    /// Never documents whose `pile_set_name` is one of these.
    public var excludedSubsets: [String]
    /// Documents with fewer tokens are not eligible (document mode also needs `length`).
    public var minDocumentTokens: Int
    /// Longer lines (or .txt files) are errors, or skipped with `skipBadLines`.
    public var maxLineBytes: Int
    /// Skip and count malformed lines instead of failing.
    public var skipBadLines: Bool
    /// Hash every corpus file (SHA-256 of its bytes) during the pass, for provenance.
    public var hashFiles: Bool

    public init(count: Int, length: Int, seed: UInt64, packing: Packing = .document,
                subsets: [String] = [], excludedSubsets: [String] = [], minDocumentTokens: Int = 1,
                maxLineBytes: Int = 256 << 20, skipBadLines: Bool = false, hashFiles: Bool = true) {
        self.count = count
        self.length = length
        self.seed = seed
        self.packing = packing
        self.subsets = subsets
        self.excludedSubsets = excludedSubsets
        self.minDocumentTokens = minDocumentTokens
        self.maxLineBytes = maxLineBytes
        self.skipBadLines = skipBadLines
        self.hashFiles = hashFiles
    }
}

/// Identity of the tokenizer used.
public struct TokenizerIdentity: Sendable, Codable, Equatable {
    public var source: String
    public var sha256: String
    public var vocabularySize: Int
    public var eosTokenId: Int?
}

/// Part of one document inside one sequence.
public struct DocumentSpan: Sendable, Codable, Equatable {
    /// Corpus file, as given (index into `SampleProvenance.files` too).
    public var file: String
    public var fileIndex: Int
    /// 1-based line number in the (decompressed) file; 1 for a .txt document.
    public var line: Int
    /// Byte offset of the line in the decompressed stream.
    public var byteOffset: Int64
    public var subset: String?
    /// Tokens in the whole document.
    public var documentTokens: Int
    /// The document's tokens used here: `tokenStart..<tokenEnd`.
    public var tokenStart: Int
    public var tokenEnd: Int
    /// Where they start in the sequence.
    public var sequenceStart: Int
    /// Whether the EOS token that follows the document (packed mode) is in this sequence.
    public var followedByEOS: Bool
}

public struct SequenceProvenance: Sendable, Codable, Equatable {
    public var index: Int
    public var tokenCount: Int
    public var documents: [DocumentSpan]
}

/// Counts from the pass over the corpus.
public struct SamplingStatistics: Sendable, Codable, Equatable {
    /// Non-blank lines plus .txt files.
    public var documentsSeen = 0
    /// Documents that passed the cheap filters (subset, byte length) and got a sampling key.
    public var candidates = 0
    /// Candidates whose key could place them in the sample, so they were decoded and tokenized.
    public var tokenized = 0
    public var blankLines = 0
    public var decompressedBytes: Int64 = 0
    /// Skipped bad lines by reason (only with `skipBadLines`).
    public var skipped: [String: Int] = [:]
    /// The first few skipped lines, with file and position.
    public var skippedExamples: [String] = []
}

public struct CorpusFileRecord: Sendable, Codable, Equatable {
    public var path: String
    public var format: CorpusFile.Format
    public var sizeBytes: Int64
    /// SHA-256 of the file's bytes (compressed bytes for .zst), computed during the pass;
    /// nil when hashing was turned off.
    public var sha256: String?
}

/// Everything `provenance.json` holds.
public struct SampleProvenance: Sendable, Codable, Equatable {
    public var schemaVersion: Int
    public var tool: String
    public var toolVersion: String
    public var options: SamplerOptions
    public var tokenizer: TokenizerIdentity
    public var files: [CorpusFileRecord]
    public var statistics: SamplingStatistics
    public var sequences: [SequenceProvenance]
}
