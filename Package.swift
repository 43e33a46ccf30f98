// swift-tools-version:6.1
import Foundation
import PackageDescription

/// The SIMD kernels (scan, exp, SiLU) need the machine's vector units: Swift's default x86-64
/// target has no FMA, so SIMD16 fused multiply-adds would become library calls. The CPU is
/// detected where the package is built; override with LONGMAMBA_TARGET_CPU (e.g. `haswell`,
/// `znver4`, or `generic` for a portable build).
func simdTargetCPU() -> String? {
    if let forced = ProcessInfo.processInfo.environment["LONGMAMBA_TARGET_CPU"] {
        return forced.isEmpty || forced == "generic" ? nil : forced
    }
    #if os(Linux) && arch(x86_64)
    guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
          let line = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
    else { return nil }
    let flags = Set(line.split(separator: " ").map(String.init))
    if ["avx512f", "avx512bw", "avx512vl", "avx512dq"].allSatisfy(flags.contains) { return "skylake-avx512" }
    if ["avx2", "fma"].allSatisfy(flags.contains) { return "haswell" }
    #endif
    return nil
}

/// One optimised build serves `make run` and `make test`: both targets are compiled with testability
/// in release too, so the tests (`@testable import`) run against the code users run and only the test
/// target is compiled on top of the `make run` build.
///
/// Only the kernels (scans, element-wise math) drop Swift's bounds, overflow and exclusivity checks:
/// they read buffers whose sizes the library has checked. Everything that reads files (safetensors,
/// torch zip and pickle, tokenizer.json, config.json, JSONL, zstd, the store) keeps the checks, so a
/// missed check on a malicious file traps instead of reading outside the mapping.
var kernelSettings: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked", "-enforce-exclusivity=unchecked", "-enable-testing"], .when(configuration: .release)),
]
var librarySettings: [SwiftSetting] = [
    .unsafeFlags(["-enable-testing"], .when(configuration: .release)),
]
/// The command-line target is built for the generic x86-64 so that it can say, instead of dying on
/// an illegal instruction, that the kernels were built for vector units this CPU lacks.
var commandSettings: [SwiftSetting] = []
if let cpu = simdTargetCPU() {
    kernelSettings.append(.unsafeFlags(["-target-cpu", cpu]))
    if cpu == "haswell" { kernelSettings.append(.define("LONGMAMBA_KERNELS_AVX2")) }   // 8-float registers: see StateSpaceDualScan.defaultLanes
    librarySettings.append(.unsafeFlags(["-target-cpu", cpu]))
    commandSettings.append(.define(cpu == "skylake-avx512" ? "LONGMAMBA_BUILT_AVX512" : (cpu == "haswell" ? "LONGMAMBA_BUILT_AVX2" : "LONGMAMBA_BUILT_OTHER")))
}

let package = Package(
    name: "LongMambaCalibration",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "LongMamba", targets: ["LongMamba"]),
        .executable(name: "longmamba", targets: ["longmamba"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
    ],
    targets: [
        // System libraries (Debian: libzstd-dev, libopenblas-dev).
        .systemLibrary(name: "CZstd", path: "Sources/CZstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", providers: [.apt(["libopenblas-dev"])]),
        // SHA-256 from the system's libcrypto (Debian: libssl-dev), instead of a vendored BoringSSL.
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", providers: [.apt(["libssl-dev"])]),
        // The hot loops, built unchecked (see kernelSettings).
        .target(name: "LongMambaKernels", dependencies: ["COpenBLAS"], swiftSettings: kernelSettings),
        // The toolkit: one folder per stage of the data flow.
        .target(
            name: "LongMamba",
            dependencies: [
                "LongMambaKernels", "CZstd", "COpenBLAS", "COpenSSL",
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: librarySettings
        ),
        // Thin command-line front end.
        .executableTarget(
            name: "longmamba",
            dependencies: [
                "LongMamba",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: commandSettings
        ),
        // Tests compile without optimisation even in release (`make test`): an optimised whole-module
        // compile of the test target took longer than everything it tests runs. The library and
        // kernels under test stay the optimised release build users run.
        .testTarget(
            name: "LongMambaTests",
            dependencies: ["LongMamba", "LongMambaKernels"],
            swiftSettings: [.unsafeFlags(["-Onone", "-no-whole-module-optimization"], .when(configuration: .release))]
        ),
    ]
)

// The libFuzzer harnesses (Fuzz/Harnesses, `make fuzz`): only with LONGMAMBA_FUZZ=1 and
// `--sanitize=fuzzer --sanitize=address`, since libFuzzer provides their `main`.
if ProcessInfo.processInfo.environment["LONGMAMBA_FUZZ"] == "1" {
    package.targets.append(.executableTarget(
        name: "longmamba-fuzz",
        dependencies: ["LongMamba", .product(name: "GRDB", package: "GRDB.swift")],
        path: "Fuzz/Harnesses",
        swiftSettings: [.unsafeFlags(["-parse-as-library"])]
    ))
}
