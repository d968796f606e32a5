import NIOCore

/// Accumulates records and encodes them into one batch with a key table, compressing the records section once.
public struct RecordBatchBuilder {
    private var records = ByteBuffer()
    /// The key table's distinct types in order of first use, as written, and each one's index.
    private var typeList = ByteBuffer()
    private var typeIndices: [ByteBuffer: UInt16] = [:]
    /// The key table's entries, written as records are appended, and the key the next entry shares a prefix with.
    private var keyEntries = ByteBuffer()
    private var previousKey = ByteBuffer()
    public private(set) var count = 0
    private var firstTimestamp: Int64 = 0
    private var lastTimestamp: Int64 = 0

    public init(reservingCapacity capacity: Int = 0) {
        records.reserveCapacity(capacity)
    }

    /// Bytes of record data so far, before compression.
    public var uncompressedBytes: Int { records.readableBytes }

    /// Checks what `append` would otherwise trap on: the key, every header name and the first `ce-type` value
    /// (both go in the key table) at most 65535 bytes each, at most 65535 headers. Callers taking records from
    /// users (the client library) check each record first.
    public static func check(_ record: Record, index: Int) throws(TelexError) {
        func tooLong(_ field: String, _ bytes: Int) -> TelexError {
            TelexError(.invalidBatch, "record \(index): \(field) is \(bytes) bytes; at most 65535 fit a batch")
        }
        let limit = Int(UInt16.max)
        if record.key.readableBytes > limit { throw tooLong("the key", record.key.readableBytes) }
        if record.headers.count > limit {
            throw TelexError(.invalidBatch, "record \(index): \(record.headers.count) headers; at most 65535 fit a record")
        }
        for header in record.headers where header.name.utf8.count > limit {
            throw tooLong("header name \"\(header.name.prefix(40))…\"", header.name.utf8.count)
        }
        if let type = record.headers.first(where: { $0.name == RecordBatch.typeHeaderName }),
            type.value.readableBytes > limit
        {
            throw tooLong("the \(RecordBatch.typeHeaderName) header's value", type.value.readableBytes)
        }
    }

    /// Appends one record. Timestamps are milliseconds since the epoch and must lie within ±24 days of the first.
    /// The key and the first `ce-type` header value are each at most 65535 bytes (both go in the key table), and a
    /// batch holds at most 65535 distinct `ce-type` values; a `ce-type` that is not valid UTF-8 makes a batch the
    /// broker refuses.
    public mutating func append(timestamp: Int64, key: ByteBuffer, headers: [RecordHeader] = [], value: ByteBuffer) {
        if count == 0 {
            firstTimestamp = timestamp
            lastTimestamp = timestamp
        }
        lastTimestamp = max(lastTimestamp, timestamp)
        let delta = Int32(clamping: timestamp - firstTimestamp)
        let lengthIndex = records.writerIndex
        records.writeInteger(UInt32(0))
        records.writeInteger(delta)
        records.writeShortBytes(key)
        records.writeInteger(UInt16(headers.count))
        for header in headers {
            records.writeShortString(header.name)
            records.writeLongBytes(header.value)
        }
        records.writeLongBytes(value)
        records.setInteger(UInt32(records.writerIndex - lengthIndex - 4), at: lengthIndex)
        let type = headers.first { $0.name == RecordBatch.typeHeaderName }?.value
        appendKeyTableEntry(key: key, type: type ?? ByteBuffer())
        count += 1
    }

    /// Writes a record's entry: its type's index (adding the type on first use), then its key as the bytes it
    /// shares with the previous key and the rest.
    private mutating func appendKeyTableEntry(key: ByteBuffer, type: ByteBuffer) {
        let typeIndex: UInt16
        if let known = typeIndices[type] {
            typeIndex = known
        } else {
            precondition(typeIndices.count < Int(UInt16.max), "more than 65535 distinct ce-type values in one batch")
            typeIndex = UInt16(typeIndices.count)
            typeIndices[type] = typeIndex
            typeList.writeShortBytes(type)
        }
        let shared = previousKey.withUnsafeReadableBytes { previous in
            key.withUnsafeReadableBytes { current in
                let limit = min(previous.count, current.count)
                var shared = 0
                while shared < limit, previous[shared] == current[shared] { shared += 1 }
                return shared
            }
        }
        keyEntries.writeMultipleIntegers(typeIndex, UInt16(shared))
        keyEntries.writeShortBytes(key.getSlice(at: key.readerIndex + shared, length: key.readableBytes - shared)!)
        previousKey = key
    }

    /// Appends a record value.
    public mutating func append(_ record: Record) {
        append(timestamp: record.timestamp, key: record.key, headers: record.headers, value: record.value)
    }

    /// Encodes the batch, key table included (`flags` bit 0). Base offset and append time are 0: the broker fills
    /// them in.
    public func build(
        codec: Codec, compressor: BatchCompressor? = nil, producerID: Int64 = 0, producerSequence: Int32 = -1
    ) -> ByteBuffer {
        precondition(count > 0, "a batch needs at least one record")
        var batch = ByteBuffer()
        let tableLength = 2 + typeList.readableBytes + keyEntries.readableBytes
        batch.reserveCapacity(
            RecordBatchHeader.size + 4 + tableLength
                + (codec == .none ? records.readableBytes : records.readableBytes / 2))
        batch.writeRepeatingByte(0, count: RecordBatchHeader.size)
        batch.writeMultipleIntegers(UInt32(tableLength), UInt16(typeIndices.count))
        batch.writeImmutableBuffer(typeList)
        batch.writeImmutableBuffer(keyEntries)
        switch codec {
        case .none: batch.writeImmutableBuffer(records)
        case .zlib: (compressor ?? BatchCompressor()).compress(records, into: &batch)
        }
        let header = RecordBatchHeader(
            baseOffset: 0, batchLength: UInt32(batch.readableBytes - RecordBatchHeader.lengthPrefixSize), appendTime: 0,
            crc: 0, magic: RecordBatchHeader.currentMagic, codecRaw: codec.rawValue, flags: RecordBatchHeader.keyTableFlag,
            firstTimestamp: firstTimestamp, lastTimestamp: lastTimestamp, producerID: producerID,
            producerSequence: producerSequence, recordCount: UInt32(count), uncompressedLength: UInt32(records.readableBytes))
        var headerBytes = ByteBuffer()
        header.write(to: &headerBytes)
        batch.setBuffer(headerBytes, at: 0)
        let crc = CRC32.checksum(batch.getSlice(at: RecordBatchHeader.crcStart,
                                                length: batch.readableBytes - RecordBatchHeader.crcStart)!)
        batch.setInteger(crc, at: 20)
        return batch
    }
}
