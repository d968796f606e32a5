import NIOCore
import TelexProtocol
import Testing

@Suite("Batch key tables", .timeLimit(.minutes(1)))
struct KeyTableTests {
    @Test(arguments: Codec.allCases)
    func theBuilderWritesATableOfEveryRecordsKeyAndType(_ codec: Codec) throws {
        let batch = KeyTables.build(KeyTables.events, codec: codec)
        let header = try RecordBatch.validate(batch, requireKeyTable: true)
        #expect(header.flags == RecordBatchHeader.keyTableFlag)
        #expect(header.hasKeyTable)
        let table = KeyTables.table(of: batch)
        #expect(
            table == KeyTables.entries(KeyTables.events.map { (String(buffer: $0.key), $0.header("ce-type") ?? "") }))
        let keys = try RecordBatch.keys(of: batch, header: header)
        #expect(keys == KeyTables.expectedKeys(KeyTables.events))
        #expect(keys.map(\.type) == ["article.created", "article.created", "article.updated", "", "article.deleted"])
        #expect(keys.map(\.isTombstone) == [false, false, false, false, true])
        #expect(try RecordBatch.decodeRecords(batch).records == KeyTables.events)
    }

    @Test(arguments: Codec.allCases)
    func aBatchWithoutATableIsWalkedOrInflatedForItsKeys(_ codec: Codec) throws {
        let batch = KeyTables.replacingTable(of: KeyTables.build(KeyTables.events, codec: codec), with: nil)
        let header = try RecordBatch.validate(batch)
        #expect(!header.hasKeyTable)
        #expect(try RecordBatch.keys(of: batch, header: header) == KeyTables.expectedKeys(KeyTables.events))
        #expect(try RecordBatch.decodeRecords(batch).records == KeyTables.events)
    }

    @Test func publishRefusesAZlibBatchWithoutATableButStoredOnesStayReadable() throws {
        let batch = KeyTables.replacingTable(of: KeyTables.build(KeyTables.events, codec: .zlib), with: nil)
        expectTelexError(.invalidBatch, mentioning: ["zlib batch without a key table (flags bit 0)", "without inflating"]) {
            _ = try RecordBatch.validate(batch, requireKeyTable: true)
        }
        _ = try RecordBatch.validate(batch)
        let plain = KeyTables.replacingTable(of: KeyTables.build(KeyTables.events, codec: .none), with: nil)
        _ = try RecordBatch.validate(plain, requireKeyTable: true)
    }

    @Test func unknownFlagBitsAreRefusedOnPublish() throws {
        let batch = BadVectors.patched(KeyTables.build(KeyTables.events, codec: .zlib)) {
            $0.setInteger(UInt16(0x8001), at: 26)
        }
        expectTelexError(.invalidBatch, mentioning: ["unknown batch flags 0x8001"]) {
            _ = try RecordBatch.validate(batch, requireKeyTable: true)
        }
        // Brokers before key tables stored flags unchecked; reading them back ignores the unknown bits.
        #expect(try RecordBatch.decodeRecords(batch).records == KeyTables.events)
    }

    @Test(arguments: Codec.allCases)
    func aTableLongerThanTheBatchIsInvalid(_ codec: Codec) {
        let batch = BadVectors.patched(KeyTables.build(KeyTables.events, codec: codec)) {
            $0.setInteger(UInt32(100_000), at: RecordBatchHeader.size)
        }
        let header = RecordBatchHeader.peek(batch, at: 0)!
        expectTelexError(.invalidBatch, mentioning: ["keyTableLength 100000 exceeds"]) {
            _ = try RecordBatch.validate(batch)
        }
        expectTelexError(.invalidBatch, mentioning: ["keyTableLength 100000"]) {
            _ = try RecordBatch.keys(of: batch, header: header)
        }
        expectTelexError(.invalidBatch, mentioning: ["keyTableLength 100000"]) { _ = try RecordBatch.decodeRecords(batch) }
    }

    @Test func aTableWithTooFewEntriesIsInvalid() throws {
        let source = KeyTables.build(KeyTables.events, codec: .zlib)
        // Keys sharing no prefix, long enough that four entries could hold five by size.
        let batch = KeyTables.replacingTable(
            of: source,
            with: KeyTables.entries([
                ("alpha-article", "article.created"), ("beta-article", ""), ("gamma-article", ""), ("delta-article", ""),
            ]))
        expectTelexError(.invalidBatch, mentioning: ["key table entry 4 of 5", "truncated at field typeIndex"]) {
            _ = try RecordBatch.validate(batch)
        }
    }

    @Test func bytesAfterTheLastEntryAreInvalid() throws {
        var entries = KeyTables.table(of: KeyTables.build(KeyTables.events, codec: .zlib))
        entries.writeBytes([0, 0, 0, 0])
        let batch = KeyTables.replacingTable(of: KeyTables.build(KeyTables.events, codec: .zlib), with: entries)
        expectTelexError(.invalidBatch, mentioning: ["key table has 4 bytes left after its 5 entries"]) {
            _ = try RecordBatch.validate(batch)
        }
    }

    @Test func aTableTooSmallForTheRecordCountIsRefusedBeforeReadingIt() throws {
        let batch = KeyTables.replacingTable(
            of: KeyTables.build(KeyTables.events, codec: .zlib), with: KeyTables.entries([("a", "")]))
        expectTelexError(.invalidBatch, mentioning: ["key table's 7 bytes of entries cannot hold 5 entries"]) {
            _ = try RecordBatch.validate(batch)
        }
    }

    @Test func aTypeThatIsNotUTF8IsInvalid() throws {
        var builder = RecordBatchBuilder()
        builder.append(
            timestamp: 0, key: ByteBuffer(string: Newsroom.articleKey),
            headers: [RecordHeader(name: "ce-type", value: ByteBuffer(bytes: [0x61, 0xFF]))], value: ByteBuffer())
        for codec in Codec.allCases {
            let batch = builder.build(codec: codec)
            expectTelexError(.invalidBatch, mentioning: ["key table type 0 of 1", "type is not valid UTF-8"]) {
                _ = try RecordBatch.validate(batch)
            }
        }
    }

    @Test func theTypeIsTheFirstCETypeHeader() throws {
        let record = Record(
            timestamp: 0, key: ByteBuffer(string: "urn:a"),
            headers: [
                RecordHeader(name: "content-type", value: "application/json"),
                RecordHeader(name: "ce-type", value: "article.deleted"),
                RecordHeader(name: "ce-type", value: "article.updated"),
            ], value: ByteBuffer())
        for codec in Codec.allCases {
            let batch = KeyTables.build([record], codec: codec)
            let keys = try RecordBatch.keys(of: batch, header: try RecordBatch.validate(batch))
            #expect(keys == [BatchKey(key: ByteBuffer(string: "urn:a"), type: "article.deleted")])
            #expect(keys[0].isTombstone)
        }
    }

    @Test(arguments: Codec.allCases)
    func aTableDisagreeingWithItsRecordsIsInvalidOnDecode(_ codec: Codec) throws {
        let events = Array(KeyTables.events[0...2])
        let batch = KeyTables.replacingTable(
            of: KeyTables.build(events, codec: codec),
            with: KeyTables.entries([
                (Newsroom.articleKey, "article.created"), (Newsroom.festivalKey, "article.created"),
                (Newsroom.articleKey, "article.deleted"),
            ]))
        let mentions = [
            "record 2: key table says key \"\(Newsroom.articleKey)\" type \"article.deleted\"",
            "record has key \"\(Newsroom.articleKey)\" type \"article.updated\"",
        ]
        expectTelexError(.invalidBatch, mentioning: mentions) { _ = try RecordBatch.decodeRecords(batch) }
        switch codec {
        case .none:
            // The broker walks an uncompressed batch anyway, so it checks the table against it.
            expectTelexError(.invalidBatch, mentioning: mentions) {
                _ = try RecordBatch.validate(batch, requireKeyTable: true)
            }
        case .zlib:
            // It never inflates: the consumer's check is the one that catches a lying table.
            _ = try RecordBatch.validate(batch, requireKeyTable: true)
        }
    }

    @Test func aKeyDisagreeingWithItsEntryIsNamedWithBothValues() throws {
        let batch = KeyTables.replacingTable(
            of: KeyTables.build([KeyTables.events[1]], codec: .zlib),
            with: KeyTables.entries([("urn:other", "article.created")]))
        expectTelexError(
            .invalidBatch,
            mentioning: ["record 0: key table says key \"urn:other\"", "record has key \"\(Newsroom.festivalKey)\""]
        ) { _ = try RecordBatch.decodeRecords(batch) }
    }

    @Test(arguments: Codec.allCases)
    func theRecordsSectionStartsAfterTheTable(_ codec: Codec) throws {
        let batch = KeyTables.build(KeyTables.events, codec: codec)
        let header = try RecordBatch.validate(batch)
        let section = try RecordBatch.recordsSection(of: batch, header: header)
        let tableLength = KeyTables.table(of: batch).readableBytes
        #expect(section.readableBytes == batch.readableBytes - RecordBatchHeader.size - 4 - tableLength)
        if codec == .zlib {
            #expect(section.getInteger(at: section.readerIndex, as: UInt8.self) == 0x78, "a zlib stream header")
        } else {
            #expect(section.readableBytes == Int(header.uncompressedLength))
        }
    }

    @Test func aRecordsSectionIsNeverCutFromABatchShorterThanItsHeader() {
        var header = RecordBatchHeader.peek(KeyTables.build(KeyTables.events, codec: .none), at: 0)!
        header.batchLength = 10
        var bytes = ByteBuffer()
        header.write(to: &bytes)
        bytes.moveWriterIndex(to: header.totalSize)
        expectTelexError(.invalidBatch, mentioning: ["at least 64"]) {
            _ = try RecordBatch.recordsSection(of: bytes, header: header)
        }
    }

    @Test func keysOfAStoredBatchComeFromItsTable() throws {
        let batch = Newsroom.stored(KeyTables.build(KeyTables.events, codec: .zlib), baseOffset: 77)
        let header = RecordBatchHeader.peek(batch, at: 0)!
        #expect(try RecordBatch.keys(of: batch, header: header) == KeyTables.expectedKeys(KeyTables.events))
        var truncated = batch
        truncated.moveWriterIndex(to: truncated.writerIndex - 1)
        expectTelexError(.invalidBatch, mentioning: ["batch at offset 77", "are present"]) {
            _ = try RecordBatch.keys(of: truncated, header: header)
        }
    }
}
