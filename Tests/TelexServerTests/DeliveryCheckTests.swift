import NIOCore
import TelexProtocol
import Testing

@testable import TelexServer

/// The CRC check of batches read into memory for a TLS DELIVER (`DeliveryCheck`).
@Suite("CRC check of batches read for delivery", .timeLimit(.minutes(1)))
struct DeliveryCheckTests {
    /// Five stored batches of two records each (offsets 0-9), the third with one bit flipped in its records.
    static func storedBatches() -> ByteBuffer {
        var bytes = ByteBuffer()
        for index in 0..<5 {
            var batch = makeBatch(records: 2, seed: index)
            RecordBatch.assign(baseOffset: Int64(index * 2), appendTime: 1_700_000_000_000, in: &batch, at: batch.readerIndex)
            if index == 2 {
                let position = batch.readerIndex + RecordBatchHeader.size + 5
                batch.setInteger(batch.getInteger(at: position, as: UInt8.self)! ^ 0x01, at: position)
            }
            bytes.writeImmutableBuffer(batch)
        }
        return bytes
    }

    static func offsets(_ bytes: ByteBuffer) throws -> [Int64] {
        try RecordBatch.split(bytes).map { RecordBatchHeader.peek($0, at: $0.readerIndex)!.baseOffset }
    }

    @Test("without skip-damaged the batches before the corrupt one are sent, and it is named")
    func stopsAtTheCorruptBatch() throws {
        let checked = DeliveryCheck(Self.storedBatches(), skipDamaged: false)
        #expect(try Self.offsets(checked.intact) == [0, 2])
        #expect(checked.corrupt == [4..<6])
    }

    @Test("with skip-damaged every intact batch is sent and only the corrupt one left out")
    func skipsTheCorruptBatch() throws {
        let checked = DeliveryCheck(Self.storedBatches(), skipDamaged: true)
        #expect(try Self.offsets(checked.intact) == [0, 2, 6, 8])
        #expect(checked.corrupt == [4..<6])
    }
}
