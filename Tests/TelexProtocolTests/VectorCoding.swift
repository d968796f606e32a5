import CZlib
import NIOCore
import TelexProtocol
import Testing

/// The zlib library the tests run against, as zlib names itself.
let runtimeZlibVersion = String(cString: zlibVersion())

/// Turns messages, frames and batches into the JSON written in the vector files.
enum VectorWriter {
    static func file(_ vector: Newsroom.Vector) throws -> JSONValue {
        let bytes = frameBytes(vector.message, requestID: vector.requestID)
        return .object([
            ("name", .string(vector.name)),
            ("description", .string(vector.description)),
            ("hex", .string(Hex.encode(bytes))),
            (
                "frame",
                .object([
                    ("length", .int(Int64(bytes.readableBytes - 4))),
                    ("version", .int(Int64(FrameHeader.currentVersion))),
                    ("type", .string(vector.message.type.name)),
                    ("typeCode", .int(Int64(vector.message.type.rawValue))),
                    ("flags", .int(0)),
                    ("requestId", .int(Int64(vector.requestID))),
                ])
            ),
            ("message", try message(vector.message)),
        ])
    }

    static func message(_ message: WireMessage) throws -> JSONValue {
        switch message {
        case .client(.hello(let minVersion, let maxVersion, let clientName, let authToken)):
            return .object([
                ("minVersion", .int(Int64(minVersion))), ("maxVersion", .int(Int64(maxVersion))),
                ("clientName", .string(clientName)), ("authToken", .string(Hex.encode(authToken))),
            ])
        case .broker(.helloOK(let version, let serverName, let maxFrameSize)):
            return .object([
                ("version", .int(Int64(version))), ("serverName", .string(serverName)),
                ("maxFrameSize", .int(Int64(maxFrameSize))),
            ])
        case .client(.publish(let topic, let batch)):
            return .object([("topic", .string(topic)), ("batch", try self.batch(batch))])
        case .broker(.publishAck(let topic, let baseOffset, let recordCount, let duplicate)):
            return .object([
                ("topic", .string(topic)), ("baseOffset", .int(baseOffset)), ("recordCount", .int(Int64(recordCount))),
                ("duplicate", .bool(duplicate)),
            ])
        case .client(
            .subscribe(
                let subscriptionID, let pattern, let start, let consumerName, let initialCredit, let resume, let options)):
            let (kind, name, value): (Int64, String, Int64) =
                switch start {
                case .beginning: (0, "beginning", 0)
                case .end: (1, "end", 0)
                case .offset(let offset): (2, "offset", offset)
                case .timestamp(let millis): (3, "timestamp", millis)
                case .latest: (4, "latest", 0)
                case .history: (5, "history", 0)
                }
            let startJSON: JSONValue =
                if case .history(let key) = start {
                    .object([("kind", .int(kind)), ("name", .string(name)), ("key", .string(String(buffer: key)))])
                } else {
                    .object([("kind", .int(kind)), ("name", .string(name)), ("value", .int(value))])
                }
            return .object([
                ("subscriptionId", .int(Int64(subscriptionID))), ("pattern", .string(pattern)),
                ("start", startJSON),
                ("consumerName", .string(consumerName)), ("initialCredit", .int(Int64(initialCredit))),
                (
                    "resume",
                    .array(resume.map { .object([("topic", .string($0.topic)), ("offset", .int($0.offset))]) })
                ),
            ] + (options.isEmpty ? [] : [("options", .int(Int64(options.rawValue)))]))
        case .broker(.subscribed(let subscriptionID, let topics)):
            return .object([
                ("subscriptionId", .int(Int64(subscriptionID))),
                (
                    "topics",
                    .array(
                        topics.map {
                            .object([
                                ("topic", .string($0.topic)), ("startOffset", .int($0.startOffset)),
                                ("endOffset", .int($0.endOffset)),
                            ])
                        })
                ),
            ])
        case .broker(.deliver(let subscriptionID, let topic, let batches)):
            return .object([
                ("subscriptionId", .int(Int64(subscriptionID))), ("topic", .string(topic)),
                ("batches", .array(try RecordBatch.split(batches).map { try batch($0) })),
            ])
        case .broker(.deliverSelected(let subscriptionID, let topic, let selected, let batches)):
            return .object([
                ("subscriptionId", .int(Int64(subscriptionID))), ("topic", .string(topic)),
                (
                    "selected",
                    .array(selected.map { .object([("firstOffset", .int($0.lowerBound)), ("count", .int(Int64($0.count)))]) })
                ),
                ("batches", .array(try RecordBatch.split(batches).map { try batch($0) })),
            ])
        case .client(.credit(let subscriptionID, let batches)):
            return .object([("subscriptionId", .int(Int64(subscriptionID))), ("batches", .int(Int64(batches)))])
        case .client(.commit(let subscriptionID, let topic, let offset)):
            return .object([
                ("subscriptionId", .int(Int64(subscriptionID))), ("topic", .string(topic)), ("offset", .int(offset)),
            ])
        case .broker(.commitAck(let topic, let offset)):
            return .object([("topic", .string(topic)), ("offset", .int(offset))])
        case .client(.unsubscribe(let subscriptionID)), .broker(.unsubscribed(let subscriptionID)),
            .broker(.caughtUp(let subscriptionID)):
            return .object([("subscriptionId", .int(Int64(subscriptionID)))])
        case .client(.ping(let nonce)), .broker(.pong(let nonce)):
            return .object([("nonce", .int(Int64(nonce)))])
        case .broker(.error(let code, let text)):
            return .object([
                ("code", .int(Int64(code.rawValue))), ("codeName", .string(code.name)), ("message", .string(text)),
            ])
        case .client(.admin(let request)):
            return AdminVectorCoding.json(request)
        case .broker(.adminResult(let result)):
            return AdminVectorCoding.json(result)
        }
    }

    /// A batch: its bytes, every header field, the CRC range, zlib details, and the decoded records.
    static func batch(_ batch: ByteBuffer) throws -> JSONValue {
        let (header, records) = try RecordBatch.decodeRecords(batch)
        var members: [(String, JSONValue)] = [
            ("hex", .string(Hex.encode(batch))),
            ("size", .int(Int64(batch.readableBytes))),
            (
                "header",
                .object([
                    ("baseOffset", .int(header.baseOffset)),
                    ("batchLength", .int(Int64(header.batchLength))),
                    ("appendTime", .int(header.appendTime)),
                    ("crc", .string(crcHex(header.crc))),
                    ("magic", .int(Int64(header.magic))),
                    ("codec", .int(Int64(header.codecRaw))),
                    ("codecName", .string(header.codec!.description)),
                    ("flags", .int(Int64(header.flags))),
                    ("firstTimestamp", .int(header.firstTimestamp)),
                    ("lastTimestamp", .int(header.lastTimestamp)),
                    ("producerId", .int(header.producerID)),
                    ("producerSequence", .int(Int64(header.producerSequence))),
                    ("recordCount", .int(Int64(header.recordCount))),
                    ("uncompressedLength", .int(Int64(header.uncompressedLength))),
                ])
            ),
            (
                "crcRange",
                .string(
                    "CRC-32 of batch bytes 24..<\(batch.readableBytes) (magic through the end of the key table and records)")
            ),
        ]
        if header.hasKeyTable {
            let keys = try RecordBatch.keys(of: batch, header: header)
            members.append(
                (
                    "keyTable",
                    .object([
                        ("keyTableLength", .int(Int64(batch.getInteger(at: batch.readerIndex + 64, as: UInt32.self)!))),
                        (
                            "entries",
                            .array(keys.map { .object([("key", .string(String(buffer: $0.key))), ("type", .string($0.type))]) })
                        ),
                    ])
                ))
        }
        if header.codec == .zlib {
            let stored = try RecordBatch.recordsSection(of: batch, header: header)
            var inflated = ByteBuffer()
            try BatchDecompressor(implementation: .zlib).decompress(
                stored, expectedLength: Int(header.uncompressedLength), into: &inflated, context: "vector")
            members.append(
                (
                    "zlib",
                    .object([
                        ("level", .int(1)),
                        ("version", .string(runtimeZlibVersion)),
                        ("inflatedRecordsHex", .string(Hex.encode(inflated))),
                    ])
                ))
        }
        members.append(
            (
                "records",
                .array(
                    records.enumerated().map { index, record in
                        .object([
                            ("offset", .int(header.baseOffset + Int64(index))),
                            ("timestamp", .int(record.timestamp)),
                            ("timestampDelta", .int(record.timestamp - header.firstTimestamp)),
                            ("key", .string(String(buffer: record.key))),
                            (
                                "headers",
                                .array(
                                    record.headers.map {
                                        .object([
                                            ("name", .string($0.name)), ("value", .string(String(buffer: $0.value))),
                                        ])
                                    })
                            ),
                            ("value", .string(String(buffer: record.value))),
                        ])
                    })
            ))
        return .object(members)
    }

    static func crcHex(_ crc: UInt32) -> String {
        let digits = String(crc, radix: 16)
        return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
    }
}

/// Turns vector JSON back into values: messages built with the real encoders, and checks of decoded batches.
enum VectorReader {
    static func messageType(_ frame: JSONValue) throws -> MessageType {
        let name = try frame.string("type")
        guard let type = MessageType.allCases.first(where: { $0.name == name }) else {
            throw VectorFormatError(description: "unknown type name \(name)")
        }
        guard try frame.integer("typeCode", as: UInt8.self) == type.rawValue else {
            throw VectorFormatError(description: "typeCode does not match \(name)")
        }
        return type
    }

    static func frameHeader(_ frame: JSONValue) throws -> FrameHeader {
        FrameHeader(
            version: try frame.integer("version"), type: try messageType(frame), flags: try frame.integer("flags"),
            requestID: try frame.integer("requestId"))
    }

    /// The message the JSON describes; batches are rebuilt from their records with `RecordBatchBuilder`.
    static func message(_ json: JSONValue, type: MessageType) throws -> WireMessage {
        switch type {
        case .hello:
            return .client(.hello(
                minVersion: try json.integer("minVersion"), maxVersion: try json.integer("maxVersion"),
                clientName: try json.string("clientName"), authToken: try json.hexBytes("authToken")))
        case .helloOK:
            return .broker(.helloOK(
                version: try json.integer("version"), serverName: try json.string("serverName"),
                maxFrameSize: try json.integer("maxFrameSize")))
        case .publish:
            return .client(.publish(topic: try json.string("topic"), batch: try batch(try json.field("batch"))))
        case .publishAck:
            return .broker(.publishAck(
                topic: try json.string("topic"), baseOffset: try json.integer("baseOffset"),
                recordCount: try json.integer("recordCount"), duplicate: try json.bool("duplicate")))
        case .subscribe:
            let startJSON = try json.field("start")
            let kind = try startJSON.integer("kind", as: UInt8.self)
            let value: Int64 = kind == 5 ? 0 : try startJSON.integer("value")
            let start: StartPosition =
                switch kind {
                case 0: .beginning
                case 1: .end
                case 2: .offset(value)
                case 3: .timestamp(value)
                case 4: .latest
                case 5: .history(key: ByteBuffer(string: try startJSON.string("key")))
                default: throw VectorFormatError(description: "start kind out of range")
                }
            return .client(.subscribe(
                subscriptionID: try json.integer("subscriptionId"), pattern: try json.string("pattern"), start: start,
                consumerName: try json.string("consumerName"), initialCredit: try json.integer("initialCredit"),
                resume: try json.array("resume").map {
                    TopicOffset(topic: try $0.string("topic"), offset: try $0.integer("offset"))
                },
                options: SubscribeOptions(rawValue: json["options"] == nil ? 0 : try json.integer("options"))))
        case .subscribed:
            return .broker(.subscribed(
                subscriptionID: try json.integer("subscriptionId"),
                topics: try json.array("topics").map {
                    TopicRange(
                        topic: try $0.string("topic"), startOffset: try $0.integer("startOffset"),
                        endOffset: try $0.integer("endOffset"))
                }))
        case .deliver:
            var batches = ByteBuffer()
            for batchJSON in try json.array("batches") {
                batches.writeImmutableBuffer(try batch(batchJSON))
            }
            return .broker(.deliver(
                subscriptionID: try json.integer("subscriptionId"), topic: try json.string("topic"),
                batches: batches))
        case .deliverSelected:
            var batches = ByteBuffer()
            for batchJSON in try json.array("batches") {
                batches.writeImmutableBuffer(try batch(batchJSON))
            }
            let selected = try json.array("selected").map { range -> Range<Int64> in
                let first: Int64 = try range.integer("firstOffset")
                return first..<first + (try range.integer("count") as Int64)
            }
            return .broker(.deliverSelected(
                subscriptionID: try json.integer("subscriptionId"), topic: try json.string("topic"),
                selected: selected, batches: batches))
        case .credit:
            return .client(
                .credit(subscriptionID: try json.integer("subscriptionId"), batches: try json.integer("batches")))
        case .commit:
            return .client(.commit(
                subscriptionID: try json.integer("subscriptionId"), topic: try json.string("topic"),
                offset: try json.integer("offset")))
        case .commitAck:
            return .broker(.commitAck(topic: try json.string("topic"), offset: try json.integer("offset")))
        case .unsubscribe:
            return .client(.unsubscribe(subscriptionID: try json.integer("subscriptionId")))
        case .unsubscribed:
            return .broker(.unsubscribed(subscriptionID: try json.integer("subscriptionId")))
        case .ping:
            return .client(.ping(nonce: try json.integer("nonce")))
        case .pong:
            return .broker(.pong(nonce: try json.integer("nonce")))
        case .error:
            let code = TelexError.Code(rawValue: try json.integer("code"))
            guard code.name == (try json.string("codeName")) else {
                throw VectorFormatError(description: "codeName does not match code \(code.rawValue)")
            }
            return .broker(.error(code: code, message: try json.string("message")))
        case .caughtUp:
            return .broker(.caughtUp(subscriptionID: try json.integer("subscriptionId")))
        case .admin:
            return .client(.admin(try AdminVectorCoding.request(json)))
        case .adminResult:
            return .broker(.adminResult(try AdminVectorCoding.result(json)))
        }
    }

    /// Encodes the batch the JSON describes: records through `RecordBatchBuilder`, then the broker's fields.
    static func batch(_ json: JSONValue) throws -> ByteBuffer {
        let header = try json.field("header")
        guard let codec = Codec(rawValue: try header.integer("codec")) else {
            throw VectorFormatError(description: "unknown codec")
        }
        var builder = RecordBatchBuilder()
        for record in try json.array("records") {
            builder.append(
                timestamp: try record.integer("timestamp"), key: ByteBuffer(string: try record.string("key")),
                headers: try record.array("headers").map {
                    RecordHeader(name: try $0.string("name"), value: try $0.string("value"))
                },
                value: ByteBuffer(string: try record.string("value")))
        }
        let level: Int32 = codec == .zlib ? try json.field("zlib").integer("level") : 1
        var batch = builder.build(
            codec: codec, compressor: BatchCompressor(level: level, implementation: .zlib), producerID: try header.integer("producerId"),
            producerSequence: try header.integer("producerSequence"))
        RecordBatch.assign(
            baseOffset: try header.integer("baseOffset"), appendTime: try header.integer("appendTime"),
            in: &batch, at: batch.readerIndex)
        return batch
    }

    /// Decodes `bytes` as a batch and checks every header field and record against the JSON.
    static func checkBatch(
        _ bytes: ByteBuffer, against json: JSONValue, sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        #expect(Hex.encode(bytes) == (try json.string("hex")), sourceLocation: sourceLocation)
        #expect(bytes.readableBytes == (try json.integer("size", as: Int.self)), sourceLocation: sourceLocation)
        let validated = try RecordBatch.validate(bytes, requireKeyTable: true)
        let (header, records) = try RecordBatch.decodeRecords(bytes)
        #expect(validated == header, sourceLocation: sourceLocation)
        let expected = try json.field("header")
        #expect(header.baseOffset == (try expected.integer("baseOffset")), sourceLocation: sourceLocation)
        #expect(header.batchLength == (try expected.integer("batchLength")), sourceLocation: sourceLocation)
        #expect(header.appendTime == (try expected.integer("appendTime")), sourceLocation: sourceLocation)
        #expect(VectorWriter.crcHex(header.crc) == (try expected.string("crc")), sourceLocation: sourceLocation)
        #expect(header.magic == (try expected.integer("magic")), sourceLocation: sourceLocation)
        #expect(header.codecRaw == (try expected.integer("codec")), sourceLocation: sourceLocation)
        #expect(header.codec?.description == (try expected.string("codecName")), sourceLocation: sourceLocation)
        #expect(header.flags == (try expected.integer("flags")), sourceLocation: sourceLocation)
        #expect(header.firstTimestamp == (try expected.integer("firstTimestamp")), sourceLocation: sourceLocation)
        #expect(header.lastTimestamp == (try expected.integer("lastTimestamp")), sourceLocation: sourceLocation)
        #expect(header.producerID == (try expected.integer("producerId")), sourceLocation: sourceLocation)
        #expect(header.producerSequence == (try expected.integer("producerSequence")), sourceLocation: sourceLocation)
        #expect(header.recordCount == (try expected.integer("recordCount")), sourceLocation: sourceLocation)
        #expect(
            header.uncompressedLength == (try expected.integer("uncompressedLength")), sourceLocation: sourceLocation)

        let crcBytes = bytes.getSlice(at: bytes.readerIndex + 24, length: bytes.readableBytes - 24)!
        #expect(
            CRC32.checksum(crcBytes) == header.crc, "CRC covers bytes 24 to the end", sourceLocation: sourceLocation)

        if header.hasKeyTable {
            let table = try json.field("keyTable")
            let length = bytes.getInteger(at: bytes.readerIndex + 64, as: UInt32.self)!
            #expect(length == (try table.integer("keyTableLength")), sourceLocation: sourceLocation)
            let entries = try table.array("entries").map {
                BatchKey(key: ByteBuffer(string: try $0.string("key")), type: try $0.string("type"))
            }
            #expect(try RecordBatch.keys(of: bytes, header: header) == entries, sourceLocation: sourceLocation)
        }
        if header.codec == .zlib {
            let zlib = try json.field("zlib")
            let stored = try RecordBatch.recordsSection(of: bytes, header: header)
            var inflated = ByteBuffer()
            try BatchDecompressor(implementation: .zlib).decompress(
                stored, expectedLength: Int(header.uncompressedLength), into: &inflated, context: "vector")
            #expect(Hex.encode(inflated) == (try zlib.string("inflatedRecordsHex")), sourceLocation: sourceLocation)
        }

        let expectedRecords = try json.array("records")
        try #require(records.count == expectedRecords.count, sourceLocation: sourceLocation)
        for (index, (record, expectedRecord)) in zip(records, expectedRecords).enumerated() {
            #expect(
                header.baseOffset + Int64(index) == (try expectedRecord.integer("offset")),
                sourceLocation: sourceLocation)
            #expect(record.timestamp == (try expectedRecord.integer("timestamp")), sourceLocation: sourceLocation)
            #expect(
                record.timestamp - header.firstTimestamp == (try expectedRecord.integer("timestampDelta")),
                sourceLocation: sourceLocation)
            #expect(record.key == ByteBuffer(string: try expectedRecord.string("key")), sourceLocation: sourceLocation)
            let headers = try expectedRecord.array("headers").map {
                RecordHeader(name: try $0.string("name"), value: try $0.string("value"))
            }
            #expect(record.headers == headers, sourceLocation: sourceLocation)
            #expect(
                record.value == ByteBuffer(string: try expectedRecord.string("value")), sourceLocation: sourceLocation)
        }
    }
}
