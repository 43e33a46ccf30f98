import ArgumentParser
import Foundation
import LongMamba
#if canImport(Glibc)
import Glibc
#endif

/// `longmamba bench-corpus`: sampler throughput against `zstd -dc | wc -l` on the same file in
/// the same run, peak memory, and single-thread tokenizer throughput.
struct BenchCorpusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-corpus",
        abstract: "Benchmark the corpus sampler (vs zstd -dc | wc -l) and the tokenizer (MB/s, one thread).")

    @Option(help: "A large .jsonl.zst file (see scripts/make_bench_corpus.py).")
    var corpus: String

    @Option(help: "Path to tokenizer.json.")
    var tokenizer: String

    @Option(help: "Megabytes of document text to tokenize for the tokenizer benchmark (0: skip).")
    var tokenizerMB: Int = 32

    @Option(help: "Sequence length for the sampling run.")
    var length: Int = 2048

    @Option(help: "Sequences for the sampling run.")
    var count: Int = 5

    @Flag(help: "Do not run the zstd -dc | wc -l baseline.")
    var skipBaseline = false

    func run() throws {
        let tok = try BPETokenizer(contentsOf: tokenizer)
        let files = try CorpusFile.expand([corpus])
        var baselineSeconds: Double?
        if !skipBaseline {
            let t0 = Date()
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/sh")
            p.arguments = ["-c", "zstd -dc \"$0\" | wc -l", corpus]
            let pipe = Pipe()
            p.standardOutput = pipe
            try p.run()
            let lines = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            baselineSeconds = Date().timeIntervalSince(t0)
            print("baseline: zstd -dc | wc -l → \(lines.trimmingCharacters(in: .whitespacesAndNewlines)) lines in \(String(format: "%.2f", baselineSeconds!)) s")
        }
        let options = SamplerOptions(count: count, length: length, seed: 1)
        let t0 = Date()
        let sample = try CorpusSampler(files: files, tokenizer: tok, options: options).run()
        let seconds = Date().timeIntervalSince(t0)
        let bytes = Double(sample.provenance.statistics.decompressedBytes)
        let mbps = bytes / 1_048_576 / seconds
        var line = String(format: "sampler: %.1f MB decompressed, %d documents, %d tokenized, %.2f s, %.1f MB/s",
                          bytes / 1_048_576, sample.provenance.statistics.documentsSeen,
                          sample.provenance.statistics.tokenized, seconds, mbps)
        if let b = baselineSeconds {
            line += String(format: "; zstd|wc %.1f MB/s; sampler/baseline = %.0f%%", bytes / 1_048_576 / b, 100 * b / seconds)
        }
        print(line)
        print("peak RSS after sampling: \(peakRSSMegabytes()) MB")

        if tokenizerMB > 0 {
            let texts = try firstTexts(files[0], megabytes: tokenizerMB)
            let total = texts.reduce(0) { $0 + $1.utf8.count }
            var encoder = tok.makeEncoder()
            let t1 = Date()
            var tokens = 0
            var checksum: UInt64 = 0  // same formula as scripts/make_bench_corpus.py, to compare ids
            for t in texts {
                let ids = encoder.encodeInt32(t)
                tokens += ids.count
                for id in ids { checksum = checksum &* 1_000_003 &+ UInt64(id) &+ 1 }
            }
            let s = Date().timeIntervalSince(t1)
            print(String(format: "tokenizer: %.1f MB of text, %d tokens, %.2f s, %.2f MB/s (one thread), ids checksum %@",
                         Double(total) / 1_048_576, tokens, s, Double(total) / 1_048_576 / s, String(checksum)))
            print("peak RSS at end: \(peakRSSMegabytes()) MB")
        }
    }

    /// Document texts from the start of a file, up to `megabytes` of UTF-8.
    func firstTexts(_ file: CorpusFile, megabytes: Int) throws -> [String] {
        var texts: [String] = []
        var total = 0
        try CorpusDocuments.forEach(file, maxLineBytes: 256 << 20) { text, _ in
            texts.append(text)
            total += text.utf8.count
            return total < megabytes << 20
        }
        return texts
    }

    func peakRSSMegabytes() -> Int {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return Int(usage.ru_maxrss) / 1024
    }
}
