import NIOCore
import TelexProtocol
import Testing

/// Inputs that crashed TelexProtocol under the fuzz harness (Sources/telex-fuzz), each kept so the crash stays fixed.
@Suite("Fuzz findings", .timeLimit(.minutes(1)))
struct FuzzFindingTests {
    /// firstTimestamp + timestampDelta past i64 max trapped (arithmetic overflow) inside validate, so one PUBLISH
    /// with a valid CRC crashed the broker. It must be INVALID_BATCH, for the broker and for a consumer.
    @Test func recordTimestampPastI64IsInvalidNotATrap() {
        let batch = BadVectors.timestampOverflow
        expectTelexError(.invalidBatch, mentioning: ["record 0 of 2", "timestamp overflows", "9223372036854775806"]) {
            _ = try RecordBatch.validate(batch)
        }
        expectTelexError(.invalidBatch, mentioning: ["timestamp overflows"]) { _ = try RecordBatch.decodeRecords(batch) }
    }

    @Test func recordTimestampBelowI64MinIsInvalid() {
        let batch = BadVectors.patched(Newsroom.plainBatch) {
            $0.setInteger(Int64.min, at: 28)
            $0.setInteger(Int64.min, at: 36)
            $0.setInteger(Int32(-1), at: KeyTables.recordsStart(of: $0) + 4)
        }
        expectTelexError(.invalidBatch, mentioning: ["record 0 of 2", "timestamp overflows"]) {
            _ = try RecordBatch.validate(batch)
        }
    }

    @Test func timestampLandingExactlyOnI64MaxStillDecodes() throws {
        // The second record is 1,850 ms after the first, so it lands on i64 max exactly.
        let batch = BadVectors.patched(Newsroom.plainBatch) {
            $0.setInteger(Int64.max - 1_850, at: 28)
            $0.setInteger(Int64.max, at: 36)
        }
        let decoded = try RecordBatch.decodeRecords(batch)
        #expect(decoded.records.map(\.timestamp) == [Int64.max - 1_850, Int64.max])
    }
}
