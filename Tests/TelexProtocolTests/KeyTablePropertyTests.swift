import NIOCore
import PropertyBased
import TelexProtocol
import Testing

@Suite("Key table properties", .timeLimit(.minutes(1)))
struct KeyTablePropertyTests {
    /// Random records, about half with a `ce-type` header (anywhere among the others; sometimes an article
    /// type, sometimes any string), and about half with keys sharing prefixes as article URIs do (some repeated,
    /// some empty, some a prefix of the one before).
    static func records(_ rng: inout some RandomNumberGenerator) -> [Record] {
        var records = RandomWire.records(&rng)
        if Bool.random(using: &rng) {
            for index in records.indices {
                let previous = index > 0 ? String(buffer: records[index - 1].key) : ""
                records[index].key = ByteBuffer(
                    string: [
                        "urn:telex:article:\(Int.random(in: 0...120, using: &rng))", previous,
                        String(previous.prefix(Int.random(in: 0...previous.count, using: &rng))), "",
                        "urn:telex:article:" + RandomWire.string(&rng, scalars: 0...6),
                    ].randomElement(using: &rng)!)
            }
        }
        for index in records.indices where Bool.random(using: &rng) {
            let type =
                Bool.random(using: &rng)
                ? ["article.created", "article.updated", "article.deleted"].randomElement(using: &rng)!
                : RandomWire.string(&rng)
            let position = Int.random(in: 0...records[index].headers.count, using: &rng)
            records[index].headers.insert(RecordHeader(name: "ce-type", value: type), at: position)
        }
        return records
    }

    /// Random records, a codec, and whether the batch keeps its key table.
    static let batches = Generator { rng in
        (records(&rng), Codec.allCases.randomElement(using: &rng)!, Bool.random(using: &rng))
    }

    static func batch(_ records: [Record], codec: Codec, table: Bool) -> ByteBuffer {
        let built = KeyTables.build(records, codec: codec)
        return table ? built : KeyTables.replacingTable(of: built, with: nil)
    }

    @Test func keysAreTheRecordsKeysAndTypesWithOrWithoutATable() async {
        await propertyCheck(count: 200, input: Self.batches) { records, codec, table in
            let batch = Self.batch(records, codec: codec, table: table)
            let header = try RecordBatch.validate(batch)
            #expect(header.hasKeyTable == table)
            #expect(try RecordBatch.keys(of: batch, header: header) == KeyTables.expectedKeys(records))
            #expect(try RecordBatch.decodeRecords(batch).records == records)
            if codec == .zlib, !table {
                expectTelexError(.invalidBatch, mentioning: ["zlib batch without a key table"]) {
                    _ = try RecordBatch.validate(batch, requireKeyTable: true)
                }
            } else {
                #expect(try RecordBatch.validate(batch, requireKeyTable: true) == header)
            }
        }
    }

    @Test func flippingATableByteBreaksTheCRC() async {
        let input = Generator { rng in
            (Self.records(&rng), Codec.allCases.randomElement(using: &rng)!, Int.random(in: 0...(1 << 20), using: &rng),
             UInt8.random(in: 1...255, using: &rng))
        }
        await propertyCheck(count: 200, input: input) { records, codec, position, mask in
            var batch = KeyTables.build(records, codec: codec)
            // keyTableLength and the entries: any of their bytes.
            let index = RecordBatchHeader.size + position % (4 + KeyTables.table(of: batch).readableBytes)
            batch.setInteger(batch.getInteger(at: index, as: UInt8.self)! ^ mask, at: index)
            expectTelexError(.corruptBatch, mentioning: ["CRC mismatch"]) {
                _ = try RecordBatch.validate(batch, requireKeyTable: true)
            }
            expectTelexError(.corruptBatch, mentioning: ["CRC mismatch"]) { _ = try RecordBatch.decodeRecords(batch) }
        }
    }

    @Test func aTableDisagreeingWithItsRecordsIsInvalidOnDecode() async {
        let input = Generator { rng in
            (Self.records(&rng), Codec.allCases.randomElement(using: &rng)!, Int.random(in: 0...(1 << 20), using: &rng),
             Bool.random(using: &rng))
        }
        await propertyCheck(count: 200, input: input) { records, codec, choice, changeKey in
            let wrong = choice % records.count
            let entries = KeyTables.entries(
                records.enumerated().map { index, record in
                    let key = Array(record.key.readableBytesView)
                    let type = record.header("ce-type") ?? ""
                    // One byte more: the entry differs from its record while the table keeps its shape.
                    guard index == wrong else { return (key, type) }
                    return changeKey ? (key + [0x78], type) : (key, type + "x")
                })
            let batch = KeyTables.replacingTable(of: KeyTables.build(records, codec: codec), with: entries)
            expectTelexError(.invalidBatch, mentioning: ["record \(wrong): key table says", "record has key"]) {
                _ = try RecordBatch.decodeRecords(batch)
            }
        }
    }

    @Test func anyTableBytesGiveKeysOrInvalidBatchNeverACrash() async {
        let input = Generator { rng in
            (Self.records(&rng), Codec.allCases.randomElement(using: &rng)!, Int.random(in: 0...(1 << 20), using: &rng),
             RandomWire.bytes(&rng, count: 1...3))
        }
        await propertyCheck(count: 300, input: input) { records, codec, position, noise in
            // A true table with a few bytes overwritten (CRC recomputed): every field, including typeCount,
            // typeIndex, sharedPrefix and the lengths, gets nonsense values.
            var entries = KeyTables.table(of: KeyTables.build(records, codec: codec))
            let at = entries.readerIndex + position % entries.readableBytes
            let overwritten = min(noise.readableBytes, entries.writerIndex - at)
            entries.setBuffer(noise.getSlice(at: 0, length: overwritten)!, at: at)
            let batch = KeyTables.replacingTable(of: KeyTables.build(records, codec: codec), with: entries)
            let header = RecordBatchHeader.peek(batch, at: 0)!
            let found = Result { () throws(TelexError) in
                let keys = try RecordBatch.keys(of: batch, header: header)
                _ = try RecordBatch.validate(batch)
                return keys
            }
            switch found {
            case .success(let keys):
                #expect(keys.count == records.count)
                let keyBytes = keys.reduce(0) { $0 + $1.key.readableBytes }
                #expect(keyBytes + 16 * keys.count <= Int(header.uncompressedLength))
            case .failure(let error):
                #expect(error.code == .invalidBatch, "\(error)")
            }
        }
    }
}
