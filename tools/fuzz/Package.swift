// swift-tools-version:6.1
// A libFuzzer target for the wire codec and the argument parsers; a package of its own so that the root
// package's builds never see an executable without `main`. Build and run with tools/fuzz/run.sh.
import PackageDescription

let package = Package(
    name: "otpd-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "otpd", path: "../.."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
    ],
    targets: [
        .executableTarget(
            name: "RESPFuzzer",
            dependencies: [
                .product(name: "RESP", package: "otpd"),
                .product(name: "OTPDomain", package: "otpd"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        )
    ]
)
