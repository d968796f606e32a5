import NIOCore
import TelexProtocol
import Testing

@testable import TelexServer

@Suite("CRC check of batches read for delivery: compaction gaps", .timeLimit(.minutes(1)))
struct DeliveryCheckGapTests {
    @Test("batches of a compacted topic, whose offsets jump between them, are all intact")
    func gapsAreNotDamage() throws {
        var bytes = ByteBuffer()
        for base in [Int64(0), 4, 8] {
            var batch = makeBatch(records: 2, seed: Int(base))
            RecordBatch.assign(baseOffset: base, appendTime: 1_700_000_000_000, in: &batch, at: batch.readerIndex)
            bytes.writeImmutableBuffer(batch)
        }
        for skipDamaged in [false, true] {
            let checked = DeliveryCheck(bytes, offsets: 0..<10, skipDamaged: skipDamaged)
            #expect(try DeliveryCheckTests.offsets(checked.intact) == [0, 4, 8])
            #expect(checked.corrupt.isEmpty)
        }
    }
}
