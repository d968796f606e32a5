#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// The libFuzzer entry point. SwiftPM links executables with its own `main`, which hides libFuzzer's, so this
// `main` starts libFuzzer's driver itself. The driver is looked up at run time: a plain `swift build` links
// this target without libFuzzer, and then it explains how to build it instead of failing to link.

/// What libFuzzer calls with each input; the C name lets libFuzzer's own references to it link.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    FuzzTarget.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

typealias FuzzCallback = @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
typealias FuzzDriver = @convention(c) (
    UnsafeMutablePointer<Int32>, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    FuzzCallback
) -> Int32

// RTLD_DEFAULT is a null handle on glibc. The fuzz build exports the symbol (--export-dynamic-symbol).
guard let driverSymbol = dlsym(nil, "LLVMFuzzerRunDriver") else {
    let message = """
        telex-fuzz: libFuzzer is not linked into this binary.
        build with: swift build --product telex-fuzz -Xswiftc -sanitize=fuzzer,address \
        -Xswiftc -Xclang-linker -Xswiftc -fuse-ld=lld -Xlinker --export-dynamic-symbol=LLVMFuzzerRunDriver
        or run: bash Scripts/fuzz.sh [SECONDS]

        """
    _ = message.withCString { write(STDERR_FILENO, $0, strlen($0)) }
    exit(2)
}
let driver = unsafeBitCast(driverSymbol, to: FuzzDriver.self)
var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(driver(&argc, &argv) { fuzzTestOneInput($0, $1) })
