// Seeded one-pass sampling. Every document that passes the cheap filters (subset bytes, and
// at least as many bytes as the tokens it needs, since a token covers at least one byte) gets
// a random key from xoshiro256**(seed), in corpus order. The sample is the eligible documents
// with the smallest keys — a uniform sample without replacement (bottom-k sampling).
// A document is decoded and tokenized only if its key could still place it in the sample, so
// eligibility by token count is exact and the pass stays single: if fewer than K documents
// qualify, every candidate was tokenized and the shortfall is certain, not an artefact.

import Foundation

/// Progress of the pass, for a progress display.
public struct SamplingProgress: Sendable {
    public var fileBytesRead: Int64
    public var totalFileBytes: Int64
    public var decompressedBytes: Int64
    public var documentsSeen: Int
    public var fileIndex: Int
    public var fileCount: Int
    public var elapsedSeconds: Double
}

/// The sampled sequences and how they were made.
public struct CorpusSample: Sendable {
    public var sequences: [[Int32]]
    public var provenance: SampleProvenance

    /// Writes `sample-{k}.tokens` (whitespace-separated ids) and `provenance.json` into `directory`.
    public func write(to directory: String) throws {
        let fm = FileManager.default
        do {
            try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
            for (k, ids) in sequences.enumerated() {
                let text = ids.map(String.init).joined(separator: " ") + "\n"
                try Data(text.utf8).write(to: URL(fileURLWithPath: directory).appendingPathComponent("sample-\(k).tokens"))
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            try encoder.encode(provenance).write(to: URL(fileURLWithPath: directory).appendingPathComponent("provenance.json"))
        } catch {
            throw CorpusError.io(path: directory, reason: "cannot write the sample (\(error.localizedDescription))")
        }
    }
}

public struct CorpusSampler {
    public let files: [CorpusFile]
    public let tokenizer: BPETokenizer
    public let options: SamplerOptions
    /// Decompress .zst files on a second thread while this one splits, parses and samples (the
    /// sample is the same either way; not part of the options, so not of a run's identity).
    public var decodeAhead = true

    public init(files: [CorpusFile], tokenizer: BPETokenizer, options: SamplerOptions) throws {
        guard options.count >= 1 else { throw CorpusError.invalidOption("--count must be at least 1") }
        guard options.length >= 1 else { throw CorpusError.invalidOption("--length must be at least 1") }
        guard options.maxLineBytes >= 1 else { throw CorpusError.invalidOption("--max-line-bytes must be positive") }
        if options.packing == .packed, tokenizer.eosTokenId == nil {
            throw CorpusError.invalidOption("packed mode needs an EOS token, and \(tokenizer.source) has no <|endoftext|>")
        }
        guard !files.isEmpty else { throw CorpusError.noInputs }
        self.files = files
        self.tokenizer = tokenizer
        self.options = options
    }

    /// A document that is (for now) in the sample.
    struct Member {
        var key: UInt64
        var ordinal: Int
        var fileIndex: Int
        var line: Int
        var byteOffset: Int64
        var subset: String?
        var documentTokens: Int
        /// Document mode: the L-token window and where it starts; packed mode: all tokens.
        var tokens: [Int32]
        var windowStart: Int

        func precedes(_ other: Member) -> Bool { (key, ordinal) < (other.key, other.ordinal) }
    }

    /// Tokens a document needs to be eligible.
    var minimumTokens: Int {
        options.packing == .document ? max(options.length, options.minDocumentTokens) : max(1, options.minDocumentTokens)
    }

    static func sha256(ofFile path: String) throws -> String {
        let reader = try CorpusByteReader(path: path, isZstd: false, hashing: true)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        while try reader.read(into: buffer, count: 1 << 20) > 0 {}
        return reader.finishHash() ?? ""
    }

    public func run(progress: ((SamplingProgress) -> Void)? = nil) throws -> CorpusSample {
        var state = PassState(sampler: self)
        let started = Date()
        let totalBytes = files.reduce(0) { $0 + $1.sizeBytes }
        var bytesBeforeFile: Int64 = 0
        var lastReport = Date.distantPast

        func report(_ fileIndex: Int, _ fileBytes: Int64, force: Bool = false) {
            guard let progress else { return }
            let now = Date()
            guard force || now.timeIntervalSince(lastReport) >= 1 else { return }
            lastReport = now
            progress(SamplingProgress(
                fileBytesRead: bytesBeforeFile + fileBytes, totalFileBytes: totalBytes,
                decompressedBytes: state.stats.decompressedBytes, documentsSeen: state.stats.documentsSeen,
                fileIndex: fileIndex, fileCount: files.count, elapsedSeconds: now.timeIntervalSince(started)))
        }

        for (fileIndex, file) in files.enumerated() {
            switch file.format {
            case .text:
                try state.considerTextFile(file, fileIndex: fileIndex)
                if options.hashFiles { state.fileHashes[fileIndex] = try Self.sha256(ofFile: file.path) }
                report(fileIndex, file.sizeBytes)
            case .jsonl, .jsonlZstd:
                let reader = try CorpusByteReader(path: file.path, isZstd: file.format == .jsonlZstd, hashing: options.hashFiles, decodeAhead: decodeAhead)
                let splitter = LineSplitter(maxLineBytes: options.maxLineBytes)
                var checkEvery = 0
                try splitter.forEachLine(
                    reader,
                    chunkRead: {
                        checkEvery += 1
                        if checkEvery & 7 == 0 { report(fileIndex, reader.fileBytesRead) }
                    },
                    tooLong: { line, offset in
                        let error = CorpusError.lineTooLong(path: file.path, line: line, byteOffset: offset, limit: options.maxLineBytes)
                        try state.skipOrThrow(error, reason: "line too long")
                    },
                    { line, number, offset in
                        state.stats.decompressedBytes = state.decompressedBefore + offset + Int64(line.count) + 1
                        try state.considerLine(line, file: file, fileIndex: fileIndex, lineNumber: number, byteOffset: offset)
                    })
                report(fileIndex, reader.fileBytesRead, force: true)
                state.fileHashes[fileIndex] = reader.finishHash()
            }
            bytesBeforeFile += file.sizeBytes
            state.decompressedBefore = state.stats.decompressedBytes
        }
        return try state.finish()
    }
}

/// Mutable state of one pass.
struct PassState {
    let sampler: CorpusSampler
    var options: SamplerOptions { sampler.options }
    var stats = SamplingStatistics()
    var rng: Xoshiro256StarStar
    var encoder: TokenEncoder
    /// Members sorted by (key, ordinal).
    var members: [CorpusSampler.Member] = []
    /// Packed mode: tokens in `members` including one EOS each.
    var memberTokens = 0
    let includeSubsets: [[UInt8]]
    let excludeSubsets: [[UInt8]]
    let minimumTokens: Int
    let neededTokens: Int
    var decompressedBefore: Int64 = 0
    var fileHashes: [Int: String] = [:]

    init(sampler: CorpusSampler) {
        self.sampler = sampler
        rng = Xoshiro256StarStar(seed: sampler.options.seed)
        encoder = sampler.tokenizer.makeEncoder()
        includeSubsets = sampler.options.subsets.map { Array($0.utf8) }
        excludeSubsets = sampler.options.excludedSubsets.map { Array($0.utf8) }
        minimumTokens = sampler.minimumTokens
        neededTokens = sampler.options.count * sampler.options.length
    }

    mutating func skipOrThrow(_ error: CorpusError, reason: String) throws {
        guard options.skipBadLines else { throw error }
        stats.skipped[reason, default: 0] += 1
        if stats.skippedExamples.count < 20 { stats.skippedExamples.append("\(error)") }
    }

    /// Whether a document with this key can still enter the sample.
    func keyCouldEnter(_ key: UInt64, _ ordinal: Int) -> Bool {
        guard let last = members.last else { return true }
        let full = options.packing == .document ? members.count >= options.count : memberTokens >= neededTokens
        return !full || (key, ordinal) < (last.key, last.ordinal)
    }

    func subsetAllowed(_ name: String?) -> Bool {
        if !options.subsets.isEmpty { guard let name, options.subsets.contains(name) else { return false } }
        if let name, options.excludedSubsets.contains(name) { return false }
        return true
    }

    mutating func considerLine(_ rawLine: UnsafeBufferPointer<UInt8>, file: CorpusFile, fileIndex: Int,
                               lineNumber: Int, byteOffset: Int64) throws {
        let content = PileLine.trimmedRange(rawLine)
        let line = UnsafeBufferPointer(rebasing: rawLine[content])
        if line.isEmpty { stats.blankLines += 1; return }
        stats.documentsSeen += 1
        func bad(_ error: CorpusError, _ reason: String) throws { try skipOrThrow(error, reason: reason) }
        guard line.first == UInt8(ascii: "{"), line.last == UInt8(ascii: "}") else {
            return try bad(.malformedLine(path: file.path, line: lineNumber, byteOffset: byteOffset,
                                          reason: "does not start with '{' and end with '}'"), "malformed JSON")
        }
        guard PileLine.hasTextKey(line) else {
            return try bad(.missingText(path: file.path, line: lineNumber, byteOffset: byteOffset), "no text field")
        }
        // Cheap filters: subset bytes, then byte length (a token covers at least one byte).
        var subsetKnown = true
        if !includeSubsets.isEmpty || !excludeSubsets.isEmpty {
            switch PileLine.subset(line) {
            case .absent:
                if !includeSubsets.isEmpty { return }
            case .name(let r):
                let value = UnsafeBufferPointer(rebasing: line[r])
                if !includeSubsets.isEmpty, !includeSubsets.contains(where: { $0.elementsEqual(value) }) { return }
                if excludeSubsets.contains(where: { $0.elementsEqual(value) }) { return }
            case .escaped:
                subsetKnown = false
            }
        }
        if line.count < minimumTokens { return }
        stats.candidates += 1
        let key = rng.next()
        let ordinal = stats.candidates
        guard keyCouldEnter(key, ordinal) else { return }

        let decoded: (text: String, subset: String?)
        do {
            decoded = try PileLine.decode(line)
        } catch {
            let inLine = Int64(content.lowerBound)
            switch error {
            case .invalidUTF8(let offset):
                return try bad(.invalidUTF8(path: file.path, line: lineNumber, byteOffset: byteOffset + inLine + Int64(offset)), "invalid UTF-8")
            case .malformed(let reason):
                return try bad(.malformedLine(path: file.path, line: lineNumber, byteOffset: byteOffset, reason: reason), "malformed JSON")
            case .missingText:
                return try bad(.missingText(path: file.path, line: lineNumber, byteOffset: byteOffset), "no text field")
            }
        }
        if !subsetKnown || !includeSubsets.isEmpty || !excludeSubsets.isEmpty {
            guard subsetAllowed(decoded.subset) else { return }
        }
        admit(text: decoded.text, key: key, ordinal: ordinal, fileIndex: fileIndex, line: lineNumber,
              byteOffset: byteOffset, subset: decoded.subset)
    }

    /// A .txt file is one document (no subset name).
    mutating func considerTextFile(_ file: CorpusFile, fileIndex: Int) throws {
        stats.documentsSeen += 1
        guard options.subsets.isEmpty else { return }
        if file.sizeBytes > Int64(options.maxLineBytes) {
            return try skipOrThrow(.lineTooLong(path: file.path, line: 1, byteOffset: 0, limit: options.maxLineBytes), reason: "line too long")
        }
        if file.sizeBytes < Int64(minimumTokens) { return }
        stats.candidates += 1
        let key = rng.next()
        let ordinal = stats.candidates
        guard keyCouldEnter(key, ordinal) else { return }
        let bytes: [UInt8]
        do {
            bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: file.path)))
        } catch {
            throw CorpusError.io(path: file.path, reason: "cannot read (\(error.localizedDescription))")
        }
        stats.decompressedBytes += Int64(bytes.count)
        if let bad = bytes.withUnsafeBufferPointer(UTF8Check.firstInvalidOffset) {
            return try skipOrThrow(.invalidUTF8(path: file.path, line: 1, byteOffset: Int64(bad)), reason: "invalid UTF-8")
        }
        admit(text: String(decoding: bytes, as: UTF8.self), key: key, ordinal: ordinal, fileIndex: fileIndex,
              line: 1, byteOffset: 0, subset: nil)
    }

    /// Tokenizes a candidate and puts it in the sample if it is long enough.
    mutating func admit(text: String, key: UInt64, ordinal: Int, fileIndex: Int, line: Int, byteOffset: Int64, subset: String?) {
        stats.tokenized += 1
        let tokens = encoder.encodeInt32(text)
        guard tokens.count >= minimumTokens else { return }
        var member = CorpusSampler.Member(
            key: key, ordinal: ordinal, fileIndex: fileIndex, line: line, byteOffset: byteOffset,
            subset: subset, documentTokens: tokens.count, tokens: tokens, windowStart: 0)
        if options.packing == .document {
            // The cut is derived from the document's own key, so it does not depend on the
            // order in which documents enter or leave the sample.
            var cutRandom = SplitMix64(seed: key)
            let start = boundedRandom(cutRandom.next(), tokens.count - options.length + 1)
            member.windowStart = start
            member.tokens = Array(tokens[start..<(start + options.length)])
        }
        let at = members.firstIndex { member.precedes($0) } ?? members.count
        members.insert(member, at: at)
        switch options.packing {
        case .document:
            if members.count > options.count { members.removeLast() }
        case .packed:
            memberTokens += tokens.count + 1
            while let last = members.last, members.count > 1, memberTokens - (last.documentTokens + 1) >= neededTokens {
                memberTokens -= last.documentTokens + 1
                members.removeLast()
            }
        }
    }

    func criteria() -> String {
        var parts = ["at least \(minimumTokens) tokens"]
        if !options.subsets.isEmpty { parts.append("subset in [\(options.subsets.joined(separator: ", "))]") }
        if !options.excludedSubsets.isEmpty { parts.append("subset not in [\(options.excludedSubsets.joined(separator: ", "))]") }
        return parts.joined(separator: ", ")
    }

    func finish() throws -> CorpusSample {
        if stats.documentsSeen == 0 { throw CorpusError.emptyCorpus(files: sampler.files.count) }
        var sequences: [[Int32]] = []
        var spans: [SequenceProvenance] = []
        let files = sampler.files
        func span(_ m: CorpusSampler.Member, start: Int, end: Int, at: Int, eos: Bool) -> DocumentSpan {
            DocumentSpan(file: files[m.fileIndex].path, fileIndex: m.fileIndex, line: m.line, byteOffset: m.byteOffset,
                         subset: m.subset, documentTokens: m.documentTokens, tokenStart: start, tokenEnd: end,
                         sequenceStart: at, followedByEOS: eos)
        }
        switch options.packing {
        case .document:
            guard members.count >= options.count else {
                throw CorpusError.notEnoughDocuments(eligible: members.count, needed: options.count, criteria: criteria())
            }
            for (k, m) in members.enumerated() {
                sequences.append(m.tokens)
                spans.append(SequenceProvenance(index: k, tokenCount: m.tokens.count, documents: [
                    span(m, start: m.windowStart, end: m.windowStart + options.length, at: 0, eos: false)]))
            }
        case .packed:
            guard memberTokens >= neededTokens else {
                throw CorpusError.notEnoughTokens(available: memberTokens, needed: neededTokens, criteria: criteria())
            }
            guard let eosId = sampler.tokenizer.eosTokenId else {
                throw CorpusError.invalidOption("packed mode needs an EOS token, and \(sampler.tokenizer.source) has no <|endoftext|>")
            }
            let eos = Int32(eosId)
            let L = options.length
            var current: [Int32] = []
            var currentSpans: [DocumentSpan] = []
            outer: for m in members {
                var pos = 0
                // The document's tokens followed by EOS, cut wherever a sequence fills up.
                while pos <= m.tokens.count {
                    let room = L - current.count
                    let take = min(room, m.tokens.count - pos)
                    current.append(contentsOf: m.tokens[pos..<(pos + take)])
                    var withEOS = false
                    if pos + take == m.tokens.count && current.count < L {
                        current.append(eos)
                        withEOS = true
                    }
                    if take > 0 || withEOS {
                        currentSpans.append(span(m, start: pos, end: pos + take, at: current.count - take - (withEOS ? 1 : 0), eos: withEOS))
                    }
                    pos += take
                    if withEOS { pos += 1 }
                    if current.count == L {
                        spans.append(SequenceProvenance(index: sequences.count, tokenCount: L, documents: currentSpans))
                        sequences.append(current)
                        current = []
                        currentSpans = []
                        if sequences.count == options.count { break outer }
                    }
                }
            }
        }
        let provenance = SampleProvenance(
            schemaVersion: 1, tool: ToolInfo.name, toolVersion: ToolInfo.version, options: options,
            tokenizer: TokenizerIdentity(source: sampler.tokenizer.source, sha256: sampler.tokenizer.sha256,
                                         vocabularySize: sampler.tokenizer.vocabularySize,
                                         eosTokenId: sampler.tokenizer.eosTokenId),
            files: files.enumerated().map { i, f in
                CorpusFileRecord(path: f.path, format: f.format, sizeBytes: f.sizeBytes, sha256: fileHashes[i])
            },
            statistics: stats, sequences: spans)
        return CorpusSample(sequences: sequences, provenance: provenance)
    }
}
