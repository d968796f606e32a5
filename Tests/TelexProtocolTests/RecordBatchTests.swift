import NIOCore
import TelexProtocol
import Testing

@Suite("Record batches", .timeLimit(.minutes(1)))
struct RecordBatchTests {
    @Test(arguments: Codec.allCases)
    func buildThenDecodeGivesTheRecords(_ codec: Codec) throws {
        var builder = RecordBatchBuilder()
        Newsroom.records.forEach { builder.append($0) }
        let batch = builder.build(codec: codec, producerID: Newsroom.producerID, producerSequence: 3)
        let header = try RecordBatch.validate(batch)
        #expect(header.codec == codec)
        #expect(header.recordCount == 4)
        #expect(header.totalSize == batch.readableBytes)
        #expect(header.firstTimestamp == Newsroom.records[0].timestamp)
        #expect(header.lastTimestamp == Newsroom.records.map(\.timestamp).max())
        #expect(Int(header.uncompressedLength) == builder.uncompressedBytes)
        let (decodedHeader, records) = try RecordBatch.decodeRecords(batch)
        #expect(decodedHeader == header)
        #expect(records == Newsroom.records)
        #expect(records[3].header("telex-priority") == "routine")
    }

    @Test func brokerFieldsAreOutsideTheCRC() throws {
        let batch = Newsroom.stored(Newsroom.zlibBatch, baseOffset: 9_000_000_000)
        let header = try RecordBatch.validate(batch)
        #expect(header.baseOffset == 9_000_000_000)
        #expect(header.appendTime == Newsroom.appendTime)
        #expect(header.crc == RecordBatchHeader.peek(Newsroom.zlibBatch, at: 0)!.crc)
        #expect(header.nextOffset == 9_000_000_002)
        #expect(header.lastOffset == 9_000_000_001)
    }

    @Test func crcIsZlibsCRC32() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.checksum(ByteBuffer(string: "123456789")) == 0xCBF4_3926)
        #expect(CRC32.checksum(ByteBuffer()) == 0)
    }

    @Test func aFlippedBitInTheRecordsIsACorruptBatch() throws {
        let batch = BadVectors.flippedBitBatch
        let checks: [() throws -> Void] = [
            { _ = try RecordBatch.validate(batch) }, { _ = try RecordBatch.decodeRecords(batch) },
        ]
        for check in checks {
            do {
                try check()
                Issue.record("no error")
            } catch let error as TelexError {
                #expect(error.code == .corruptBatch)
                #expect(error.message.contains("CRC mismatch"))
                #expect(error.message.contains("0xdf837873"), "names the CRC the header claims: \(error.message)")
            }
        }
    }

    @Test(arguments: [24, 25, 30, 50, 56, 63, 64, 500])
    func anyFlippedBitFromMagicOnIsCaught(_ index: Int) throws {
        var batch = Newsroom.plainBatch
        batch.setInteger(batch.getInteger(at: index, as: UInt8.self)! ^ 0x10, at: index)
        #expect(throws: TelexError.self) { try RecordBatch.validate(batch) }
    }

    @Test func recordCountAboveTheRecordsIsInvalid() {
        expectTelexError(.invalidBatch, mentioning: ["record 2 of 3", "truncated"]) {
            _ = try RecordBatch.validate(BadVectors.plainBatch(declaringRecordCount: 3))
        }
    }

    @Test func recordCountBelowTheRecordsLeavesTrailingBytes() {
        expectTelexError(.invalidBatch, mentioning: ["bytes left after the declared 1 records"]) {
            _ = try RecordBatch.validate(BadVectors.plainBatch(declaringRecordCount: 1))
        }
    }

    @Test(arguments: Codec.allCases)
    func trailingBytesAfterTheRecordsAreInvalid(_ codec: Codec) throws {
        var builder = RecordBatchBuilder()
        builder.append(Newsroom.records[0])
        var plainBuilder = RecordBatchBuilder()
        plainBuilder.append(Newsroom.records[0])
        let plain = plainBuilder.build(codec: .none)
        var records = try RecordBatch.recordsSection(of: plain, header: RecordBatchHeader.peek(plain, at: 0)!)
        records.writeBytes([0xDE, 0xAD, 0xBE, 0xEF, 0x00])

        var batch = ByteBuffer()
        batch.writeRepeatingByte(0, count: RecordBatchHeader.size)
        switch codec {
        case .none: batch.writeImmutableBuffer(records)
        case .zlib: BatchCompressor().compress(records, into: &batch)
        }
        let template = RecordBatchHeader.peek(builder.build(codec: codec), at: 0)!
        var header = template
        header.flags = 0
        header.batchLength = UInt32(batch.readableBytes - RecordBatchHeader.lengthPrefixSize)
        header.uncompressedLength = UInt32(records.readableBytes)
        var headerBytes = ByteBuffer()
        header.write(to: &headerBytes)
        batch.setBuffer(headerBytes, at: 0)
        batch = BadVectors.patched(batch) { _ in }

        expectTelexError(.invalidBatch, mentioning: ["5 bytes left after the declared 1 records"]) {
            _ = try RecordBatch.decodeRecords(batch)
        }
    }

    @Test func recordLengthRunningPastTheSectionIsInvalid() {
        let batch = BadVectors.patched(Newsroom.plainBatch) { $0.setInteger(UInt32(5000), at: KeyTables.recordsStart(of: $0)) }
        expectTelexError(.invalidBatch, mentioning: ["record 0 of 2 body", "needs 5000 bytes"]) {
            _ = try RecordBatch.validate(batch)
        }
    }

    @Test func fieldRunningPastItsRecordIsInvalid() {
        // The first record's key length (after the 4-byte length and 4-byte delta) claims 60000 bytes.
        let batch = BadVectors.patched(Newsroom.plainBatch) {
            $0.setInteger(UInt16(60_000), at: KeyTables.recordsStart(of: $0) + 8)
        }
        expectTelexError(.invalidBatch, mentioning: ["record 0 of 2", "key"]) { _ = try RecordBatch.validate(batch) }
    }

    @Test func zeroRecordsIsInvalid() {
        expectTelexError(.invalidBatch, mentioning: ["recordCount 0 outside 1...1000000"]) {
            _ = try RecordBatch.validate(BadVectors.plainBatch(declaringRecordCount: 0))
        }
    }

    @Test func tooManyRecordsForTheLimitIsInvalid() {
        expectTelexError(.invalidBatch, mentioning: ["recordCount 2 outside 1...1"]) {
            _ = try RecordBatch.validate(Newsroom.plainBatch, limits: RecordBatchLimits(maxRecordCount: 1))
        }
    }

    @Test func recordCountThatCannotFitIsInvalid() {
        expectTelexError(.invalidBatch, mentioning: ["recordCount 100 cannot fit in 883 record bytes"]) {
            _ = try RecordBatch.validate(BadVectors.plainBatch(declaringRecordCount: 100))
        }
    }

    @Test func unknownMagicIsInvalid() {
        let batch = BadVectors.patched(Newsroom.plainBatch) { $0.setInteger(UInt8(2), at: 24) }
        expectTelexError(.invalidBatch, mentioning: ["unknown batch magic 2"]) { _ = try RecordBatch.validate(batch) }
    }

    @Test func unknownCodecIsInvalid() {
        let batch = BadVectors.patched(Newsroom.plainBatch) { $0.setInteger(UInt8(7), at: 25) }
        expectTelexError(.invalidBatch, mentioning: ["unknown codec 7"]) { _ = try RecordBatch.decodeRecords(batch) }
    }

    @Test func uncompressedLengthMustMatchAPlainSection() {
        let batch = BadVectors.patched(Newsroom.plainBatch) { $0.setInteger(UInt32(800), at: 60) }
        expectTelexError(.invalidBatch, mentioning: ["uncompressedLength 800 != records section 883"]) {
            _ = try RecordBatch.validate(batch)
        }
    }

    @Test func firstTimestampAfterLastIsInvalid() {
        let batch = BadVectors.patched(Newsroom.plainBatch) { $0.setInteger(Int64.max, at: 28) }
        expectTelexError(.invalidBatch, mentioning: ["firstTimestamp", "after lastTimestamp"]) {
            _ = try RecordBatch.validate(batch)
        }
    }

    @Test func batchLengthMustMatchTheBytes() {
        var longer = Newsroom.plainBatch
        longer.writeInteger(UInt8(0))
        expectTelexError(.invalidBatch, mentioning: ["batchLength 988 says 1000 bytes but 1001 were sent"]) {
            _ = try RecordBatch.validate(longer)
        }
        expectTelexError(.invalidBatch, mentioning: ["1000 bytes but 1001 are present"]) {
            _ = try RecordBatch.decodeRecords(longer)
        }
    }

    @Test func shorterThanAHeaderIsInvalid() {
        expectTelexError(.invalidBatch, mentioning: ["10 bytes is shorter than the 64-byte batch header"]) {
            _ = try RecordBatch.validate(ByteBuffer(repeating: 1, count: 10))
        }
    }

    @Test func understatedZlibBatchStopsInflatingAtTheDeclaredSize() throws {
        let batch = BadVectors.understatedBomb
        _ = try RecordBatch.validate(batch)  // the broker does not inflate
        expectTelexError(.batchTooLarge, mentioning: ["inflates past its declared 1024 bytes"]) {
            _ = try RecordBatch.decodeRecords(batch)
        }
    }

    @Test func declaredSizeAboveTheLimitIsRejectedBeforeInflating() throws {
        // Records that are not a zlib stream at all: inflating them would fail as corrupt, not as too large.
        var batch = ByteBuffer()
        batch.writeRepeatingByte(0, count: RecordBatchHeader.size)
        batch.writeBytes([0xFF, 0xFE, 0xFD, 0xFC])
        var header = RecordBatchHeader.peek(Newsroom.zlibBatch, at: 0)!
        header.batchLength = UInt32(batch.readableBytes - RecordBatchHeader.lengthPrefixSize)
        header.recordCount = 1
        header.uncompressedLength = UInt32((32 << 20) + 1)
        var headerBytes = ByteBuffer()
        header.write(to: &headerBytes)
        batch.setBuffer(headerBytes, at: 0)
        batch = BadVectors.patched(batch) { _ in }
        let checks: [() throws -> Void] = [
            { _ = try RecordBatch.validate(batch) }, { _ = try RecordBatch.decodeRecords(batch) },
        ]
        for check in checks {
            expectTelexError(.batchTooLarge, mentioning: ["declares 33554433 uncompressed bytes", "limit of 33554432"])
            {
                try check()
            }
        }
    }

    @Test func honestBombIsRejectedFromItsHeader() {
        let limits = RecordBatchLimits(maxUncompressedBytes: 1 << 20)
        let batch = BadVectors.zeroFilledZlibBatch(size: 2 << 20)
        expectTelexError(.batchTooLarge, mentioning: ["above the limit of 1048576"]) {
            _ = try RecordBatch.validate(batch, limits: limits)
        }
        expectTelexError(.batchTooLarge) { _ = try RecordBatch.decodeRecords(batch, limits: limits) }
    }

    @Test func overstatedZlibLengthIsInvalid() {
        let batch = BadVectors.patched(Newsroom.zlibBatch) { $0.setInteger(UInt32(5000), at: 60) }
        expectTelexError(.invalidBatch, mentioning: ["inflated to 932 bytes but the header declares 5000"]) {
            _ = try RecordBatch.decodeRecords(batch)
        }
    }

    @Test func corruptZlibDataIsInvalid() {
        let batch = BadVectors.patched(Newsroom.zlibBatch) {
            $0.setInteger(UInt16(0x7801 ^ 0x0F00), at: KeyTables.recordsStart(of: $0))
        }
        expectTelexError(.invalidBatch, mentioning: ["zlib data is corrupt"]) {
            _ = try RecordBatch.decodeRecords(batch)
        }
    }

    @Test func bytesAfterTheZlibStreamAreInvalid() {
        let batch = BadVectors.patched(Newsroom.zlibBatch) {
            $0.writeBytes([1, 2, 3])
            $0.setInteger($0.getInteger(at: 8, as: UInt32.self)! + 3, at: 8)
        }
        expectTelexError(.invalidBatch, mentioning: ["3 bytes after the zlib stream"]) {
            _ = try RecordBatch.decodeRecords(batch)
        }
    }

    @Test func splitFindsEveryBatch() throws {
        let batches = try RecordBatch.split(Newsroom.deliveredBatches)
        #expect(batches.map { RecordBatchHeader.peek($0, at: $0.readerIndex)!.baseOffset } == [1186, 1188])
        #expect(try RecordBatch.split(ByteBuffer()).isEmpty)
    }

    @Test func splitRejectsAPartialBatch() {
        var buffer = Newsroom.deliveredBatches
        buffer.moveWriterIndex(to: buffer.writerIndex - 1)
        expectTelexError(.invalidBatch, mentioning: ["batch at byte 1000 declares 576 bytes, 575 present"]) {
            _ = try RecordBatch.split(buffer)
        }
        var stub = Newsroom.deliveredBatches
        stub.writeBytes([0, 0, 0])
        expectTelexError(.invalidBatch, mentioning: ["3 trailing bytes are shorter than a batch header"]) {
            _ = try RecordBatch.split(stub)
        }
    }

    @Test func decompressorIsReusable() throws {
        let decompressor = BatchDecompressor()
        for _ in 0..<3 {
            let (_, records) = try RecordBatch.decodeRecords(Newsroom.zlibBatch, decompressor: decompressor)
            #expect(records == Array(Newsroom.records[2...3]))
            expectTelexError(.batchTooLarge) {
                _ = try RecordBatch.decodeRecords(BadVectors.understatedBomb, decompressor: decompressor)
            }
        }
    }
}
