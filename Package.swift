// swift-tools-version:6.0
// imgtool: disk-image toolkit (library ImageCore, service adapter ImageService, CLI imgtool).
// Every C dependency is a Debian -dev package reached through a system-library target.
// CMapGuard is imgtool's own C: a SIGBUS handler, which must be async-signal-safe.
import PackageDescription

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "imgtool",
    products: [
        .executable(name: "imgtool", targets: ["imgtool"]),
        .library(name: "ImageCore", targets: ["ImageCore"]),
        .library(name: "ImageService", targets: ["ImageService"]),
    ],
    targets: [
        .systemLibrary(name: "CZlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CLzma", providers: [.apt(["liblzma-dev"])]),
        .systemLibrary(name: "CCurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CCrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CCrypt", providers: [.apt(["libcrypt-dev"])]),
        .systemLibrary(name: "CIsal", providers: [.apt(["libisal-dev"])]),
        .systemLibrary(name: "CLibdeflate", providers: [.apt(["libdeflate-dev"])]),
        .systemLibrary(name: "CSystem"),
        .target(name: "CMapGuard"),
        .target(
            name: "ImageCore",
            dependencies: ["CZlib", "CLzma", "CCurl", "CCrypto", "CCrypt", "CIsal", "CLibdeflate", "CSystem",
                           "CMapGuard"],
            swiftSettings: strict
        ),
        .target(
            name: "ImageService",
            dependencies: ["ImageCore", "CSystem", "CCrypto"],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "imgtool",
            dependencies: ["ImageCore", "ImageService"],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "parallel-engine",
            dependencies: ["ImageCore"],
            path: "Benchmarks/parallel-engine",
            swiftSettings: strict
        ),
        .testTarget(
            name: "ImageCoreTests",
            dependencies: ["ImageCore", "CZlib"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ImageServiceTests",
            dependencies: ["ImageService", "ImageCore"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "imgtoolTests",
            dependencies: ["imgtool"],
            swiftSettings: strict
        ),
    ]
)
