import NIOCore
import TelexProtocol
import Testing

@Suite("Key table expansion bound")
struct KeyTableBoundTests {
    @Test("a table whose front-coded keys expand to more than 16 times the batch is refused on PUBLISH and not indexed")
    func expansionBound() throws {
        let key = ByteBuffer(string: String(repeating: "k", count: 65_000))
        var builder = RecordBatchBuilder()
        for index in 0..<100 {
            builder.append(timestamp: Int64(index), key: key, headers: [RecordHeader(name: "ce-type", value: "article.updated")],
                           value: ByteBuffer(string: "{}"))
        }
        let batch = builder.build(codec: .zlib)
        let header = try #require(RecordBatchHeader.peek(batch, at: batch.readerIndex))
        #expect(6_500_000 > 16 * header.totalSize)
        expectTelexError(.invalidBatch, mentioning: ["keys total 6500000 bytes, more than 16 times"]) {
            _ = try RecordBatch.validate(batch, requireKeyTable: true)
        }
        var indexed = 0
        #expect(throws: TelexError.self) {
            try RecordBatch.forEachKey(of: batch, header: header) { _, _, _ in indexed += 1 }
        }
        #expect(indexed == 0)
        // A batch whose keys are as short as URIs is far from the bound.
        var ordinary = RecordBatchBuilder()
        for index in 0..<64 {
            ordinary.append(timestamp: Int64(index), key: ByteBuffer(string: "urn:telex:article:\(index)"),
                            headers: [RecordHeader(name: "ce-type", value: "article.updated")], value: ByteBuffer(string: "{}"))
        }
        _ = try RecordBatch.validate(ordinary.build(codec: .zlib), requireKeyTable: true)
    }
}
