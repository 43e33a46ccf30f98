import ArgumentParser
import Foundation
import LongMamba

/// `longmamba sample`: draw K token sequences of length L from a corpus, reproducibly.
struct SampleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sample",
        abstract: "Sample K sequences of L tokens from Pile-format corpus files (seeded, one pass).",
        discussion: """
        Corpus paths may be files (.jsonl.zst, .jsonl, .txt = one document per file), directories \
        (their .jsonl/.jsonl.zst files) or globs; all are read in sorted path order. Writes \
        sample-{k}.tokens and provenance.json into --out.
        """)

    @Option(name: .customLong("corpus"), parsing: .upToNextOption, help: "Corpus files, directories or globs.")
    var corpus: [String]

    @Option(help: "Path to tokenizer.json.")
    var tokenizer: String

    @Option(help: "Tokens per sequence L (k = ×1000).")
    var length: TokenCount

    @Option(name: [.customLong("samples"), .customLong("count")], help: "Number of sequences K (--count: the old spelling).")
    var count: Int

    @Option(help: "Seed (unsigned 64-bit).")
    var seed: UInt64

    @Option(name: .customLong("subset"), help: "Only documents with this pile_set_name (repeatable).")
    var subsets: [String] = []

    @Option(name: .customLong("exclude-subset"), help: "Never documents with this pile_set_name (repeatable).")
    var excludedSubsets: [String] = []

    @Option(help: "document: one document of ≥ L tokens per sequence, cut at a seeded offset; packed: documents joined with EOS.")
    var packing: String = "document"

    @Option(help: "Minimum document length in tokens.")
    var minDocTokens: Int = 1

    @Option(help: "Longest accepted line (or .txt file) in bytes.")
    var maxLineBytes: Int = 256 << 20

    @Flag(help: "Skip and count malformed lines (bad JSON, no text, invalid UTF-8, too long) instead of failing.")
    var skipBadLines = false

    @Flag(help: "Do not record the SHA-256 of each corpus file in provenance.json (saves a little time).")
    var noHash = false

    @Flag(help: "No progress on stderr.")
    var quiet = false

    @Option(help: "Output directory.")
    var out: String

    func run() throws {
        guard let mode = Packing(rawValue: packing) else {
            throw ValidationError("--packing must be document or packed, not '\(packing)'")
        }
        let files = try CorpusFile.expand(corpus)
        let tok = try BPETokenizer(contentsOf: tokenizer)
        let options = SamplerOptions(
            count: count, length: length.value, seed: seed, packing: mode, subsets: subsets,
            excludedSubsets: excludedSubsets, minDocumentTokens: minDocTokens, maxLineBytes: maxLineBytes,
            skipBadLines: skipBadLines, hashFiles: !noHash)
        let sampler = try CorpusSampler(files: files, tokenizer: tok, options: options)
        // Redrawn on a terminal, plain lines every 5 s otherwise.
        let display = ProgressLines(enabled: !quiet)
        let sample = try sampler.run(progress: quiet ? nil : { display.line(ProgressLine.format($0)) })
        display.finish()
        try sample.write(to: out)
        let s = sample.provenance.statistics
        var summary = "wrote \(sample.sequences.count) sequences of \(length) tokens to \(out) "
            + "(\(s.documentsSeen) documents seen, \(s.candidates) candidates, \(s.tokenized) tokenized)"
        if !s.skipped.isEmpty {
            summary += "; skipped bad lines: " + s.skipped.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        }
        FileHandle.standardError.write(Data((summary + "\n").utf8))
        for example in s.skippedExamples.prefix(5) {
            FileHandle.standardError.write(Data(("  skipped: " + example + "\n").utf8))
        }
    }
}

enum ProgressLine {
    static func format(_ p: SamplingProgress) -> String {
        let mb = 1_048_576.0
        let rate = p.elapsedSeconds > 0 ? Double(p.decompressedBytes) / mb / p.elapsedSeconds : 0
        let fraction = p.totalFileBytes > 0 ? Double(p.fileBytesRead) / Double(p.totalFileBytes) : 0
        var line = String(format: "file %d/%d · read %.1f/%.1f MB (%.1f%%) · %d documents · %.1f MB/s decompressed",
                          p.fileIndex + 1, p.fileCount, Double(p.fileBytesRead) / mb, Double(p.totalFileBytes) / mb,
                          fraction * 100, p.documentsSeen, rate)
        if fraction > 0.001 {
            let eta = p.elapsedSeconds * (1 - fraction) / fraction
            line += String(format: " · ETA %.0fs", eta)
        }
        return line
    }
}
