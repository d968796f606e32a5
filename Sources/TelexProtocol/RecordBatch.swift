import NIOCore

/// How a batch's records section is stored.
public enum Codec: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case none = 0
    case zlib = 1

    public var description: String {
        switch self {
        case .none: "none"
        case .zlib: "zlib"
        }
    }
}

/// One name/value pair attached to a record.
public struct RecordHeader: Sendable, Equatable {
    public var name: String
    public var value: ByteBuffer

    public init(name: String, value: ByteBuffer) {
        self.name = name
        self.value = value
    }

    public init(name: String, value: String) {
        self.init(name: name, value: ByteBuffer(string: value))
    }
}

/// One event as stored in a batch: key, headers, timestamp and value.
public struct Record: Sendable, Equatable {
    /// Producer timestamp in milliseconds since the Unix epoch.
    public var timestamp: Int64
    /// The record key; for article events the ninjs `uri`.
    public var key: ByteBuffer
    public var headers: [RecordHeader]
    public var value: ByteBuffer

    public init(timestamp: Int64, key: ByteBuffer, headers: [RecordHeader] = [], value: ByteBuffer) {
        self.timestamp = timestamp
        self.key = key
        self.headers = headers
        self.value = value
    }

    /// The value of the first header called `name`, as a string.
    public func header(_ name: String) -> String? {
        headers.first { $0.name == name }.map { String(buffer: $0.value) }
    }
}

/// Bounds a receiver enforces on batches before it spends memory on them.
public struct RecordBatchLimits: Sendable, Equatable {
    /// Largest records section a batch may inflate to, in bytes. Default 32 MiB.
    public var maxUncompressedBytes: Int
    /// Largest record count a batch may declare. Default 1,000,000.
    public var maxRecordCount: Int

    public init(maxUncompressedBytes: Int = 32 << 20, maxRecordCount: Int = 1_000_000) {
        self.maxUncompressedBytes = maxUncompressedBytes
        self.maxRecordCount = maxRecordCount
    }
}

/// The fixed 64-byte header of a record batch. Layout in Protocol/PROTOCOL.md, "Record batches".
public struct RecordBatchHeader: Sendable, Equatable {
    /// Size of the header in bytes.
    public static let size = 64
    /// Bytes before `batchLength` ends: the part of the header outside the length.
    public static let lengthPrefixSize = 12
    /// Where the CRC-covered bytes begin.
    public static let crcStart = 24
    /// The only batch format version.
    public static let currentMagic: UInt8 = 1

    public var baseOffset: Int64
    /// Bytes after the `batchLength` field; the whole batch is `batchLength + 12` bytes.
    public var batchLength: UInt32
    public var appendTime: Int64
    public var crc: UInt32
    public var magic: UInt8
    public var codecRaw: UInt8
    public var flags: UInt16
    public var firstTimestamp: Int64
    public var lastTimestamp: Int64
    public var producerID: Int64
    public var producerSequence: Int32
    public var recordCount: UInt32
    public var uncompressedLength: UInt32

    public var codec: Codec? { Codec(rawValue: codecRaw) }
    public var totalSize: Int { Self.lengthPrefixSize + Int(batchLength) }
    public var storedRecordsLength: Int { totalSize - Self.size }
    /// The offset after this batch's last record.
    public var nextOffset: Int64 { baseOffset + Int64(recordCount) }
    public var lastOffset: Int64 { nextOffset - 1 }

    /// Reads a header at `index` without moving the reader index; nil if fewer than 64 bytes are there.
    public static func peek(_ buffer: ByteBuffer, at index: Int) -> RecordBatchHeader? {
        guard buffer.readableBytes >= index - buffer.readerIndex + size, index >= buffer.readerIndex else { return nil }
        var header = buffer.getSlice(at: index, length: size)!
        guard
            let (baseOffset, batchLength, appendTime, crc, magic, codecRaw, flags) = header.readMultipleIntegers(
                as: (Int64, UInt32, Int64, UInt32, UInt8, UInt8, UInt16).self),
            let (firstTimestamp, lastTimestamp, producerID, producerSequence, recordCount, uncompressedLength) =
                header.readMultipleIntegers(as: (Int64, Int64, Int64, Int32, UInt32, UInt32).self)
        else { return nil }
        return RecordBatchHeader(
            baseOffset: baseOffset, batchLength: batchLength, appendTime: appendTime, crc: crc, magic: magic,
            codecRaw: codecRaw, flags: flags, firstTimestamp: firstTimestamp, lastTimestamp: lastTimestamp,
            producerID: producerID, producerSequence: producerSequence, recordCount: recordCount,
            uncompressedLength: uncompressedLength)
    }

    /// Writes the 64 header bytes.
    public func write(to buffer: inout ByteBuffer) {
        buffer.writeMultipleIntegers(baseOffset, batchLength, appendTime, crc, magic, codecRaw, flags)
        buffer.writeMultipleIntegers(
            firstTimestamp, lastTimestamp, producerID, producerSequence, recordCount, uncompressedLength)
    }
}

/// Operations on encoded record batches: the broker validates and stamps them without decompressing;
/// consumers decode them into records.
public enum RecordBatch {
    /// Checks one whole batch as the broker receives it: exact length, magic, codec, counts, limits and CRC.
    /// The records of an uncompressed batch are walked too; a compressed one is not inflated.
    public static func validate(
        _ batch: ByteBuffer, limits: RecordBatchLimits = .init(), context: @autoclosure () -> String = "batch"
    ) throws(TelexError) -> RecordBatchHeader {
        guard let header = RecordBatchHeader.peek(batch, at: batch.readerIndex) else {
            throw TelexError(.invalidBatch,
                "\(context()): \(batch.readableBytes) bytes is shorter than the \(RecordBatchHeader.size)-byte batch header")
        }
        guard header.totalSize == batch.readableBytes else {
            throw TelexError(.invalidBatch,
                "\(context()): batchLength \(header.batchLength) says \(header.totalSize) bytes but \(batch.readableBytes) were sent")
        }
        try checkHeader(header, limits: limits, context: context())
        let crc = CRC32.checksum(batch.getSlice(at: batch.readerIndex + RecordBatchHeader.crcStart,
                                                length: header.totalSize - RecordBatchHeader.crcStart)!)
        guard crc == header.crc else {
            throw TelexError(.corruptBatch,
                "\(context()): CRC mismatch (header says \(hex(header.crc)), bytes give \(hex(crc)))",
                offset: header.baseOffset)
        }
        if header.codec == Codec.none {
            let records = batch.getSlice(at: batch.readerIndex + RecordBatchHeader.size, length: header.storedRecordsLength)!
            try walkRecords(records, header: header, context: context()) { _, _ in }
        }
        return header
    }

    /// Checks the header fields that can be checked without the records.
    public static func checkHeader(
        _ header: RecordBatchHeader, limits: RecordBatchLimits, context: @autoclosure () -> String
    ) throws(TelexError) {
        guard header.totalSize >= RecordBatchHeader.size else {
            throw TelexError(.invalidBatch,
                "\(context()): batchLength \(header.batchLength) is below the minimum \(RecordBatchHeader.size - RecordBatchHeader.lengthPrefixSize)")
        }
        guard header.magic == RecordBatchHeader.currentMagic else {
            throw TelexError(.invalidBatch, "\(context()): unknown batch magic \(header.magic) (expected 1)")
        }
        guard let codec = header.codec else {
            throw TelexError(.invalidBatch, "\(context()): unknown codec \(header.codecRaw) (0 none, 1 zlib)")
        }
        guard header.recordCount >= 1, Int(header.recordCount) <= limits.maxRecordCount else {
            throw TelexError(.invalidBatch,
                "\(context()): recordCount \(header.recordCount) outside 1...\(limits.maxRecordCount)")
        }
        guard Int(header.uncompressedLength) <= limits.maxUncompressedBytes else {
            throw TelexError(.batchTooLarge,
                "\(context()): declares \(header.uncompressedLength) uncompressed bytes, above the limit of \(limits.maxUncompressedBytes)")
        }
        if codec == .none, Int(header.uncompressedLength) != header.storedRecordsLength {
            throw TelexError(.invalidBatch,
                "\(context()): codec none but uncompressedLength \(header.uncompressedLength) != records section \(header.storedRecordsLength)")
        }
        // Each record takes at least 16 bytes, so the count must fit the declared length.
        guard UInt64(header.recordCount) * 16 <= UInt64(header.uncompressedLength) else {
            throw TelexError(.invalidBatch,
                "\(context()): recordCount \(header.recordCount) cannot fit in \(header.uncompressedLength) record bytes")
        }
        guard header.firstTimestamp <= header.lastTimestamp else {
            throw TelexError(.invalidBatch,
                "\(context()): firstTimestamp \(header.firstTimestamp) is after lastTimestamp \(header.lastTimestamp)")
        }
    }

    /// Stamps the broker-assigned fields in place. They sit outside the CRC, so it stays valid.
    @inlinable
    public static func assign(baseOffset: Int64, appendTime: Int64, in batch: inout ByteBuffer, at index: Int) {
        batch.setInteger(baseOffset, at: index)
        batch.setInteger(appendTime, at: index + 12)
    }

    /// Decodes every record of one whole batch (inflating it if compressed). Offsets are `baseOffset + index`.
    public static func decodeRecords(
        _ batch: ByteBuffer, limits: RecordBatchLimits = .init(), decompressor: ZlibDecompressor? = nil,
        context: @autoclosure () -> String = "batch"
    ) throws(TelexError) -> (header: RecordBatchHeader, records: [Record]) {
        var scratch = ByteBuffer()
        return try decodeRecords(batch, limits: limits, decompressor: decompressor, context: context(), scratch: &scratch)
    }

    /// Decodes like `decodeRecords(_:limits:decompressor:context:)`, inflating into `scratch`. The records are
    /// slices of it; once they are gone, the next call reuses its memory (copy-on-write keeps live records safe).
    public static func decodeRecords(
        _ batch: ByteBuffer, limits: RecordBatchLimits = .init(), decompressor: ZlibDecompressor?,
        context: @autoclosure () -> String, scratch: inout ByteBuffer
    ) throws(TelexError) -> (header: RecordBatchHeader, records: [Record]) {
        let header = try validateForDecoding(batch, limits: limits, context: context())
        let stored = batch.getSlice(at: batch.readerIndex + RecordBatchHeader.size, length: header.storedRecordsLength)!
        let plain: ByteBuffer
        switch header.codec! {
        case .none:
            plain = stored
        case .zlib:
            scratch.clear()
            try (decompressor ?? ZlibDecompressor()).decompress(
                stored, expectedLength: Int(header.uncompressedLength), into: &scratch, context: context())
            plain = scratch
        }
        var records: [Record] = []
        records.reserveCapacity(Int(header.recordCount))
        try walkRecords(plain, header: header, context: context()) { _, record in records.append(record) }
        return (header, records)
    }

    /// Header, length and CRC checks for a batch about to be decoded.
    static func validateForDecoding(
        _ batch: ByteBuffer, limits: RecordBatchLimits, context: @autoclosure () -> String
    ) throws(TelexError) -> RecordBatchHeader {
        guard let header = RecordBatchHeader.peek(batch, at: batch.readerIndex) else {
            throw TelexError(.invalidBatch, "\(context()): shorter than the batch header")
        }
        guard header.totalSize == batch.readableBytes else {
            throw TelexError(.invalidBatch,
                "\(context()): batchLength says \(header.totalSize) bytes but \(batch.readableBytes) are present")
        }
        try checkHeader(header, limits: limits, context: context())
        let crc = CRC32.checksum(batch.getSlice(at: batch.readerIndex + RecordBatchHeader.crcStart,
                                                length: header.totalSize - RecordBatchHeader.crcStart)!)
        guard crc == header.crc else {
            throw TelexError(.corruptBatch,
                "\(context()) at offset \(header.baseOffset): CRC mismatch (header \(hex(header.crc)), bytes \(hex(crc)))",
                offset: header.baseOffset)
        }
        return header
    }

    /// Walks the records section, checking that exactly `recordCount` records use exactly its bytes.
    /// The happy path builds no strings: messages are made only when something is wrong.
    static func walkRecords(
        _ section: ByteBuffer, header: RecordBatchHeader, context: @autoclosure () -> String, _ body: (Int, Record) -> Void
    ) throws(TelexError) {
        var buffer = section
        func fail(_ index: Int, _ problem: String, _ left: Int) -> TelexError {
            TelexError(.invalidBatch,
                "\(context()): record \(index) of \(header.recordCount): \(problem) (\(left) bytes left)")
        }
        for index in 0..<Int(header.recordCount) {
            guard let length = buffer.readInteger(as: UInt32.self) else {
                throw fail(index, "truncated at its length", buffer.readableBytes)
            }
            guard var record = buffer.readSlice(length: Int(length)) else {
                throw TelexError(.invalidBatch,
                    "\(context()): record \(index) of \(header.recordCount) body: truncated (needs \(length) bytes, \(buffer.readableBytes) left)")
            }
            guard let delta = record.readInteger(as: Int32.self) else {
                throw fail(index, "truncated at field timestampDelta", record.readableBytes)
            }
            // Checked, not trapped: a batch near the end of the i64 range would otherwise crash the broker.
            let (timestamp, overflow) = header.firstTimestamp.addingReportingOverflow(Int64(delta))
            guard !overflow else {
                throw fail(index,
                    "timestamp overflows: firstTimestamp \(header.firstTimestamp) + timestampDelta \(delta) is outside i64",
                    record.readableBytes)
            }
            guard let keyLength = record.readInteger(as: UInt16.self), let key = record.readSlice(length: Int(keyLength)) else {
                throw fail(index, "truncated at field key", record.readableBytes)
            }
            guard let headerCount = record.readInteger(as: UInt16.self) else {
                throw fail(index, "truncated at field headerCount", record.readableBytes)
            }
            var headers: [RecordHeader] = []
            headers.reserveCapacity(Int(headerCount))
            for headerIndex in 0..<Int(headerCount) {
                guard let nameLength = record.readInteger(as: UInt16.self),
                    let nameBytes = record.readSlice(length: Int(nameLength))
                else {
                    throw fail(index, "truncated at field header \(headerIndex) name", record.readableBytes)
                }
                guard let name = nameBytes.validatedUTF8String() else {
                    throw fail(index, "header \(headerIndex) name is not valid UTF-8", record.readableBytes)
                }
                guard let valueLength = record.readInteger(as: UInt32.self),
                    let value = record.readSlice(length: Int(valueLength))
                else {
                    throw fail(index, "truncated at field header \(headerIndex) value", record.readableBytes)
                }
                headers.append(RecordHeader(name: name, value: value))
            }
            guard let valueLength = record.readInteger(as: UInt32.self), let value = record.readSlice(length: Int(valueLength)) else {
                throw fail(index, "truncated at field value", record.readableBytes)
            }
            guard record.readableBytes == 0 else {
                throw fail(index, "\(record.readableBytes) unexpected trailing bytes", record.readableBytes)
            }
            body(index, Record(timestamp: timestamp, key: key, headers: headers, value: value))
        }
        guard buffer.readableBytes == 0 else {
            throw TelexError(.invalidBatch,
                "\(context()): \(buffer.readableBytes) bytes left after the declared \(header.recordCount) records")
        }
    }

    /// Splits a buffer of concatenated whole batches (a DELIVER body) into the batches.
    public static func split(_ buffer: ByteBuffer, context: @autoclosure () -> String = "DELIVER") throws(TelexError) -> [ByteBuffer] {
        var batches: [ByteBuffer] = []
        var index = buffer.readerIndex
        while index < buffer.writerIndex {
            guard let header = RecordBatchHeader.peek(buffer, at: index) else {
                throw TelexError(.invalidBatch,
                    "\(context()): \(buffer.writerIndex - index) trailing bytes are shorter than a batch header")
            }
            guard header.totalSize >= RecordBatchHeader.size, index + header.totalSize <= buffer.writerIndex else {
                throw TelexError(.invalidBatch,
                    "\(context()): batch at byte \(index - buffer.readerIndex) declares \(header.totalSize) bytes, \(buffer.writerIndex - index) present")
            }
            batches.append(buffer.getSlice(at: index, length: header.totalSize)!)
            index += header.totalSize
        }
        return batches
    }

    /// `0x` and eight hex digits.
    public static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
    }
}

/// Accumulates records and encodes them into one batch, compressing the records section once.
public struct RecordBatchBuilder {
    private var records = ByteBuffer()
    public private(set) var count = 0
    private var firstTimestamp: Int64 = 0
    private var lastTimestamp: Int64 = 0

    public init(reservingCapacity capacity: Int = 0) {
        records.reserveCapacity(capacity)
    }

    /// Bytes of record data so far, before compression.
    public var uncompressedBytes: Int { records.readableBytes }

    /// Appends one record. Timestamps are milliseconds since the epoch and must lie within ±24 days of the first.
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
        count += 1
    }

    /// Appends a record value.
    public mutating func append(_ record: Record) {
        append(timestamp: record.timestamp, key: record.key, headers: record.headers, value: record.value)
    }

    /// Encodes the batch. Base offset and append time are 0: the broker fills them in.
    public func build(
        codec: Codec, compressor: ZlibCompressor? = nil, producerID: Int64 = 0, producerSequence: Int32 = -1
    ) -> ByteBuffer {
        precondition(count > 0, "a batch needs at least one record")
        var batch = ByteBuffer()
        batch.reserveCapacity(RecordBatchHeader.size + (codec == .none ? records.readableBytes : records.readableBytes / 2))
        batch.writeRepeatingByte(0, count: RecordBatchHeader.size)
        switch codec {
        case .none: batch.writeImmutableBuffer(records)
        case .zlib: (compressor ?? ZlibCompressor()).compress(records, into: &batch)
        }
        let header = RecordBatchHeader(
            baseOffset: 0, batchLength: UInt32(batch.readableBytes - RecordBatchHeader.lengthPrefixSize), appendTime: 0,
            crc: 0, magic: RecordBatchHeader.currentMagic, codecRaw: codec.rawValue, flags: 0,
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
