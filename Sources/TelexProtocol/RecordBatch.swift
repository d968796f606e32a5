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
    /// Bit 0 is `keyTableFlag`; the others must be 0 on PUBLISH.
    public var flags: UInt16
    public var firstTimestamp: Int64
    public var lastTimestamp: Int64
    public var producerID: Int64
    public var producerSequence: Int32
    public var recordCount: UInt32
    public var uncompressedLength: UInt32

    public var codec: Codec? { Codec(rawValue: codecRaw) }
    public var totalSize: Int { Self.lengthPrefixSize + Int(batchLength) }
    /// Bytes after the 64-byte header: the key table (with its length) when `hasKeyTable`, then the records
    /// section as stored.
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
    /// Checks one whole batch as the broker receives it: exact length, magic, codec, counts, limits, CRC and the
    /// key table's shape. The records of an uncompressed batch are walked too (and checked against its key
    /// table); a compressed one is not inflated.
    ///
    /// `requireKeyTable` is true only where the broker takes a PUBLISH: then flag bits other than
    /// `keyTableFlag` must be 0 and a zlib batch must carry a key table. Batches stored before key tables
    /// existed (and read back by recovery, verify or a consumer) were accepted without either rule.
    public static func validate(
        _ batch: ByteBuffer, limits: RecordBatchLimits = .init(), requireKeyTable: Bool = false,
        context: @autoclosure () -> String = "batch"
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
        if requireKeyTable {
            try checkPublishedFlags(header, context: context())
        }
        let crc = CRC32.checksum(batch.getSlice(at: batch.readerIndex + RecordBatchHeader.crcStart,
                                                length: header.totalSize - RecordBatchHeader.crcStart)!)
        guard crc == header.crc else {
            throw TelexError(.corruptBatch,
                "\(context()): CRC mismatch (header says \(hex(header.crc)), bytes give \(hex(crc)))",
                offset: header.baseOffset)
        }
        let parts = try sections(of: batch, header: header, context: context())
        let table = try parts.table.map { table throws(TelexError) in
            try readKeyTable(table, header: header, context: context())
        }
        if header.codec == Codec.none {
            try walkRecords(parts.records, header: header, context: context()) { index, record throws(TelexError) in
                if let table { try checkRecord(record, index: index, against: table[index], context: context()) }
            }
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
        // With a key table the exact records section size is checked once the table's length is read.
        if codec == .none, !header.hasKeyTable, Int(header.uncompressedLength) != header.storedRecordsLength {
            throw TelexError(.invalidBatch,
                "\(context()): codec none but uncompressedLength \(header.uncompressedLength) != records section \(header.storedRecordsLength)")
        }
        if codec == .none, header.hasKeyTable, Int(header.uncompressedLength) > header.storedRecordsLength - 4 {
            throw TelexError(.invalidBatch,
                "\(context()): codec none but uncompressedLength \(header.uncompressedLength) does not fit the \(header.storedRecordsLength) bytes after the header with a key table")
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
