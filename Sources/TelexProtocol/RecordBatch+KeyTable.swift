import NIOCore

/// The key and type of one record, as its batch's key table lists them: what the broker indexes.
public struct BatchKey: Sendable, Equatable {
    /// The record's key, exactly: a slice of one buffer holding the keys rebuilt from the batch's key table (or of
    /// the records section, walked or inflated, for a batch without one).
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
            try BatchDecompressor().decompress(
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
        guard header.totalSize == batch.readableBytes, header.totalSize >= RecordBatchHeader.size else {
            throw TelexError(.invalidBatch,
                "batch at offset \(header.baseOffset): batchLength says \(header.totalSize) bytes but \(batch.readableBytes) are present (at least \(RecordBatchHeader.size))",
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

    /// Reads the table (PROTOCOL.md §6.1): its types, then exactly `recordCount` entries filling it exactly. Keys are
    /// rebuilt from their shared prefixes into one buffer, which every returned key slices.
    static func readKeyTable(
        _ table: ByteBuffer, header: RecordBatchHeader, context: @autoclosure () -> String
    ) throws(TelexError) -> [BatchKey] {
        let count = Int(header.recordCount)
        // The checks PUBLISH makes (checkKeyTable), then the types as Strings.
        let (entries, _, keyBytes) = try checkKeyTable(table, header: header, context: context())
        var typeBytes = table
        let types = try readTypes(&typeBytes, tableLength: table.readableBytes, context: context())
        // The entries passed checkEntries, so the two walks below read them without bounds checks.
        var keys = ByteBufferAllocator().buffer(capacity: keyBytes)
        keys.writeWithUnsafeMutableBytes(minimumWritableBytes: keyBytes) { output in
            // No key has a byte: nothing to copy (and an empty buffer may have no address).
            guard keyBytes > 0, let output = output.baseAddress else { return 0 }
            return entries.withUnsafeReadableBytes { input in
                var position = 0
                var written = 0
                var previousStart = 0
                for _ in 0..<count {
                    let shared = Int(input.loadUnaligned(fromByteOffset: position + 2, as: UInt16.self).bigEndian)
                    let suffix = Int(input.loadUnaligned(fromByteOffset: position + 4, as: UInt16.self).bigEndian)
                    position += 6
                    // The previous key ends at `written`, so the copied prefix never overlaps its destination.
                    (output + written).copyMemory(from: output + previousStart, byteCount: shared)
                    (output + written + shared).copyMemory(
                        from: input.baseAddress! + position, byteCount: suffix)
                    previousStart = written
                    written += shared + suffix
                    position += suffix
                }
                return written
            }
        }
        var found: [BatchKey] = []
        found.reserveCapacity(count)
        entries.withUnsafeReadableBytes { input in
            var position = 0
            var start = 0
            for _ in 0..<count {
                let type = Int(input.loadUnaligned(fromByteOffset: position, as: UInt16.self).bigEndian)
                let shared = Int(input.loadUnaligned(fromByteOffset: position + 2, as: UInt16.self).bigEndian)
                let suffix = Int(input.loadUnaligned(fromByteOffset: position + 4, as: UInt16.self).bigEndian)
                found.append(BatchKey(key: keys.getSlice(at: start, length: shared + suffix)!, type: types[type]))
                start += shared + suffix
                position += 6 + suffix
            }
        }
        return found
    }

    /// Reads `typeCount` and the types after it, each valid UTF-8.
    private static func readTypes(
        _ buffer: inout ByteBuffer, tableLength: Int, context: @autoclosure () -> String
    ) throws(TelexError) -> [String] {
        var types: [String] = []
        try walkTypes(&buffer, tableLength: tableLength, context: context()) { _, bytes in
            // Valid UTF-8, checked by the walk.
            types.append(String(buffer: bytes))
        }
        return types
    }

    /// Reads `typeCount`, then checks each type (whole, valid UTF-8) and hands its bytes to `body`. A truncated or
    /// invalid type fails naming its index.
    static func walkTypes(
        _ buffer: inout ByteBuffer, tableLength: Int, context: @autoclosure () -> String,
        _ body: (_ index: Int, _ type: ByteBuffer) -> Void
    ) throws(TelexError) {
        guard let typeCount = buffer.readInteger(as: UInt16.self) else {
            throw TelexError(.invalidBatch,
                "\(context()): key table of \(tableLength) bytes is truncated at field typeCount")
        }
        guard Int(typeCount) <= buffer.readableBytes / 2 else {
            throw TelexError(.invalidBatch,
                "\(context()): key table's typeCount \(typeCount) cannot fit in the \(buffer.readableBytes) bytes after it (2 bytes or more each)")
        }
        for index in 0..<Int(typeCount) {
            guard let length = buffer.readInteger(as: UInt16.self), let bytes = buffer.readSlice(length: Int(length)) else {
                throw TelexError(.invalidBatch,
                    "\(context()): key table type \(index) of \(typeCount): truncated (\(buffer.readableBytes) bytes left)")
            }
            // ASCII, as types usually are, is valid UTF-8 without decoding.
            let valid = bytes.withUnsafeReadableBytes { type in
                !type.contains(where: { $0 >= 0x80 })
                    || !transcode(type.makeIterator(), from: UTF8.self, to: UTF32.self, stoppingOnError: true) { _ in }
            }
            guard valid else {
                throw TelexError(.invalidBatch,
                    "\(context()): key table type \(index) of \(typeCount): type is not valid UTF-8 (\(buffer.readableBytes) bytes left)")
            }
            body(index, bytes)
        }
    }

    /// Checks `count` entries without copying a key: each complete, its typeIndex below `typeCount`, its
    /// sharedPrefix at most the previous key's length, its key at most 65535 bytes, no bytes left. Returns the
    /// bytes the keys take.
    static func checkEntries(
        _ entries: ByteBuffer, count: Int, typeCount: Int, context: @autoclosure () -> String
    ) throws(TelexError) -> Int {
        try entries.withUnsafeReadableBytes { input throws(TelexError) in
            var position = 0
            var previousLength = 0
            var total = 0
            func fail(_ index: Int, _ problem: String) -> TelexError {
                TelexError(.invalidBatch,
                    "\(context()): key table entry \(index) of \(count): \(problem) (\(input.count - position) bytes left)")
            }
            for index in 0..<count {
                guard input.count - position >= 6 else {
                    let field = ["typeIndex", "sharedPrefix", "suffix"][(input.count - position) / 2]
                    throw fail(index, "truncated at field \(field)")
                }
                let type = Int(input.loadUnaligned(fromByteOffset: position, as: UInt16.self).bigEndian)
                let shared = Int(input.loadUnaligned(fromByteOffset: position + 2, as: UInt16.self).bigEndian)
                let suffix = Int(input.loadUnaligned(fromByteOffset: position + 4, as: UInt16.self).bigEndian)
                guard type < typeCount else {
                    throw fail(index, "typeIndex \(type) is not below typeCount \(typeCount)")
                }
                guard shared <= previousLength else {
                    throw fail(index, "sharedPrefix \(shared) exceeds the previous key's \(previousLength) bytes")
                }
                position += 6
                guard input.count - position >= suffix else {
                    throw fail(index, "truncated at field suffix: needs \(suffix) bytes")
                }
                position += suffix
                previousLength = shared + suffix
                // A record's key is a bytes16: a longer one in the table cannot be any record's.
                guard previousLength <= Int(UInt16.max) else {
                    throw fail(index, "key of \(previousLength) bytes (sharedPrefix \(shared) + suffix \(suffix)) exceeds 65535")
                }
                total += previousLength
            }
            guard position == input.count else {
                throw TelexError(.invalidBatch,
                    "\(context()): key table has \(input.count - position) bytes left after its \(count) entries")
            }
            return total
        }
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
