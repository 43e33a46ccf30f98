import ArgumentParser
import Foundation
import LongMamba
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
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

    @Flag(help: "Sample without hashing the corpus file (as `sample --no-hash`).")
    var noHash = false

    @Flag(help: "Only the tokenizer benchmark (e.g. on a fuzz corpus of short documents).")
    var tokenizerOnly = false

    @Option(help: "Alternate baseline and sampler this many times; the best time of each counts (the machine may be shared).")
    var repeats: Int = 3

    /// User + system CPU seconds of this process or of its finished children.
    func cpuSeconds(children: Bool) -> Double {
        var usage = rusage()
        #if canImport(Glibc)
        getrusage(__rusage_who_t(children ? RUSAGE_CHILDREN.rawValue : RUSAGE_SELF.rawValue), &usage)
        #else
        getrusage(children ? RUSAGE_CHILDREN : RUSAGE_SELF, &usage)
        #endif
        func s(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return s(usage.ru_utime) + s(usage.ru_stime)
    }

    /// Wall and CPU seconds of `zstd -dc FILE | wc -l`.
    func runBaseline() throws -> (wall: Double, cpu: Double, lines: String) {
        let cpu0 = cpuSeconds(children: true)
        let t0 = Date()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "zstd -dc \"$0\" | wc -l", corpus]
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        let lines = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (Date().timeIntervalSince(t0), cpuSeconds(children: true) - cpu0,
                lines.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    func run() throws {
        let tok = try BPETokenizer(contentsOf: tokenizer)
        let files = try CorpusFile.expand([corpus])
        let options = SamplerOptions(count: count, length: length, seed: 1, hashFiles: !noHash)
        var bestBaseline: (wall: Double, cpu: Double)?
        var bestSampler: (wall: Double, cpu: Double) = (.infinity, .infinity)
        var bestOneThread = Double.infinity
        var sample: CorpusSample?
        for round in 1...max(1, repeats) where !tokenizerOnly {
            if !skipBaseline {
                let b = try runBaseline()
                print(String(format: "round %d: zstd -dc | wc -l → %@ lines, %.2f s wall, %.2f s CPU", round, b.lines, b.wall, b.cpu))
                bestBaseline = (min(bestBaseline?.wall ?? .infinity, b.wall), min(bestBaseline?.cpu ?? .infinity, b.cpu))
            }
            for ahead in [false, true] {
                let cpu0 = cpuSeconds(children: false)
                let t0 = Date()
                var sampler = try CorpusSampler(files: files, tokenizer: tok, options: options)
                sampler.decodeAhead = ahead
                let result = try sampler.run()
                let wall = Date().timeIntervalSince(t0), cpu = cpuSeconds(children: false) - cpu0
                print(String(format: "round %d: sampler%@, %@ %.2f s wall, %.2f s CPU", round, noHash ? " (no hash)" : " (with SHA-256)",
                             ahead ? "decompressing on a second thread" : "one thread", wall, cpu))
                if ahead {
                    bestSampler = (min(bestSampler.wall, wall), min(bestSampler.cpu, cpu))
                    if let previous = sample, previous.sequences != result.sequences { throw ValidationError("the two sampler modes drew different sequences") }
                } else {
                    bestOneThread = min(bestOneThread, wall)
                    sample = result
                }
            }
        }
        if let sample {
        let mb = Double(sample.provenance.statistics.decompressedBytes) / 1_048_576
        print(String(format: "sampler: %.1f MB decompressed, %d documents, %d tokenized; best %.2f s = %.1f MB/s",
                     mb, sample.provenance.statistics.documentsSeen, sample.provenance.statistics.tokenized,
                     bestSampler.wall, mb / bestSampler.wall))
        if let b = bestBaseline {
            print(String(format: "zstd -dc | wc -l: best %.2f s = %.1f MB/s; sampler/baseline throughput = %.0f%% (wall), %.0f%% (CPU: %.2f s vs %.2f s)",
                         b.wall, mb / b.wall, 100 * b.wall / bestSampler.wall, 100 * b.cpu / bestSampler.cpu, bestSampler.cpu, b.cpu))
            print(String(format: "one thread (no decode-ahead): best %.2f s = %.0f%% of the baseline's throughput", bestOneThread, 100 * b.wall / bestOneThread))
        }
        print("peak RSS after sampling: \(Int(PeakMemory.megabytes)) MB")
        }

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
            print("peak RSS at end: \(Int(PeakMemory.megabytes)) MB")
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
}
