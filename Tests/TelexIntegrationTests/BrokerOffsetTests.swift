import NIOCore
import TelexProtocol
import Testing

@testable import TelexClient

/// A broken or hostile broker must not make the client trap: offsets it names must fit an `i64` with every record.
@Suite("Offsets a broker names", .timeLimit(.minutes(1)))
struct BrokerOffsetTests {
    @Test("a PUBLISH_ACK whose offsets would overflow, or are negative, is a MALFORMED_FRAME, not a trap",
          arguments: [(Int64.max, 2), (Int64.max - 1, 3), (-1, 1)] as [(Int64, UInt32)])
    func publishAckOutsideOffsets(baseOffset: Int64, recordCount: UInt32) {
        let error = #expect(throws: TelexError.self) {
            try PublishAck(reply: .publishAck(topic: "news.world", baseOffset: baseOffset, recordCount: recordCount,
                                              duplicate: false))
        }
        #expect(error?.code == .malformedFrame)
        #expect(error?.message.contains("outside 0...") == true, "\(String(describing: error))")
        #expect(throws: Never.self) {
            try PublishAck(reply: .publishAck(topic: "news.world", baseOffset: Int64.max - 2, recordCount: 2,
                                              duplicate: false))
        }
    }

    @Test("a delivered batch whose offsets would overflow is INVALID_BATCH naming the topic, not a trap")
    func deliveredBatchOutsideOffsets() async throws {
        var builder = RecordBatchBuilder()
        builder.append(timestamp: 1, key: ByteBuffer(string: "k"), value: ByteBuffer(string: "a"))
        builder.append(timestamp: 1, key: ByteBuffer(string: "k"), value: ByteBuffer(string: "b"))
        var batch = builder.build(codec: .none)
        // Bytes 0-7 (the base offset) are outside the CRC: the batch stays valid otherwise.
        RecordBatch.assign(baseOffset: Int64.max, appendTime: 1, in: &batch, at: batch.readerIndex)
        let codecs = CodecPool(compressionLevel: 1)
        let error = await #expect(throws: TelexError.self) {
            _ = try await BatchDecoder.decode([batch], topic: "news.world", codecs: codecs)
        }
        #expect(error?.code == .invalidBatch)
        #expect(error?.topic == "news.world")
    }
}
