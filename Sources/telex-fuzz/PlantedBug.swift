import TelexProtocol

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A crash planted on the fuzzed path, on only when TELEX_FUZZ_PLANTED_BUG=1: `Scripts/fuzz.sh --planted` checks
/// that libFuzzer reaches it from the seed corpus, which shows that the harness fuzzes at all.
///
/// It needs a whole SUBSCRIBE frame that decodes and round-trips with 0xFEED in the low 16 bits of its initial
/// credit: an exact value that no seed has, in a field behind two variable-length strings, reached only when
/// everything before it decodes. (All 32 bits made the find take more than a minute half the time.)
enum PlantedBug {
    static let enabled = getenv("TELEX_FUZZ_PLANTED_BUG").map { String(cString: $0) } == "1"

    /// Called after everything else an input runs, so these are the last comparisons libFuzzer records for it.
    static func check(_ message: ClientMessage) {
        guard enabled, case .subscribe(_, _, _, _, let initialCredit, _, _) = message, sameLow16Bits(initialCredit, 0xFEED)
        else { return }
        fatalError("telex-fuzz: planted bug reached (TELEX_FUZZ_PLANTED_BUG=1)")
    }

    /// Compares the two values as their big-endian wire bytes with memcmp: libFuzzer hooks memcmp (through the
    /// address sanitizer), learns both byte strings, and can write the wanted bytes where the input has the others.
    /// A plain `==` is compiled to a 64-bit compare of host-order values, which it cannot map back to the input;
    /// unoptimized, so the optimizer does not turn the memcmp back into such a compare.
    @_optimize(none)
    static func sameLow16Bits(_ value: UInt32, _ wanted: UInt32) -> Bool {
        withUnsafeBytes(of: value.bigEndian) { valueBytes in
            withUnsafeBytes(of: wanted.bigEndian) { wantedBytes in
                memcmp(valueBytes.baseAddress! + 2, wantedBytes.baseAddress! + 2, 2) == 0
            }
        }
    }
}
