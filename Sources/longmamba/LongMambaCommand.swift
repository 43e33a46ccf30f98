import ArgumentParser
import Foundation
import LongMamba

@main
struct LongMambaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "longmamba",
        abstract: "LongMamba calibration: per-channel Δ-threshold tables for Mamba-family models.",
        version: ToolInfo.version,
        subcommands: [
            // The main job: corpus → samples → Δ → tables, resumable, shardable
            CalibrateCommand.self, MergeCommand.self,
            // The per-layer scale methods (MambaExtend, Mamba Modulation): SPSA into a table
            CalibrateScalesCommand.self,
            // Corpus and tokenizer
            SampleCommand.self, TokenizeCommand.self,
            // Model runner (Δ recordings)
            RecordCommand.self,
            // Solver and store: tables from recordings
            SolveCommand.self, SweepCommand.self, TablesCommand.self, RunsCommand.self, InspectCommand.self, CheckCommand.self, RecordingCommand.self, MigrateCommand.self,
            // Using tables: lookup, evaluation, export, report
            LookupCommand.self, EvalCommand.self, TuneCommand.self, ExportCommand.self, ReportCommand.self,
            // Benchmarks (each prints this machine's baseline beside its figure)
            BenchCommand.self, BenchCorpusCommand.self, BenchSolverCommand.self,
        ]
    )

    /// Refuses to start where the kernels' vector instructions would trap (a binary built on an
    /// AVX-512 machine copied to an AVX2 one), with what to do instead.
    static func main() async {
        let cpu = VectorUnits.current()
        if !cpu.missing.isEmpty {
            FileHandle.standardError.write(Data("""
                Error: this longmamba was built for \(VectorUnits.builtFor) and this CPU lacks \(cpu.missing.joined(separator: ", ")) \
                (hint: rebuild on this machine with `make release`, or build a portable binary with LONGMAMBA_TARGET_CPU=haswell or generic)\n
                """.utf8))
            Foundation.exit(70)
        }
        restartWithSleepingBLASThreads()
        await Self.main(nil)
    }

    /// OpenBLAS's idle worker threads spin on sched_yield for 2^28 cycles after each call, on the
    /// same cores as the scans between two matrix products: on 2 cores that cost 8–14 points of the
    /// prefill's roofline (mamba2-130m at 2048: 66 → 75 %, docs/performance.md). OpenBLAS reads
    /// OPENBLAS_THREAD_TIMEOUT (2^n cycles) only when it loads, so the tool sets it and starts
    /// itself again, once; a value the user set is kept. If the restart fails it runs as it is.
    static func restartWithSleepingBLASThreads() {
        #if os(Linux)
        guard getenv("OPENBLAS_THREAD_TIMEOUT") == nil else { return }
        setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        #endif
    }
}

/// The vector extensions the kernels were compiled for (Package.swift) and those this CPU has.
struct VectorUnits {
    #if LONGMAMBA_BUILT_AVX512
    static let builtFor = "x86-64 with AVX-512 (skylake-avx512)"
    static let required = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"]
    #elseif LONGMAMBA_BUILT_AVX2
    static let builtFor = "x86-64 with AVX2 + FMA (haswell)"
    static let required = ["avx2", "fma"]
    #else
    static let builtFor = "the generic target (no required vector extensions)"
    static let required: [String] = []
    #endif
    /// Flags of the running CPU (empty where /proc/cpuinfo cannot be read: nothing is then refused).
    let flags: Set<String>

    static func current() -> VectorUnits {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return VectorUnits(flags: []) }
        return VectorUnits(flags: Set(line.split(separator: " ").map(String.init)))
    }

    var missing: [String] { flags.isEmpty ? [] : Self.required.filter { !flags.contains($0) } }

    /// One line for `bench`: what the build uses and what the CPU offers.
    var summary: String {
        let shown = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"].filter(flags.contains)
        return "kernels built for \(Self.builtFor); CPU has \(shown.isEmpty ? "none of avx2/fma/avx512" : shown.joined(separator: " ")); "
            + "bf16/f16 weights are converted to f32 for OpenBLAS sgemm (Debian's OpenBLAS exports no sbgemm"
            + (flags.contains("avx512_bf16") ? "; AVX512-BF16 is present but unused" : "; no AVX512-BF16 here") + ")"
    }
}
