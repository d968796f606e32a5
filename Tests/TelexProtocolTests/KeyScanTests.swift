import NIOCore
import PropertyBased
import TelexProtocol
import Testing

/// `RecordBatch.forEachKey`, the broker's allocation-free walk of a batch's keys, against `keys(of:)`.
@Suite("Key scan", .timeLimit(.minutes(1)))
struct KeyScanTests {
    /// What `forEachKey` reported: each record's index, key bytes and tombstone flag, or the error it threw.
    static func scanned(_ batch: ByteBuffer, _ header: RecordBatchHeader) -> Result<[BatchKey], TelexError> {
        Result { () throws(TelexError) -> [BatchKey] in
            var found: [BatchKey] = []
            try RecordBatch.forEachKey(of: batch, header: header) { index, key, tombstone in
                #expect(index == found.count)
                found.append(BatchKey(key: ByteBuffer(bytes: key), type: tombstone ? RecordBatch.tombstoneType : ""))
            }
            return found
        }
    }

    /// `keys(of:)` with every type but the tombstone's blanked, as `forEachKey` reports them.
    static func expected(_ batch: ByteBuffer, _ header: RecordBatchHeader) -> Result<[BatchKey], TelexError> {
        Result { () throws(TelexError) -> [BatchKey] in
            try RecordBatch.keys(of: batch, header: header).map {
                BatchKey(key: $0.key, type: $0.isTombstone ? RecordBatch.tombstoneType : "")
            }
        }
    }

    @Test func reportsTheKeysAndTombstonesKeysOfReportsWithOrWithoutATable() async {
        await propertyCheck(count: 200, input: KeyTablePropertyTests.batches) { records, codec, table in
            let batch = KeyTablePropertyTests.batch(records, codec: codec, table: table)
            let header = try RecordBatch.validate(batch)
            #expect(try Self.scanned(batch, header).get() == Self.expected(batch, header).get())
        }
    }

    @Test func aDamagedTableThrowsWhatKeysOfThrowsBeforeReportingAnyKey() async {
        let input = Generator { rng in
            (KeyTablePropertyTests.records(&rng), Codec.allCases.randomElement(using: &rng)!,
             Int.random(in: 0...(1 << 20), using: &rng), RandomWire.bytes(&rng, count: 1...3))
        }
        await propertyCheck(count: 300, input: input) { records, codec, position, noise in
            var entries = KeyTables.table(of: KeyTables.build(records, codec: codec))
            let at = entries.readerIndex + position % entries.readableBytes
            entries.setBuffer(noise.getSlice(at: 0, length: min(noise.readableBytes, entries.writerIndex - at))!, at: at)
            let batch = KeyTables.replacingTable(of: KeyTables.build(records, codec: codec), with: entries)
            let header = RecordBatchHeader.peek(batch, at: 0)!
            var reported = 0
            let scan = Result { () throws(TelexError) in
                try RecordBatch.forEachKey(of: batch, header: header) { _, _, _ in reported += 1 }
            }
            switch (scan, Self.expected(batch, header)) {
            case (.success, .success(let keys)):
                let scanned = Self.scanned(batch, header)
                #expect((try? scanned.get()) == keys, "\(scanned)")
            case (.failure(let error), .failure(let expected)):
                #expect(error.message == expected.message)
                #expect(reported == 0)
            default:
                Issue.record("forEachKey and keys(of:) disagree: \(scan), \(Self.expected(batch, header))")
            }
        }
    }
}
