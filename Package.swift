// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "LongMambaCalibration",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "LongMamba", targets: ["LongMamba"]),
        .executable(name: "longmamba", targets: ["longmamba"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-numerics", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
    ],
    targets: [
        // System libraries (Debian: libzstd-dev, libopenblas-dev).
        .systemLibrary(name: "CZstd", path: "Sources/CZstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", providers: [.apt(["libopenblas-dev"])]),
        // The toolkit: one folder per stage of the data flow.
        .target(
            name: "LongMamba",
            dependencies: [
                "CZstd", "COpenBLAS",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Numerics", package: "swift-numerics"),
                .product(name: "Collections", package: "swift-collections"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
        ),
        // Thin command-line front end.
        .executableTarget(
            name: "longmamba",
            dependencies: [
                "LongMamba",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "LongMambaTests",
            dependencies: ["LongMamba"]
        ),
    ]
)
