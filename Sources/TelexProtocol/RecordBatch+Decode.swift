import NIOCore

extension RecordBatch {
    /// Decodes every record of one whole batch (inflating it if compressed). Offsets are `baseOffset + index`.
    /// A batch with a key table must agree with it: each record's key and first `ce-type` header.
    public static func decodeRecords(
        _ batch: ByteBuffer, limits: RecordBatchLimits = .init(), decompressor: BatchDecompressor? = nil,
        context: @autoclosure () -> String = "batch"
    ) throws(TelexError) -> (header: RecordBatchHeader, records: [Record]) {
        var scratch = ByteBuffer()
        return try decodeRecords(batch, limits: limits, decompressor: decompressor, context: context(), scratch: &scratch)
    }

    /// Decodes like `decodeRecords(_:limits:decompressor:context:)`, inflating into `scratch`. The records are
    /// slices of it; once they are gone, the next call reuses its memory (copy-on-write keeps live records safe).
    public static func decodeRecords(
        _ batch: ByteBuffer, limits: RecordBatchLimits = .init(), decompressor: BatchDecompressor?,
        context: @autoclosure () -> String, scratch: inout ByteBuffer
    ) throws(TelexError) -> (header: RecordBatchHeader, records: [Record]) {
        let header = try validateForDecoding(batch, limits: limits, context: context())
        let parts = try sections(of: batch, header: header, context: context())
        let table = try parts.table.map { table throws(TelexError) in
            try readKeyTable(table, header: header, context: context())
        }
        let plain: ByteBuffer
        switch header.codec! {
        case .none:
            plain = parts.records
        case .zlib:
            scratch.clear()
            try (decompressor ?? BatchDecompressor()).decompress(
                parts.records, expectedLength: Int(header.uncompressedLength), into: &scratch, context: context())
            plain = scratch
        }
        var records: [Record] = []
        records.reserveCapacity(Int(header.recordCount))
        try walkRecords(plain, header: header, context: context()) { index, record throws(TelexError) in
            if let table { try checkRecord(record, index: index, against: table[index], context: context()) }
            records.append(record)
        }
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
        _ section: ByteBuffer, header: RecordBatchHeader, context: @autoclosure () -> String,
        _ body: (Int, Record) throws(TelexError) -> Void
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
            try body(index, Record(timestamp: timestamp, key: key, headers: headers, value: value))
        }
        guard buffer.readableBytes == 0 else {
            throw TelexError(.invalidBatch,
                "\(context()): \(buffer.readableBytes) bytes left after the declared \(header.recordCount) records")
        }
    }
}
