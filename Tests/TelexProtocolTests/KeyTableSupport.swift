import NIOCore
import TelexProtocol

/// Builds batches around the key table: articles with `ce-type` headers, tables rewritten or removed.
enum KeyTables {
    /// An article event record: key `uri`, headers `ce-type` and `ce-id` as `telex-pub` writes them.
    static func event(_ uri: String, type: String, at offset: Int64 = 0) -> Record {
        Record(
            timestamp: Newsroom.publishedAt + offset, key: ByteBuffer(string: uri),
            headers: [RecordHeader(name: "ce-type", value: type), RecordHeader(name: "ce-id", value: "id-\(offset)")],
            value: ByteBuffer(string: #"{"data":{"uri":"\#(uri)"}}"#))
    }

    /// Three versions of two articles, the last a deletion, and one record without a `ce-type`.
    static let events: [Record] = [
        event(Newsroom.articleKey, type: "article.created", at: 0),
        event(Newsroom.festivalKey, type: "article.created", at: 10),
        event(Newsroom.articleKey, type: "article.updated", at: 20),
        Newsroom.records[3],
        event(Newsroom.articleKey, type: "article.deleted", at: 30),
    ]

    /// What `keys(of:)` must give for `records`: each key and its first `ce-type` (empty without one).
    static func expectedKeys(_ records: [Record]) -> [BatchKey] {
        records.map { BatchKey(key: $0.key, type: $0.header("ce-type") ?? "") }
    }

    static func build(_ records: [Record], codec: Codec) -> ByteBuffer {
        var builder = RecordBatchBuilder()
        records.forEach { builder.append($0) }
        return builder.build(codec: codec, producerID: Newsroom.producerID, producerSequence: 0)
    }

    /// The bytes of `batch`'s key table entries (without `keyTableLength`).
    static func table(of batch: ByteBuffer) -> ByteBuffer {
        let length = Int(batch.getInteger(at: batch.readerIndex + RecordBatchHeader.size, as: UInt32.self)!)
        return batch.getSlice(at: batch.readerIndex + RecordBatchHeader.size + 4, length: length)!
    }

    /// Where `batch`'s records section begins, after the header and its key table.
    static func recordsStart(of batch: ByteBuffer) -> Int {
        RecordBatchHeader.size + 4 + table(of: batch).readableBytes
    }

    /// `batch` with its key table replaced by `entries` (nil: no table and flags bit 0 cleared, as batches were
    /// before tables existed), `batchLength`, `keyTableLength` and the CRC made consistent.
    static func replacingTable(of batch: ByteBuffer, with entries: ByteBuffer?) -> ByteBuffer {
        var header = RecordBatchHeader.peek(batch, at: batch.readerIndex)!
        let tableBytes = header.hasKeyTable ? 4 + table(of: batch).readableBytes : 0
        let records = batch.getSlice(
            at: batch.readerIndex + RecordBatchHeader.size + tableBytes,
            length: header.storedRecordsLength - tableBytes)!
        var rebuilt = ByteBuffer()
        rebuilt.writeRepeatingByte(0, count: RecordBatchHeader.size)
        if let entries {
            rebuilt.writeInteger(UInt32(entries.readableBytes))
            rebuilt.writeImmutableBuffer(entries)
            header.flags |= RecordBatchHeader.keyTableFlag
        } else {
            header.flags &= ~RecordBatchHeader.keyTableFlag
        }
        rebuilt.writeImmutableBuffer(records)
        header.batchLength = UInt32(rebuilt.readableBytes - RecordBatchHeader.lengthPrefixSize)
        var headerBytes = ByteBuffer()
        header.write(to: &headerBytes)
        rebuilt.setBuffer(headerBytes, at: 0)
        return BadVectors.patched(rebuilt) { _ in }
    }

    /// A key table (without `keyTableLength`) written from the spec, apart from the builder: the types in order
    /// of first use, then each entry's type index, the bytes its key shares with the previous key, and the rest.
    static func entries(_ entries: [(key: String, type: String)]) -> ByteBuffer {
        Self.entries(entries.map { (Array($0.key.utf8), $0.type) })
    }

    /// `entries(_:)` for keys of any bytes.
    static func entries(_ entries: [(key: [UInt8], type: String)]) -> ByteBuffer {
        var types: [String] = []
        var rows: [(typeIndex: UInt16, sharedPrefix: UInt16, suffix: [UInt8])] = []
        var previous: [UInt8] = []
        for entry in entries {
            if !types.contains(entry.type) { types.append(entry.type) }
            let key = entry.key
            let shared = zip(previous, key).prefix(while: { $0.0 == $0.1 }).count
            rows.append((UInt16(types.firstIndex(of: entry.type)!), UInt16(shared), Array(key[shared...])))
            previous = key
        }
        return table(types: types, rows)
    }

    /// A key table (without `keyTableLength`) of exactly these fields, consistent or not.
    static func table(
        types: [String], _ rows: [(typeIndex: UInt16, sharedPrefix: UInt16, suffix: [UInt8])]
    ) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt16(types.count))
        for type in types { buffer.writeShortBytes(ByteBuffer(string: type)) }
        for row in rows {
            buffer.writeMultipleIntegers(row.typeIndex, row.sharedPrefix)
            buffer.writeShortBytes(ByteBuffer(bytes: row.suffix))
        }
        return buffer
    }
}

extension Newsroom {
    /// `article.deleted` for the NPC story as `telex-pub` maps it (PROTOCOL.md §6.9): the key's tombstone.
    static let deletion = Record(
        timestamp: publishedAt + 2_700_000, key: ByteBuffer(string: articleKey),
        headers: [
            RecordHeader(name: "ce-type", value: RecordBatch.tombstoneType),
            RecordHeader(name: "ce-id", value: "5e0b7c31-94d2-4a6f-8c1e-2f7a9d3b6e08"),
        ],
        value: ByteBuffer(
            string: #"{"data":{"uri":"\#(articleKey)"},"id":"5e0b7c31-94d2-4a6f-8c1e-2f7a9d3b6e08","source":"urn:telex:desk:world","specversion":"1.0","time":"2024-03-05T09:15:00Z","type":"article.deleted"}"#
        ))

    /// A zlib batch of the deletion alone, from a producer that is not idempotent.
    static var deletionBatch: ByteBuffer {
        var builder = RecordBatchBuilder()
        builder.append(deletion)
        return builder.build(codec: .zlib, compressor: BatchCompressor(level: 1, implementation: .zlib))
    }

    static var keyTableVectors: [Vector] {
        [
            Vector(
                name: "publish_deleted",
                description:
                    "PUBLISH of a zlib batch holding one article.deleted event as telex-pub maps it (ce-type and ce-id headers): its key table entry, outside the compressed records, names the key and the type article.deleted, so the broker indexes the tombstone without inflating. Stands apart from the conversation of the other vectors.",
                message: .client(.publish(topic: topic, batch: deletionBatch)), requestID: 18)
        ]
    }
}

extension BadVectors {
    static var keyTableVectors: [Vector] {
        let withoutTable = KeyTables.replacingTable(of: Newsroom.zlibBatch, with: nil)
        let oneEntry = KeyTables.replacingTable(
            of: Newsroom.plainBatch, with: KeyTables.entries([(Newsroom.articleKey, "")]))
        let article = Array(Newsroom.articleKey.utf8)
        let typeOutOfRange = KeyTables.replacingTable(
            of: Newsroom.zlibBatch,
            with: KeyTables.table(types: [""], [(0, 0, article), (1, 25, Array(Newsroom.festivalKey.utf8.dropFirst(25)))]))
        let prefixTooLong = KeyTables.replacingTable(
            of: Newsroom.plainBatch, with: KeyTables.table(types: [""], [(0, 0, article), (0, 40, [])]))
        let longKey = [UInt8](repeating: 0x61, count: 430)
        let keysTooLong = KeyTables.replacingTable(
            of: Newsroom.plainBatch, with: KeyTables.table(types: [""], [(0, 0, longKey), (0, 430, [])]))
        let lyingTable = KeyTables.replacingTable(
            of: Newsroom.zlibBatch,
            with: KeyTables.entries([(Newsroom.articleKey, ""), (Newsroom.festivalKey, RecordBatch.tombstoneType)]))
        return [
            Vector(
                name: "zlib_without_key_table",
                description:
                    "The 'publish_zlib' batch without its key table (flags 0, batchLength and CRC recomputed), as producers wrote batches before key tables. The broker refuses it on PUBLISH (it indexes keys without inflating); a consumer still decodes such a batch when it is stored.",
                bytes: publish(withoutTable), stage: .publishOnly, code: .invalidBatch,
                mentions: ["zlib batch without a key table (flags bit 0)"]),
            Vector(
                name: "unknown_batch_flags",
                description:
                    "The 'publish' batch with flags 0x0003 (CRC recomputed): bit 1 is not defined. Refused on PUBLISH; readers of stored batches ignore bits 1-15.",
                bytes: publish(patched(Newsroom.plainBatch) { $0.setInteger(UInt16(3), at: 26) }),
                stage: .publishOnly, code: .invalidBatch, mentions: ["unknown batch flags 0x3"]),
            Vector(
                name: "key_table_entry_missing",
                description:
                    "The 'publish' batch (2 records) whose key table has one entry (keyTableLength, batchLength and CRC recomputed).",
                bytes: publish(oneEntry), stage: .batchValidate, code: .invalidBatch,
                mentions: ["key table entry 1 of 2", "truncated at field typeIndex"]),
            Vector(
                name: "key_table_type_index_out_of_range",
                description:
                    "The 'publish_zlib' batch whose key table lists one type (the empty string) but whose entry 1 names typeIndex 1 (keyTableLength, batchLength and CRC recomputed).",
                bytes: publish(typeOutOfRange), stage: .batchValidate, code: .invalidBatch,
                mentions: ["key table entry 1 of 2", "typeIndex 1 is not below typeCount 1"]),
            Vector(
                name: "key_table_shared_prefix_too_long",
                description:
                    "The 'publish' batch whose key table's entry 1 shares 40 bytes with the previous key, which has 33 (CRC recomputed).",
                bytes: publish(prefixTooLong), stage: .batchValidate, code: .invalidBatch,
                mentions: ["key table entry 1 of 2", "sharedPrefix 40 exceeds the previous key's 33 bytes"]),
            Vector(
                name: "key_table_keys_exceed_records",
                description:
                    "The 'publish' batch (uncompressedLength 883) whose key table gives both records a 430-byte key, the second by sharing all of the first: 860 bytes of keys cannot fit in 2 records of 883 bytes (each takes 16 bytes besides its key). Keeps a small table from rebuilding far more key bytes than the batch declares (keyTableLength, batchLength and CRC recomputed).",
                bytes: publish(keysTooLong), stage: .batchValidate, code: .invalidBatch,
                mentions: ["key table's keys total 860 bytes", "uncompressedLength 883"]),
            Vector(
                name: "key_table_disagrees",
                description:
                    "The 'publish_zlib' batch whose key table says record 1 (the festival article) has type article.deleted while the record has no ce-type header (CRC recomputed). The broker cannot see this without inflating and accepts it; the consumer's check refuses the batch.",
                bytes: publish(lyingTable), stage: .batchDecode, code: .invalidBatch,
                mentions: ["record 1: key table says key \"\(Newsroom.festivalKey)\" type \"article.deleted\"",
                           "record has key \"\(Newsroom.festivalKey)\" type \"\""]),
        ]
    }
}
