import NIOCore

/// Accumulates records and encodes them into one batch with a key table, compressing the records section once.
public struct RecordBatchBuilder {
    private var records = ByteBuffer()
    /// The key table's entries, written as records are appended.
    private var keyTable = ByteBuffer()
    public private(set) var count = 0
    private var firstTimestamp: Int64 = 0
    private var lastTimestamp: Int64 = 0

    public init(reservingCapacity capacity: Int = 0) {
        records.reserveCapacity(capacity)
    }

    /// Bytes of record data so far, before compression.
    public var uncompressedBytes: Int { records.readableBytes }

    /// Appends one record. Timestamps are milliseconds since the epoch and must lie within ±24 days of the first.
    /// The key and the first `ce-type` header value are each at most 65535 bytes (both go in the key table); a
    /// `ce-type` that is not valid UTF-8 makes a batch the broker refuses.
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
        keyTable.writeShortBytes(key)
        keyTable.writeShortBytes(headers.first { $0.name == RecordBatch.typeHeaderName }?.value ?? ByteBuffer())
        count += 1
    }

    /// Appends a record value.
    public mutating func append(_ record: Record) {
        append(timestamp: record.timestamp, key: record.key, headers: record.headers, value: record.value)
    }

    /// Encodes the batch, key table included (`flags` bit 0). Base offset and append time are 0: the broker fills
    /// them in.
    public func build(
        codec: Codec, compressor: ZlibCompressor? = nil, producerID: Int64 = 0, producerSequence: Int32 = -1
    ) -> ByteBuffer {
        precondition(count > 0, "a batch needs at least one record")
        var batch = ByteBuffer()
        batch.reserveCapacity(
            RecordBatchHeader.size + 4 + keyTable.readableBytes
                + (codec == .none ? records.readableBytes : records.readableBytes / 2))
        batch.writeRepeatingByte(0, count: RecordBatchHeader.size)
        batch.writeInteger(UInt32(keyTable.readableBytes))
        batch.writeImmutableBuffer(keyTable)
        switch codec {
        case .none: batch.writeImmutableBuffer(records)
        case .zlib: (compressor ?? ZlibCompressor()).compress(records, into: &batch)
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
