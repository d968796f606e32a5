import NIOCore
import TelexProtocol
import Testing

@testable import TelexServer

/// The CRC check of batches read into memory for a TLS DELIVER (`DeliveryCheck`).
@Suite("CRC check of batches read for delivery", .timeLimit(.minutes(1)))
struct DeliveryCheckTests {
    /// Five stored batches of two records each (offsets 0-9), the one at `flipped` (the third) with one bit flipped
    /// in its records.
    static func storedBatches(flipped: Int? = 2) -> ByteBuffer {
        var bytes = ByteBuffer()
        for index in 0..<5 {
            var batch = makeBatch(records: 2, seed: index)
            RecordBatch.assign(baseOffset: Int64(index * 2), appendTime: 1_700_000_000_000, in: &batch, at: batch.readerIndex)
            if index == flipped {
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
        let checked = DeliveryCheck(Self.storedBatches(), offsets: 0..<10, skipDamaged: false)
        #expect(try Self.offsets(checked.intact) == [0, 2])
        #expect(checked.corrupt == [4..<6])
    }

    @Test("with skip-damaged every intact batch is sent and only the corrupt one left out")
    func skipsTheCorruptBatch() throws {
        let checked = DeliveryCheck(Self.storedBatches(), offsets: 0..<10, skipDamaged: true)
        #expect(try Self.offsets(checked.intact) == [0, 2, 6, 8])
        #expect(checked.corrupt == [4..<6])
    }

    /// Intact stored batches but for the fourth one's length (outside the CRC), larger than the bytes read.
    static func batchesWithBadLength() -> ByteBuffer {
        var bytes = storedBatches(flipped: nil)
        let fourth = try! RecordBatch.split(bytes).prefix(3).reduce(0) { $0 + $1.readableBytes }
        bytes.setInteger(UInt32(1 << 20), at: bytes.readerIndex + fourth + 8)
        return bytes
    }

    @Test("a length that does not fit the bytes read: the rest of the slice is reported lost, from the offset chain",
          arguments: [false, true])
    func badLengthReportsTheRest(skipDamaged: Bool) throws {
        let checked = DeliveryCheck(Self.batchesWithBadLength(), offsets: 0..<10, skipDamaged: skipDamaged)
        #expect(try Self.offsets(checked.intact) == [0, 2, 4])
        #expect(checked.corrupt == [6..<10])
    }

    @Test("a corrupt batch whose record count is damaged: its lost offsets end where the next batch starts")
    func lostOffsetsFollowTheChain() throws {
        var bytes = Self.storedBatches()
        let third = try RecordBatch.split(bytes).prefix(2).reduce(0) { $0 + $1.readableBytes }
        // recordCount sits at bytes 56-59 of the header; the CRC already fails, so this header claims 1,000 records.
        bytes.setInteger(UInt32(1000), at: bytes.readerIndex + third + 56)
        let checked = DeliveryCheck(bytes, offsets: 0..<10, skipDamaged: true)
        #expect(try Self.offsets(checked.intact) == [0, 2, 6, 8])
        #expect(checked.corrupt == [4..<6])
    }
}
