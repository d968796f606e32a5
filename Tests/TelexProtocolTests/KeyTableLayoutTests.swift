import NIOCore
import TelexProtocol
import Testing

/// The compact key table layout (PROTOCOL.md §6.1): a list of distinct types, and keys stored as the bytes they
/// share with the previous key plus the rest.
@Suite("Key table layout", .timeLimit(.minutes(1)))
struct KeyTableLayoutTests {
    static func records(_ entries: [(key: String, type: String?)]) -> [Record] {
        entries.enumerated().map { index, entry in
            Record(
                timestamp: Newsroom.publishedAt + Int64(index), key: ByteBuffer(string: entry.key),
                headers: entry.type.map { [RecordHeader(name: "ce-type", value: $0)] } ?? [],
                value: ByteBuffer(string: "{}"))
        }
    }

    @Test func theBuilderListsEachTypeOnceAndSharesKeyPrefixes() throws {
        let batch = KeyTables.build(
            Self.records([
                ("urn:a:1", "article.created"), ("urn:a:2", "article.created"), ("urn:b", "article.updated"),
            ]),
            codec: .zlib)
        var expected = ByteBuffer()
        expected.writeInteger(UInt16(2))  // typeCount
        expected.writeShortBytes(ByteBuffer(string: "article.created"))
        expected.writeShortBytes(ByteBuffer(string: "article.updated"))
        expected.writeMultipleIntegers(UInt16(0), UInt16(0), UInt16(7))  // type 0, nothing shared, "urn:a:1"
        expected.writeString("urn:a:1")
        expected.writeMultipleIntegers(UInt16(0), UInt16(6), UInt16(1))  // type 0, "urn:a:" shared, "2"
        expected.writeString("2")
        expected.writeMultipleIntegers(UInt16(1), UInt16(4), UInt16(1))  // type 1, "urn:" shared, "b"
        expected.writeString("b")
        #expect(KeyTables.table(of: batch) == expected)
    }

    @Test(arguments: Codec.allCases)
    func keysAreRebuiltExactlyWhateverTheyShare(_ codec: Codec) throws {
        let records = Self.records([
            ("urn:telex:bench:article-9", "article.created"), ("urn:telex:bench:article-10", "article.updated"),
            ("urn:telex:bench:article-100", nil), ("", "article.created"), ("urn:telex:bench:article-100", nil),
            ("urn:telex:bench:article-100", "article.deleted"), ("urn:telex:bench:article-1", "article.updated"),
            ("urn:x", ""), ("", nil),
        ])
        let batch = KeyTables.build(records, codec: codec)
        let header = try RecordBatch.validate(batch, requireKeyTable: true)
        #expect(try RecordBatch.keys(of: batch, header: header) == KeyTables.expectedKeys(records))
        #expect(try RecordBatch.decodeRecords(batch).records == records)
        // The builder writes what the spec's layout says, byte for byte.
        #expect(
            KeyTables.table(of: batch)
                == KeyTables.entries(records.map { (String(buffer: $0.key), $0.header("ce-type") ?? "") }))
    }

    @Test func sixtyFourBenchKeysTakeAboutSevenBytesEach() throws {
        let records = Self.records(
            (1000..<1064).map {
                ("urn:telex:bench:article-\($0)", $0 % 4 == 3 ? "article.updated" : "article.created")
            })
        let table = KeyTables.table(of: KeyTables.build(records, codec: .zlib))
        // 36 bytes of types; the first key whole (6 + 28); then 6 + 1 (7 + 2 where the tens digit changes).
        #expect(table.readableBytes == 36 + 34 + 57 * 7 + 6 * 8)
    }

    @Test func aTypeIndexOutOfRangeIsInvalid() throws {
        let batch = KeyTables.replacingTable(
            of: KeyTables.build(Array(KeyTables.events[0...1]), codec: .zlib),
            with: KeyTables.table(
                types: ["article.created"],
                [(0, 0, Array(Newsroom.articleKey.utf8)), (2, 0, Array(Newsroom.festivalKey.utf8))]))
        expectTelexError(
            .invalidBatch, mentioning: ["key table entry 1 of 2", "typeIndex 2 is not below typeCount 1"]
        ) { _ = try RecordBatch.validate(batch, requireKeyTable: true) }
        let header = RecordBatchHeader.peek(batch, at: 0)!
        expectTelexError(.invalidBatch, mentioning: ["typeIndex 2"]) {
            _ = try RecordBatch.keys(of: batch, header: header)
        }
        expectTelexError(.invalidBatch, mentioning: ["typeIndex 2"]) { _ = try RecordBatch.decodeRecords(batch) }
    }

    @Test func aSharedPrefixLongerThanThePreviousKeyIsInvalid() throws {
        let source = KeyTables.build(Array(KeyTables.events[0...1]), codec: .zlib)
        let first = KeyTables.replacingTable(
            of: source,
            with: KeyTables.table(
                types: ["article.created"],
                [(0, 1, Array(Newsroom.articleKey.utf8)), (0, 0, Array(Newsroom.festivalKey.utf8))]))
        expectTelexError(
            .invalidBatch, mentioning: ["key table entry 0 of 2", "sharedPrefix 1 exceeds the previous key's 0 bytes"]
        ) { _ = try RecordBatch.validate(first) }
        let second = KeyTables.replacingTable(
            of: source,
            with: KeyTables.table(types: ["article.created"], [(0, 0, Array("urn:a".utf8)), (0, 6, Array("b".utf8))]))
        expectTelexError(
            .invalidBatch, mentioning: ["key table entry 1 of 2", "sharedPrefix 6 exceeds the previous key's 5 bytes"]
        ) { _ = try RecordBatch.validate(second) }
    }

    @Test func keysRebuildingMoreThanTheRecordsCanHoldAreRefusedBeforeCopying() throws {
        // A 300-byte key shared whole by four more entries: 1,500 bytes of keys from a table of about 330.
        let source = KeyTables.build(KeyTables.events, codec: .zlib)
        let header = RecordBatchHeader.peek(source, at: 0)!
        typealias Row = (typeIndex: UInt16, sharedPrefix: UInt16, suffix: [UInt8])
        let whole: Row = (0, 0, Array(repeating: 0x61, count: 300))
        let again: Row = (0, 300, [])
        let batch = KeyTables.replacingTable(
            of: source, with: KeyTables.table(types: [""], [whole] + Array(repeating: again, count: 4)))
        expectTelexError(
            .invalidBatch,
            mentioning: ["key table's keys total 1500 bytes", "uncompressedLength \(header.uncompressedLength)"]
        ) { _ = try RecordBatch.validate(batch, requireKeyTable: true) }
    }

    @Test func aSuffixPastTheTableIsInvalid() throws {
        let batch = KeyTables.replacingTable(
            of: KeyTables.build([KeyTables.events[0]], codec: .zlib),
            with: ByteBuffer(bytes: [0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0x61, 0x62]))
        let mentions = ["key table entry 0 of 1: truncated at field suffix: needs 9 bytes", "(2 bytes left)"]
        expectTelexError(.invalidBatch, mentioning: mentions) { _ = try RecordBatch.validate(batch) }
    }

    @Test func aDamagedTypeListIsInvalid() throws {
        let source = KeyTables.build([KeyTables.events[0]], codec: .zlib)
        expectTelexError(.invalidBatch, mentioning: ["key table of 1 bytes is truncated at field typeCount"]) {
            _ = try RecordBatch.validate(KeyTables.replacingTable(of: source, with: ByteBuffer(bytes: [0])))
        }
        expectTelexError(.invalidBatch, mentioning: ["typeCount 9 cannot fit in the 8 bytes after it"]) {
            _ = try RecordBatch.validate(
                KeyTables.replacingTable(of: source, with: ByteBuffer(bytes: [0, 9, 0, 0, 0, 0, 0, 0, 0, 0])))
        }
        expectTelexError(.invalidBatch, mentioning: ["key table type 1 of 2: truncated"]) {
            _ = try RecordBatch.validate(
                KeyTables.replacingTable(of: source, with: ByteBuffer(bytes: [0, 2, 0, 0, 0, 9, 0x61, 0, 0, 0])))
        }
    }
}
