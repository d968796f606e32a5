import NIOCore
import TelexProtocol

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One fuzz input: the first byte picks what the rest is fed to. Errors thrown by the code under test are the
/// expected outcome for most inputs; a crash, a trap, a hang or an allocation libFuzzer flags is a finding.
enum FuzzTarget {
    /// Small limits, so that no input can make the code under test allocate more than a few hundred KiB.
    static let frameLimits = FrameLimits(maxFrameSize: 4096)
    static let batchLimits = RecordBatchLimits(maxUncompressedBytes: 256 << 10, maxRecordCount: 4096)
    /// Largest inflated size the inflate target asks for.
    static let maxInflatedBytes = 256 << 10
    // Reused across inputs: a fresh codec per input would cost more than the decoding under test.
    // libFuzzer calls the harness from one thread only. libdeflate is what Telex uses; zlib, the reference, is
    // the inflate target's second opinion.
    nonisolated(unsafe) static let compressor = BatchCompressor()
    nonisolated(unsafe) static let decompressor = BatchDecompressor()
    nonisolated(unsafe) static let zlibCompressor = BatchCompressor(implementation: .zlib)
    nonisolated(unsafe) static let zlibDecompressor = BatchDecompressor(implementation: .zlib)

    /// The first input byte, modulo 6 (so every byte picks one). Scripts/fuzz-corpus.py writes seeds with these.
    enum Mode: UInt8 {
        /// A byte stream through the frame decoder, split in two writes; each frame's body decoded both ways.
        case frameStream = 0
        /// One body, decoded as the message type in the next byte (skips the frame decoder).
        case body = 1
        /// One record batch, validated and decoded as it is.
        case batch = 2
        /// One record batch whose CRC the harness fixes first, so mutations reach the checks behind the CRC.
        case batchFixedCRC = 3
        /// Bounded inflate: a u32 declared length, then a zlib stream; libdeflate and zlib must agree.
        case inflate = 4
        /// A DELIVER payload: concatenated batches, split and decoded.
        case batches = 5
    }

    static func run(_ input: UnsafeRawBufferPointer) {
        guard let first = input.first else { return }
        let rest = ByteBuffer(bytes: input.dropFirst())
        var decoded: [ClientMessage] = []
        switch Mode(rawValue: first % 6)! {
        case .frameStream: frameStream(rest, decoded: &decoded)
        case .body: body(rest, decoded: &decoded)
        case .batch: batch(rest)
        case .batchFixedCRC: batch(withFixedCRC(rest))
        case .inflate: inflate(rest)
        case .batches: batches(rest)
        }
        decoded.forEach(PlantedBug.check)
    }

    // MARK: Frames and messages

    static func frameStream(_ input: ByteBuffer, decoded: inout [ClientMessage]) {
        guard let split = input.getInteger(at: input.readerIndex, as: UInt8.self) else { return }
        var stream = input.getSlice(at: input.readerIndex + 1, length: input.readableBytes - 1)!
        let firstPart = min(Int(split), stream.readableBytes)
        var buffer = stream.readSlice(length: firstPart)!
        var decoder = FrameDecoder(limits: frameLimits)
        do {
            while let frame = try decoder.decode(buffer: &buffer) { message(frame, decoded: &decoded) }
            buffer.writeBuffer(&stream)
            while let frame = try decoder.decodeLast(buffer: &buffer, seenEOF: true) { message(frame, decoded: &decoded) }
        } catch {
            return
        }
    }

    static func body(_ input: ByteBuffer, decoded: inout [ClientMessage]) {
        var input = input
        guard let rawType = input.readInteger(as: UInt8.self), let type = MessageType(rawValue: rawType) else { return }
        message(Frame(header: FrameHeader(type: type, requestID: 7), body: input), decoded: &decoded)
    }

    /// Decodes `frame` as either peer would; what decodes must encode to a frame that decodes to the same value.
    /// Appends what decodes as a client message to `decoded`.
    static func message(_ frame: Frame, decoded messages: inout [ClientMessage]) {
        if let decoded = try? ClientMessage.decode(frame) {
            var encoded = ByteBuffer()
            encoded.writeMessage(decoded, requestID: frame.header.requestID)
            require(try ClientMessage.decode(reframe(encoded)) == decoded, "ClientMessage round trip", frame.body)
            messages.append(decoded)
            if case .publish(let topic, let batch) = decoded {
                _ = try? TopicName.validate(topic)
                Self.batch(batch)
            }
            if case .subscribe(_, let pattern, _, _, _, let resume, _) = decoded {
                _ = try? TopicName.validatePattern(pattern)
                for entry in resume where (try? TopicName.validate(entry.topic)) != nil {
                    _ = TopicName.matches(pattern: pattern, topic: entry.topic)
                }
            }
        }
        if let decoded = try? BrokerMessage.decode(frame) {
            var encoded = ByteBuffer()
            encoded.writeMessage(decoded, requestID: frame.header.requestID)
            require(try BrokerMessage.decode(reframe(encoded)) == decoded, "BrokerMessage round trip", frame.body)
            if case .deliver(_, _, let batches) = decoded { Self.batches(batches) }
        }
    }

    /// The one frame in `encoded`, through a decoder with the default limits (a re-encoded frame may be larger).
    static func reframe(_ encoded: ByteBuffer) throws -> Frame {
        var encoded = encoded
        var decoder = FrameDecoder()
        guard let frame = try decoder.decodeLast(buffer: &encoded, seenEOF: true), encoded.readableBytes == 0 else {
            throw TelexError(.malformedFrame, "re-encoded frame did not decode as exactly one frame")
        }
        return frame
    }

    // MARK: Record batches

    static func batch(_ batch: ByteBuffer) {
        let validated = try? RecordBatch.validate(batch, limits: batchLimits, requireKeyTable: true)
        // What the broker indexes on append: a batch it accepts always gives its keys.
        let keys = validated.flatMap { try? RecordBatch.keys(of: batch, header: $0, limits: batchLimits) }
        require(validated == nil || keys != nil, "validated batch gives no keys", batch)
        // The append path walks keys with forEachKey (no allocation per record): it must give the same keys and
        // tombstones as keys(of:), on every batch either accepts.
        if let header = validated ?? RecordBatchHeader.peek(batch, at: batch.readerIndex) {
            var walked: [(key: [UInt8], tombstone: Bool)] = []
            let scanned: Bool
            do {
                try RecordBatch.forEachKey(of: batch, header: header, limits: batchLimits) { _, key, tombstone in
                    walked.append((Array(key), tombstone))
                }
                scanned = true
            } catch {
                scanned = false
            }
            require(validated == nil || scanned, "validated batch fails forEachKey", batch)
            if scanned, let listed = try? RecordBatch.keys(of: batch, header: header, limits: batchLimits) {
                require(walked.map(\.key) == listed.map { Array($0.key.readableBytesView) }
                        && walked.map(\.tombstone) == listed.map(\.isTombstone),
                        "forEachKey disagrees with keys(of:)", batch)
            }
        }
        guard let (header, records) = try? RecordBatch.decodeRecords(batch, limits: batchLimits, decompressor: decompressor)
        else {
            // A batch the broker accepts may still fail to decode only when it is compressed (not inflated).
            require(validated == nil || validated?.codec == .zlib, "validated batch failed to decode", batch)
            return
        }
        // Decoding is lenient where PUBLISH is strict (stored batches from before key tables).
        require(validated != nil || (try? RecordBatch.validate(batch, limits: batchLimits)) != nil,
                "decoded batch failed validation", batch)
        require(records.count == Int(header.recordCount), "record count", batch)
        if let keys {
            let expected = records.map { record in
                BatchKey(key: record.key, type: record.headers.first { $0.name == RecordBatch.typeHeaderName }
                    .map { String(buffer: $0.value) } ?? "")
            }
            require(keys == expected, "keys(of:) disagrees with the decoded records", batch)
        }
        roundTrip(records, header: header, source: batch)
    }

    /// Rebuilds the records into a fresh batch, which must decode to the same records.
    static func roundTrip(_ records: [Record], header: RecordBatchHeader, source: ByteBuffer) {
        // The builder measures timestamps from the first record, and its key table needs each first ce-type to be
        // at most 65535 bytes of UTF-8; skip records it cannot express.
        guard let first = records.first?.timestamp, records.allSatisfy({ record in
            let (delta, overflow) = record.timestamp.subtractingReportingOverflow(first)
            let type = record.headers.first { $0.name == RecordBatch.typeHeaderName }?.value ?? ByteBuffer()
            return !overflow && Int32(exactly: delta) != nil && type.readableBytes <= Int(UInt16.max)
                && String(validating: type.readableBytesView, as: UTF8.self) != nil
        })
        else { return }
        var builder = RecordBatchBuilder()
        for record in records { builder.append(record) }
        for codec in Codec.allCases {
            let rebuilt = builder.build(
                codec: codec, compressor: compressor, producerID: header.producerID,
                producerSequence: header.producerSequence)
            guard let decoded = try? RecordBatch.decodeRecords(rebuilt, decompressor: decompressor) else {
                fail("rebuilt \(codec) batch does not decode", source)
            }
            require(decoded.records == records, "rebuilt \(codec) batch decodes to other records", source)
        }
    }

    static func batches(_ payload: ByteBuffer) {
        guard let batches = try? RecordBatch.split(payload) else { return }
        for batch in batches { Self.batch(batch) }
    }

    /// `input` with its CRC field (bytes 20..<24) set to the CRC of bytes 24 onwards.
    static func withFixedCRC(_ input: ByteBuffer) -> ByteBuffer {
        var batch = input
        guard batch.readableBytes >= RecordBatchHeader.size else { return batch }
        let covered = batch.getSlice(at: batch.readerIndex + RecordBatchHeader.crcStart,
                                     length: batch.readableBytes - RecordBatchHeader.crcStart)!
        batch.setInteger(CRC32.checksum(covered), at: batch.readerIndex + 20)
        return batch
    }

    // MARK: Inflate

    /// Inflates through libdeflate and zlib: both must accept or both reject (with the same error code), give the
    /// same bytes, and read each other's compression of them; only a stream using symbols RFC 1951 reserves may
    /// inflate through libdeflate and fail under zlib (PROTOCOL.md §6.5). This is what shows that swapping the inflater
    /// changed no verdict.
    static func inflate(_ input: ByteBuffer) {
        var input = input
        guard let declared = input.readInteger(as: UInt32.self) else { return }
        let expected = Int(declared) % (maxInflatedBytes + 1)
        let output = inflated(input, expected: expected, by: decompressor)
        let reference = inflated(input, expected: expected, by: zlibDecompressor)
        switch (output, reference) {
        case (.success(let output), .success(let reference)):
            require(output == reference, "libdeflate and zlib inflate to different bytes", input)
        case (.failure(let error), .failure(let referenceError)):
            require(error.code == referenceError.code,
                    "libdeflate fails with \(error.code), zlib with \(referenceError.code)", input)
            return
        case (.success, .failure(let error)):
            // The one tolerated difference (PROTOCOL.md §6.5): symbols RFC 1951 reserves, which libdeflate decodes.
            let reserved = ["invalid literal/length code", "invalid distance code", "too many length or distance symbols"]
            require(reserved.contains { error.message.contains($0) },
                    "libdeflate accepts what zlib rejects (\(error.message))", input)
            return
        case (.failure(let error), .success):
            fail("zlib accepts what libdeflate rejects (\(error.message))", input)
        }
        guard case .success(let output) = output else { return }
        for writer in [compressor, zlibCompressor] {
            var compressed = ByteBuffer()
            writer.compress(output, into: &compressed)
            for reader in [decompressor, zlibDecompressor] {
                guard case .success(let again) = inflated(compressed, expected: expected, by: reader) else {
                    fail("\(reader.implementation) cannot inflate what \(writer.implementation) deflated", input)
                }
                require(again == output, "\(writer.implementation) deflate, \(reader.implementation) inflate changed the bytes", input)
            }
        }
    }

    /// Inflates `input` to exactly `expected` bytes; a failure must leave the output empty.
    static func inflated(
        _ input: ByteBuffer, expected: Int, by decompressor: BatchDecompressor
    ) -> Result<ByteBuffer, TelexError> {
        var output = ByteBuffer()
        do {
            try decompressor.decompress(input, expectedLength: expected, into: &output, context: "fuzz")
        } catch {
            require(output.readableBytes == 0,
                    "failed \(decompressor.implementation) inflate left \(output.readableBytes) bytes", input)
            return .failure(error)
        }
        require(output.readableBytes == expected,
                "\(decompressor.implementation) inflated \(output.readableBytes) of \(expected) bytes", input)
        return .success(output)
    }

    // MARK: Failing

    /// Stops the process, so libFuzzer saves the input: a property the code under test must keep did not hold.
    static func require(_ condition: @autoclosure () throws -> Bool, _ what: String, _ input: ByteBuffer) {
        guard (try? condition()) == true else { fail(what, input) }
    }

    static func fail(_ what: String, _ input: ByteBuffer) -> Never {
        fatalError("telex-fuzz: \(what) (input \(input.readableBytes) bytes)")
    }
}
