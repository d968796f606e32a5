// swift-tools-version: 6.2
import PackageDescription

// Linux only: TelexStorage uses fdatasync, O_DIRECTORY and Glibc directly (see FileIO.swift).
let package = Package(
    name: "telex",
    products: [
        .library(name: "TelexProtocol", targets: ["TelexProtocol"]),
        .library(name: "TelexStorage", targets: ["TelexStorage"]),
        .library(name: "TelexEvents", targets: ["TelexEvents"]),
        .library(name: "TelexAuth", targets: ["TelexAuth"]),
        .library(name: "TelexServer", targets: ["TelexServer"]),
        .library(name: "TelexClient", targets: ["TelexClient"]),
        .library(name: "TelexS3", targets: ["TelexS3"]),
        .library(name: "TelexArchive", targets: ["TelexArchive"]),
        .library(name: "TelexConsole", targets: ["TelexConsole"]),
        .executable(name: "telexd", targets: ["telexd"]),
        .executable(name: "telex-pub", targets: ["telex-pub"]),
        .executable(name: "telex-sub", targets: ["telex-sub"]),
        .executable(name: "telex-history", targets: ["telex-history"]),
        .executable(name: "telex-bench", targets: ["telex-bench"]),
        .executable(name: "telex-admin", targets: ["telex-admin"]),
        .executable(name: "telex-metrics-cost", targets: ["telex-metrics-cost"]),
        .executable(name: "telex-crash", targets: ["telex-crash"]),
        .executable(name: "telex-fuzz", targets: ["telex-fuzz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.1.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
    ],
    targets: [
        .systemLibrary(name: "CZlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CLibdeflate", providers: [.apt(["libdeflate-dev"])]),
        .target(
            name: "TelexProtocol",
            dependencies: [
                "CZlib",
                "CLibdeflate",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .target(
            name: "TelexStorage",
            dependencies: [
                "TelexProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "TelexEvents",
            dependencies: ["TelexClient", "TelexProtocol", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .target(
            name: "TelexAuth",
            dependencies: [
                "TelexProtocol",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "TelexServer",
            dependencies: [
                "TelexAuth",
                "TelexProtocol",
                "TelexStorage",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The S3 API (Signature V4, path-style requests) over async-http-client; knows nothing of Telex's logs.
        .target(
            name: "TelexS3",
            dependencies: [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Sealed segments to and from an object store: uploads, the local cache replays read from, restore, replicas.
        .target(
            name: "TelexArchive",
            dependencies: [
                "TelexProtocol",
                "TelexStorage",
                "TelexS3",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The web console: an HTTP/1.1 server (NIO, no framework) with the page's files embedded in the binary.
        .target(
            name: "TelexConsole",
            dependencies: [
                "TelexAuth",
                "TelexEvents",
                "TelexProtocol",
                "TelexServer",
                "TelexStorage",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            resources: [
                .embedInCode("Assets/index.html"),
                .embedInCode("Assets/console.css"),
                .embedInCode("Assets/console.js"),
            ]
        ),
        .target(
            name: "TelexClient",
            dependencies: [
                "TelexProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        .executableTarget(
            name: "telexd",
            dependencies: [
                "TelexArchive",
                "TelexConsole",
                "TelexS3",
                "TelexAuth",
                "TelexServer",
                "TelexStorage",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .target(
            name: "TelexCLI",
            dependencies: [
                "TelexClient",
                "TelexProtocol",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "telex-pub",
            dependencies: [
                "TelexCLI",
                "TelexClient",
                "TelexEvents",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "telex-sub",
            dependencies: [
                "TelexCLI",
                "TelexClient",
                "TelexEvents",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "telex-history",
            dependencies: [
                "TelexCLI",
                "TelexClient",
                "TelexEvents",
                "TelexProtocol",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "telex-admin",
            dependencies: [
                "TelexCLI",
                "TelexClient",
                "TelexEvents",
                "TelexProtocol",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "telex-bench",
            dependencies: [
                "TelexCLI",
                "TelexClient",
                "TelexEvents",
                "TelexStorage", "TelexProtocol",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "telex-crash",
            dependencies: [
                "TelexCLI",
                "TelexClient",
                "TelexProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "telex-metrics-cost",
            dependencies: [
                "TelexStorage", "TelexProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // libFuzzer harness over TelexProtocol; Scripts/fuzz.sh builds it with the fuzzer and address sanitizers.
        .executableTarget(
            name: "telex-fuzz",
            dependencies: ["TelexProtocol", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "TelexProtocolTests",
            dependencies: [
                "TelexProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
                .product(name: "PropertyBased", package: "swift-property-based"),
            ]
        ),
        .testTarget(
            name: "TelexStorageTests",
            dependencies: [
                "TelexStorage", "TelexProtocol",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "TelexS3Tests",
            dependencies: [
                "TelexS3",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "TelexArchiveTests",
            dependencies: [
                "TelexArchive", "TelexS3", "TelexStorage", "TelexProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]
        ),
        .testTarget(
            name: "TelexEventsTests",
            dependencies: ["TelexEvents", "TelexProtocol", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "TelexAuthTests",
            dependencies: [
                "TelexAuth", "TelexProtocol",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ]
        ),
        .testTarget(
            name: "TelexServerTests",
            dependencies: [
                "TelexAuth", "TelexServer", "TelexStorage", "TelexProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]
        ),
        .testTarget(
            name: "TelexConsoleTests",
            dependencies: [
                "TelexConsole", "TelexAuth", "TelexServer", "TelexStorage", "TelexProtocol", "TelexEvents", "TelexClient",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .testTarget(
            name: "TelexIntegrationTests",
            dependencies: [
                "TelexArchive", "TelexS3",
                "TelexAuth", "TelexCLI", "TelexServer", "TelexClient", "TelexEvents", "TelexStorage", "TelexProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "InMemoryLogging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)

// Warnings in the project's own targets fail the build (CI included); dependencies are not affected.
for target in package.targets where target.type != .system {
    target.swiftSettings = (target.swiftSettings ?? []) + [.treatAllWarnings(as: .error)]
}
