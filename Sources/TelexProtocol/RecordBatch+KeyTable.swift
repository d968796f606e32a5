import NIOCore

/// The key and type of one record, as its batch's key table lists them: what the broker indexes.
public struct BatchKey: Sendable, Equatable {
    /// The record's key, exactly: a slice of the batch (or of its inflated records) it was read from.
    public var key: ByteBuffer
    /// The value of the record's first `ce-type` header; empty when it has none.
    public var type: String

    public init(key: ByteBuffer, type: String) {
        self.key = key
        self.type = type
    }

    /// Whether the record is its key's tombstone: its type is exactly `article.deleted`.
    public var isTombstone: Bool { type == RecordBatch.tombstoneType }
}

extension RecordBatchHeader {
    /// `flags` bit 0: a key table follows the header. Layout in Protocol/PROTOCOL.md §6.1.
    public static let keyTableFlag: UInt16 = 1
    /// Whether the batch carries a key table.
    public var hasKeyTable: Bool { flags & Self.keyTableFlag != 0 }
}

/// The parts of a batch after its 64-byte header.
struct BatchSections {
    /// The key table's entries (after `keyTableLength`), or nil when the batch has none.
    var table: ByteBuffer?
    /// The records section as stored (compressed for codec zlib).
    var records: ByteBuffer
}

extension RecordBatch {
    /// The header whose first value a record's key table entry repeats.
    public static let typeHeaderName = "ce-type"
    /// The type that makes a record its key's tombstone.
    public static let tombstoneType = "article.deleted"

    /// The key and ce-type of every record, in record order: from the key table when the batch has one
    /// (no inflating); otherwise by walking (codec none) or inflating (codec zlib, for batches stored before
    /// tables existed) its records. `batch` is one whole batch; its CRC is not checked here.
    public static func keys(
        of batch: ByteBuffer, header: RecordBatchHeader, limits: RecordBatchLimits = .init()
    ) throws(TelexError) -> [BatchKey] {
        let context = { "batch at offset \(header.baseOffset)" }
        guard header.totalSize == batch.readableBytes else {
            throw TelexError(.invalidBatch,
                "\(context()): batchLength says \(header.totalSize) bytes but \(batch.readableBytes) are present",
                offset: header.baseOffset)
        }
        try checkHeader(header, limits: limits, context: context())
        let parts = try sections(of: batch, header: header, context: context())
        if let table = parts.table {
            return try readKeyTable(table, header: header, context: context())
        }
        var plain = parts.records
        if header.codec == .zlib {
            plain = ByteBuffer()
            try ZlibDecompressor().decompress(
                parts.records, expectedLength: Int(header.uncompressedLength), into: &plain, context: context())
        }
        var keys: [BatchKey] = []
        keys.reserveCapacity(Int(header.recordCount))
        try walkRecords(plain, header: header, context: context()) { _, record in
            let type = record.headers.first { $0.name == typeHeaderName }?.value
            keys.append(BatchKey(key: record.key, type: type.map { String(buffer: $0) } ?? ""))
        }
        return keys
    }

    /// The records section of one whole batch as stored (compressed for codec zlib), after its key table if any.
    public static func recordsSection(of batch: ByteBuffer, header: RecordBatchHeader) throws(TelexError) -> ByteBuffer {
        guard header.totalSize == batch.readableBytes else {
            throw TelexError(.invalidBatch,
                "batch at offset \(header.baseOffset): batchLength says \(header.totalSize) bytes but \(batch.readableBytes) are present",
                offset: header.baseOffset)
        }
        return try sections(of: batch, header: header, context: "batch at offset \(header.baseOffset)").records
    }

    /// On PUBLISH only: no unknown flag bits, and a zlib batch carries the key table the broker indexes.
    static func checkPublishedFlags(_ header: RecordBatchHeader, context: @autoclosure () -> String) throws(TelexError) {
        guard header.flags & ~RecordBatchHeader.keyTableFlag == 0 else {
            throw TelexError(.invalidBatch,
                "\(context()): unknown batch flags 0x\(String(header.flags, radix: 16)) (only bit 0, key table, is defined)")
        }
        if header.codec == .zlib, !header.hasKeyTable {
            throw TelexError(.invalidBatch,
                "\(context()): zlib batch without a key table (flags bit 0): the broker indexes keys without inflating")
        }
    }

    /// Splits the bytes after the header into key table and records section. `batch` holds exactly
    /// `header.totalSize` bytes and `checkHeader` passed.
    static func sections(
        of batch: ByteBuffer, header: RecordBatchHeader, context: @autoclosure () -> String
    ) throws(TelexError) -> BatchSections {
        let start = batch.readerIndex + RecordBatchHeader.size
        let after = header.storedRecordsLength
        guard header.hasKeyTable else {
            return BatchSections(table: nil, records: batch.getSlice(at: start, length: after)!)
        }
        guard after >= 4, let tableLength = batch.getInteger(at: start, as: UInt32.self) else {
            throw TelexError(.invalidBatch,
                "\(context()): flags say a key table follows but only \(after) bytes follow the header (keyTableLength needs 4)")
        }
        guard Int(tableLength) <= after - 4 else {
            throw TelexError(.invalidBatch,
                "\(context()): keyTableLength \(tableLength) exceeds the \(after - 4) bytes after it")
        }
        let recordsLength = after - 4 - Int(tableLength)
        if header.codec == Codec.none, recordsLength != Int(header.uncompressedLength) {
            throw TelexError(.invalidBatch,
                "\(context()): codec none but uncompressedLength \(header.uncompressedLength) != records section \(recordsLength) (after a key table of \(tableLength) bytes)")
        }
        return BatchSections(
            table: batch.getSlice(at: start + 4, length: Int(tableLength))!,
            records: batch.getSlice(at: start + 4 + Int(tableLength), length: recordsLength)!)
    }

    /// Reads the table's entries: exactly `recordCount` of them filling it exactly, each type valid UTF-8.
    static func readKeyTable(
        _ table: ByteBuffer, header: RecordBatchHeader, context: @autoclosure () -> String
    ) throws(TelexError) -> [BatchKey] {
        let count = Int(header.recordCount)
        var buffer = table
        // Each entry takes at least its two length fields: refuse a count the table cannot hold before looping.
        guard count <= buffer.readableBytes / 4 else {
            throw TelexError(.invalidBatch,
                "\(context()): key table of \(buffer.readableBytes) bytes cannot hold \(count) entries (4 bytes or more each)")
        }
        func fail(_ index: Int, _ problem: String) -> TelexError {
            TelexError(.invalidBatch,
                "\(context()): key table entry \(index) of \(count): \(problem) (\(buffer.readableBytes) bytes left)")
        }
        var entries: [BatchKey] = []
        entries.reserveCapacity(count)
        for index in 0..<count {
            guard let keyLength = buffer.readInteger(as: UInt16.self), let key = buffer.readSlice(length: Int(keyLength)) else {
                throw fail(index, "truncated at field key")
            }
            guard let typeLength = buffer.readInteger(as: UInt16.self),
                let typeBytes = buffer.readSlice(length: Int(typeLength))
            else {
                throw fail(index, "truncated at field type")
            }
            guard let type = typeBytes.validatedUTF8String() else {
                throw fail(index, "type is not valid UTF-8")
            }
            entries.append(BatchKey(key: key, type: type))
        }
        guard buffer.readableBytes == 0 else {
            throw TelexError(.invalidBatch,
                "\(context()): key table has \(buffer.readableBytes) bytes left after its \(count) entries")
        }
        return entries
    }

    /// Fails unless `record`'s key and first `ce-type` header equal its key table entry.
    static func checkRecord(
        _ record: Record, index: Int, against entry: BatchKey, context: @autoclosure () -> String
    ) throws(TelexError) {
        let type = record.headers.first { $0.name == typeHeaderName }?.value ?? ByteBuffer()
        guard record.key == entry.key, type.readableBytesView.elementsEqual(entry.type.utf8) else {
            throw TelexError(.invalidBatch,
                "\(context()): record \(index): key table says key \(quoted(entry.key)) type \(quoted(ByteBuffer(string: entry.type))), record has key \(quoted(record.key)) type \(quoted(type))")
        }
    }

    /// A key or type for an error message: at most 80 bytes, invalid UTF-8 repaired.
    private static func quoted(_ bytes: ByteBuffer) -> String {
        let shown = String(decoding: bytes.readableBytesView.prefix(80), as: UTF8.self)
        return "\"\(shown)\"" + (bytes.readableBytes > 80 ? "…" : "")
    }
}
