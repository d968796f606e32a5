import NIOCore

extension RecordBatch {
    /// Calls `body` once per record of `batch`, in record order, with the record's index, its key's bytes and
    /// whether it is a tombstone: what the broker indexes, without allocating per record. From the key table
    /// when the batch has one — each key is rebuilt from its shared prefix in one buffer reused for every
    /// record, and each distinct type is compared with `tombstoneType` once — otherwise as `keys(of:)` does.
    ///
    /// `key` is valid only during the call. The checks are those of `keys(of:header:limits:)`, all made before
    /// the first call: a malformed table throws without calling `body`. `batch` is one whole batch; its CRC is
    /// not checked here.
    public static func forEachKey(
        of batch: ByteBuffer, header: RecordBatchHeader, limits: RecordBatchLimits = .init(),
        _ body: (_ index: Int, _ key: UnsafeRawBufferPointer, _ tombstone: Bool) -> Void
    ) throws(TelexError) {
        let context = { "batch at offset \(header.baseOffset)" }
        guard header.totalSize == batch.readableBytes else {
            throw TelexError(.invalidBatch,
                "\(context()): batchLength says \(header.totalSize) bytes but \(batch.readableBytes) are present",
                offset: header.baseOffset)
        }
        try checkHeader(header, limits: limits, context: context())
        guard let table = try sections(of: batch, header: header, context: context()).table else {
            // A batch stored without a table (recovery, verify): its records are walked or inflated anyway.
            for (index, entry) in try keys(of: batch, header: header, limits: limits).enumerated() {
                entry.key.withUnsafeReadableBytes { body(index, $0, entry.isTombstone) }
            }
            return
        }
        let count = Int(header.recordCount)
        let (entries, tombstones, keyBytes) = try checkKeyTable(table, header: header, context: context())
        // No key is longer than all keys together; the prefix a key shares is left in place by the one before it.
        withUnsafeTemporaryAllocation(byteCount: max(keyBytes, 1), alignment: 1) { key in
            entries.withUnsafeReadableBytes { input in
                var position = 0
                for index in 0..<count {
                    let type = Int(input.loadUnaligned(fromByteOffset: position, as: UInt16.self).bigEndian)
                    let shared = Int(input.loadUnaligned(fromByteOffset: position + 2, as: UInt16.self).bigEndian)
                    let suffix = Int(input.loadUnaligned(fromByteOffset: position + 4, as: UInt16.self).bigEndian)
                    position += 6
                    if suffix > 0 {
                        (key.baseAddress! + shared).copyMemory(from: input.baseAddress! + position, byteCount: suffix)
                    }
                    position += suffix
                    body(index, UnsafeRawBufferPointer(rebasing: key[0..<(shared + suffix)]),
                         tombstones.indexes.contains(type))
                }
            }
        }
    }

    /// Checks a key table as validation requires (types, entries, key sizes) without allocating per record:
    /// returns its entries (after the types), the tombstone types and the bytes its keys take.
    static func checkKeyTable(
        _ table: ByteBuffer, header: RecordBatchHeader, context: @autoclosure () -> String
    ) throws(TelexError) -> (entries: ByteBuffer, tombstones: (typeCount: Int, indexes: [Int]), keyBytes: Int) {
        let count = Int(header.recordCount)
        var entries = table
        let tombstones = try tombstoneTypes(&entries, tableLength: table.readableBytes, context: context())
        guard count <= entries.readableBytes / 6 else {
            throw TelexError(.invalidBatch,
                "\(context()): key table's \(entries.readableBytes) bytes of entries cannot hold \(count) entries (6 bytes or more each)")
        }
        let keyBytes = try checkEntries(entries, count: count, typeCount: tombstones.typeCount, context: context())
        // Front coding lets a few table bytes stand for long keys: the index would hold the expanded keys. Real
        // batches expand far less (their records hold every key too); a table expanding more is refused.
        guard keyBytes <= 16 * header.totalSize else {
            throw TelexError(.invalidBatch,
                "\(context()): key table's keys total \(keyBytes) bytes, more than 16 times the batch's \(header.totalSize) bytes")
        }
        guard keyBytes + 16 * count <= Int(header.uncompressedLength) else {
            throw TelexError(.invalidBatch,
                "\(context()): key table's keys total \(keyBytes) bytes, more than \(count) records of uncompressedLength \(header.uncompressedLength) can hold (16 bytes each besides the key)")
        }
        return (entries, tombstones, keyBytes)
    }

    /// Reads `typeCount` and the types after it, each valid UTF-8 (as `readKeyTable` does, without making
    /// Strings): the type count and the indexes of the types that are `tombstoneType` (usually none or one).
    private static func tombstoneTypes(
        _ buffer: inout ByteBuffer, tableLength: Int, context: @autoclosure () -> String
    ) throws(TelexError) -> (typeCount: Int, indexes: [Int]) {
        var count = 0
        var indexes: [Int] = []
        try walkTypes(&buffer, tableLength: tableLength, context: context()) { index, type in
            count += 1
            if type.readableBytesView.elementsEqual(tombstoneType.utf8) { indexes.append(index) }
        }
        return (count, indexes)
    }
}
