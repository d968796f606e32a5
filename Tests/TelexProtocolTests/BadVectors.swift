import NIOCore
import TelexProtocol

/// Where in the receive pipeline a bad vector must fail.
enum BadVectorStage: String, CaseIterable {
    /// The frame decoder (length, header, end of stream).
    case frame
    /// `ClientMessage.decode` or `BrokerMessage.decode` of a complete frame, by the direction of its type.
    case message
    /// Topic-name validation of a decoded PUBLISH.
    case topic
    /// `RecordBatch.validate`, as the broker checks a PUBLISH batch without inflating it.
    case batchValidate
    /// Only the broker's PUBLISH checks (`requireKeyTable`): the batch is still decodable once stored.
    case publishOnly
    /// `RecordBatch.decodeRecords`, as a consumer decodes (and inflates) a batch that passed validation.
    case batchDecode
}

/// Batches and frames that must be rejected, with the error each must produce.
enum BadVectors {
    struct Vector {
        var name: String
        var description: String
        var bytes: ByteBuffer
        var stage: BadVectorStage
        var code: TelexError.Code
        /// Words the error message must contain, so it names what was wrong.
        var mentions: [String]
    }

    /// Rewrites bytes of a batch and, if asked, recomputes its CRC so only the intended defect remains.
    static func patched(_ batch: ByteBuffer, fixCRC: Bool = true, _ edit: (inout ByteBuffer) -> Void) -> ByteBuffer {
        var copy = ByteBuffer()
        copy.writeImmutableBuffer(batch)
        edit(&copy)
        if fixCRC {
            let crc = CRC32.checksum(
                copy.getSlice(
                    at: RecordBatchHeader.crcStart,
                    length: copy.readableBytes - RecordBatchHeader.crcStart)!)
            copy.setInteger(crc, at: 20)
        }
        return copy
    }

    static func publish(_ batch: ByteBuffer, topic: String = Newsroom.topic) -> ByteBuffer {
        frameBytes(.publish(topic: topic, batch: batch), requestID: 7)
    }

    /// The plain batch with one bit of the last record's value flipped (CRC left as it was).
    static var flippedBitBatch: ByteBuffer {
        patched(Newsroom.plainBatch, fixCRC: false) {
            $0.setInteger($0.getInteger(at: $0.writerIndex - 2, as: UInt8.self)! ^ 0x01, at: $0.writerIndex - 2)
        }
    }

    /// The plain batch (two records) without its key table, declaring `count` records, with a correct CRC: the
    /// broker's walk of the records finds the mismatch.
    static func plainBatch(declaringRecordCount count: UInt32) -> ByteBuffer {
        patched(KeyTables.replacingTable(of: Newsroom.plainBatch, with: nil)) { $0.setInteger(count, at: 56) }
    }

    /// The plain batch with its first record's timestamp (firstTimestamp + timestampDelta) past i64 max.
    static var timestampOverflow: ByteBuffer {
        patched(Newsroom.plainBatch) {
            $0.setInteger(Int64.max - 1, at: 28)
            $0.setInteger(Int64.max, at: 36)
            $0.setInteger(Int32(2), at: KeyTables.recordsStart(of: $0) + 4)
        }
    }

    /// One record whose value is `size` zero bytes, zlib-compressed.
    static func zeroFilledZlibBatch(size: Int) -> ByteBuffer {
        var builder = RecordBatchBuilder()
        builder.append(
            timestamp: Newsroom.publishedAt, key: ByteBuffer(string: Newsroom.articleKey),
            value: ByteBuffer(repeating: 0, count: size))
        return builder.build(
            codec: .zlib, compressor: BatchCompressor(level: 9, implementation: .zlib), producerID: Newsroom.producerID,
            producerSequence: 2)
    }

    /// A zlib batch that inflates to 1 MiB while its header declares 1024 bytes (CRC correct).
    static var understatedBomb: ByteBuffer {
        patched(zeroFilledZlibBatch(size: 1 << 20)) { $0.setInteger(UInt32(1024), at: 60) }
    }

    /// A zlib batch that honestly declares 33 MiB, above the 32 MiB default limit.
    static var declaredBomb: ByteBuffer {
        zeroFilledZlibBatch(size: 33 << 20)
    }

    static var vectors: [Vector] {
        var pingFrame = frameBytes(.ping(nonce: 180_258_102_730_097), requestID: 15)
        pingFrame.moveWriterIndex(to: pingFrame.writerIndex - 3)

        var oversized = ByteBuffer()
        oversized.writeMultipleIntegers(
            UInt32((8 << 20) + 1), UInt8(1), MessageType.publish.rawValue, UInt16(0), UInt32(7))

        var shortLength = ByteBuffer()
        shortLength.writeMultipleIntegers(UInt32(5), UInt8(1), MessageType.ping.rawValue, UInt16(0), UInt8(0))

        var unknownType = ByteBuffer()
        unknownType.writeMultipleIntegers(UInt32(8), UInt8(1), UInt8(0x2A), UInt16(0), UInt32(21))

        var unknownVersion = ByteBuffer()
        unknownVersion.writeMultipleIntegers(
            UInt32(16), UInt8(2), MessageType.ping.rawValue, UInt16(0), UInt32(22),
            UInt64(180_258_102_730_097))

        var trailing = ByteBuffer()
        trailing.writeFrame(type: .ping, requestID: 23) {
            $0.writeMultipleIntegers(UInt64(180_258_102_730_097), UInt8(0))
        }

        var badStartKind = ByteBuffer()
        badStartKind.writeFrame(type: .subscribe, requestID: 24) {
            $0.writeInteger(UInt32(3))
            $0.writeShortString("news.>")
            $0.writeMultipleIntegers(UInt8(6), Int64(0))
            $0.writeShortString("")
            $0.writeMultipleIntegers(UInt32(1), UInt16(0))
        }

        var overrunString = ByteBuffer()
        overrunString.writeFrame(type: .commitAck, requestID: 25) {
            $0.writeInteger(UInt16(200))
            $0.writeString(Newsroom.topic)
        }

        return [
            Vector(
                name: "truncated_frame",
                description:
                    "A PING frame missing its last 3 bytes, then end of stream. (The frame number in the message counts the frames before it on the connection, so it is not checked.)",
                bytes: pingFrame, stage: .frame, code: .malformedFrame,
                mentions: ["connection closed inside frame", "bytes of an incomplete frame"]),
            Vector(
                name: "frame_too_large",
                description:
                    "Only the length prefix and header of a PUBLISH whose length (8 MiB + 1) is above the default 8 MiB maximum: rejected before any body byte arrives.",
                bytes: oversized, stage: .frame, code: .frameTooLarge, mentions: ["8388609", "maximum frame size"]),
            Vector(
                name: "frame_length_below_header",
                description: "A length prefix of 5, shorter than the 8-byte frame header.",
                bytes: shortLength, stage: .frame, code: .malformedFrame, mentions: ["length 5", "frame header"]),
            Vector(
                name: "unknown_type",
                description: "A frame with message type 0x2a.",
                bytes: unknownType, stage: .frame, code: .unknownMessageType, mentions: ["0x2a"]),
            Vector(
                name: "unknown_version",
                description: "A PING frame whose header says protocol version 2.",
                bytes: unknownVersion, stage: .frame, code: .unsupportedVersion, mentions: ["version 2"]),
            Vector(
                name: "trailing_bytes_in_body",
                description: "A PING whose body has one byte after the 8-byte nonce.",
                bytes: trailing, stage: .message, code: .malformedFrame,
                mentions: ["PING", "1 unexpected trailing bytes"]),
            Vector(
                name: "bad_start_kind",
                description: "A SUBSCRIBE with start kind 6 (only 0-5 exist).",
                bytes: badStartKind, stage: .message, code: .malformedFrame, mentions: ["startKind 6"]),
            Vector(
                name: "string_overruns_frame",
                description: "A COMMIT_ACK whose topic length (200) runs past the end of the frame.",
                bytes: overrunString, stage: .message, code: .malformedFrame, mentions: ["COMMIT_ACK", "topic"]),
            Vector(
                name: "invalid_topic",
                description: "A well-formed PUBLISH to 'news..world' (empty token).",
                bytes: publish(Newsroom.plainBatch, topic: "news..world"), stage: .topic, code: .invalidTopic,
                mentions: ["news..world", "empty token"]),
            Vector(
                name: "bad_crc",
                description:
                    "The 'publish' vector's batch with the lowest bit of its second-to-last byte flipped (inside the last record's value); the CRC no longer matches.",
                bytes: publish(flippedBitBatch), stage: .batchValidate, code: .corruptBatch, mentions: ["CRC mismatch"]),
            Vector(
                name: "record_count_too_high",
                description:
                    "The 'publish' batch (2 records) without its key table (flags 0, as codec none allows), with recordCount 3 and a recomputed CRC: the third record is missing.",
                bytes: publish(plainBatch(declaringRecordCount: 3)), stage: .batchValidate, code: .invalidBatch,
                mentions: ["record 2 of 3"]),
            Vector(
                name: "record_count_too_low",
                description:
                    "The 'publish' batch (2 records) without its key table (flags 0, as codec none allows), with recordCount 1 and a recomputed CRC: the second record is trailing bytes.",
                bytes: publish(plainBatch(declaringRecordCount: 1)), stage: .batchValidate, code: .invalidBatch,
                mentions: ["bytes left after the declared 1 records"]),
            Vector(
                name: "timestamp_overflow",
                description:
                    "The 'publish' batch with firstTimestamp i64 max - 1, lastTimestamp i64 max and the first record's timestampDelta 2 (CRC recomputed): the record's timestamp does not fit in an i64. Found while writing the fuzz harness (telex-fuzz crashes on it without the fix); it used to trap, crashing the broker, instead of being rejected.",
                bytes: publish(timestampOverflow), stage: .batchValidate, code: .invalidBatch,
                mentions: ["record 0 of 2", "timestamp overflows"]),
            Vector(
                name: "batch_length_mismatch",
                description: "The 'publish' batch with batchLength 4 larger than the bytes sent.",
                bytes: publish(
                    patched(Newsroom.plainBatch) { $0.setInteger($0.getInteger(at: 8, as: UInt32.self)! + 4, at: 8) }),
                stage: .batchValidate, code: .invalidBatch, mentions: ["batchLength"]),
            Vector(
                name: "decompression_bomb_declared",
                description:
                    "A zlib batch of one record whose value is 33 MiB of zeros (about 33 KB compressed, level 9). Its uncompressedLength honestly declares more than the 32 MiB limit, so it is rejected from the header alone, before inflating.",
                bytes: publish(declaredBomb), stage: .batchValidate, code: .batchTooLarge,
                mentions: ["uncompressed bytes", "limit"]),
            Vector(
                name: "decompression_bomb_understated",
                description:
                    "A zlib batch that inflates to 1 MiB but whose header declares uncompressedLength 1024 (CRC recomputed). The broker's validation does not inflate, so it passes; the decoder stops after 1025 output bytes.",
                bytes: publish(understatedBomb), stage: .batchDecode, code: .batchTooLarge,
                mentions: ["inflates past its declared 1024 bytes"]),
        ] + keyTableVectors
    }
}
