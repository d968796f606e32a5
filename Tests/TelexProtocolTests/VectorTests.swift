import Foundation
import NIOCore
import TelexProtocol
import Testing

/// The files in Protocol/vectors, checked in both directions: bytes → values and values → bytes.
@Suite("Wire vectors", .timeLimit(.minutes(1)))
struct VectorTests {
    static let goodFiles = VectorDirectory.jsonFiles(in: VectorDirectory.good)
    static let badFiles = VectorDirectory.jsonFiles(in: VectorDirectory.bad)

    @Test func everyMessageTypeHasAVector() throws {
        var seen = Set<String>()
        for file in Self.goodFiles {
            let json = try JSONValue.load(VectorDirectory.good.appendingPathComponent(file))
            seen.insert(try json.field("frame").string("type"))
        }
        #expect(seen == Set(MessageType.allCases.map(\.name)))
        #expect(Set(Self.goodFiles) == Set(Newsroom.vectors.map { $0.name + ".json" }))
        #expect(Set(Self.badFiles) == Set(BadVectors.vectors.map { $0.name + ".json" }))
    }

    @Test(arguments: goodFiles)
    func goodVector(_ file: String) throws {
        let json = try JSONValue.load(VectorDirectory.good.appendingPathComponent(file))
        #expect(try json.string("name") + ".json" == file)
        let bytes = try json.hexBytes("hex")
        let frameJSON = try json.field("frame")

        // Bytes to values.
        let frame = try decodeOneFrame(bytes)
        #expect(frame.header == (try VectorReader.frameHeader(frameJSON)))
        #expect(bytes.getInteger(at: 0, as: UInt32.self) == (try frameJSON.integer("length")))
        let decoded = try WireMessage.decode(frame)
        let messageJSON = try json.field("message")
        let expected = try VectorReader.message(messageJSON, type: frame.header.type)
        #expect(decoded == expected)
        switch decoded {
        case .client(.publish(_, let batch)):
            try VectorReader.checkBatch(batch, against: try messageJSON.field("batch"))
        case .broker(.deliver(_, _, let batches)):
            let split = try RecordBatch.split(batches)
            let batchJSONs = try messageJSON.array("batches")
            try #require(split.count == batchJSONs.count)
            for (batch, batchJSON) in zip(split, batchJSONs) {
                try VectorReader.checkBatch(batch, against: batchJSON)
            }
        default:
            break
        }

        // Values to bytes: the message (batches rebuilt from their records) encodes to exactly the vector.
        let encoded = frameBytes(expected, requestID: frame.header.requestID)
        #expect(
            Hex.encode(encoded) == Hex.encode(bytes),
            "re-encoding differs (zlib here is \(runtimeZlibVersion); the vectors were made with the version named in them)"
        )
    }

    @Test(arguments: badFiles)
    func badVector(_ file: String) throws {
        let json = try JSONValue.load(VectorDirectory.bad.appendingPathComponent(file))
        let bytes = try json.hexBytes("hex")
        guard let stage = BadVectorStage(rawValue: try json.string("stage")) else {
            throw VectorFormatError(description: "unknown stage")
        }
        let code = TelexError.Code(rawValue: try json.integer("expectedCode"))
        #expect(code.name == (try json.string("expectedError")))
        let mentions = try json.array("messageMentions").map { value -> String in
            guard case .string(let text) = value else {
                throw VectorFormatError(description: "mention is not a string")
            }
            return text
        }
        let limits = try json.field("limits")
        let frameLimits = FrameLimits(maxFrameSize: try limits.integer("maxFrameSize"))
        let batchLimits = RecordBatchLimits(
            maxUncompressedBytes: try limits.integer("maxUncompressedBytes"),
            maxRecordCount: try limits.integer("maxRecordCount"))

        if stage == .frame {
            expectTelexError(code, mentioning: mentions) { _ = try decodeStream(bytes, limits: frameLimits) }
            return
        }
        let frames = try decodeStream(bytes, limits: frameLimits)
        try #require(frames.count == 1)
        if stage == .message {
            expectTelexError(code, mentioning: mentions) { _ = try WireMessage.decode(frames[0]) }
            return
        }
        guard case .publish(let topic, let batch) = try ClientMessage.decode(frames[0]) else {
            Issue.record("batch and topic vectors are PUBLISH frames")
            return
        }
        if stage == .topic {
            expectTelexError(code, mentioning: mentions) { try TopicName.validate(topic) }
            return
        }
        try TopicName.validate(topic)
        if stage == .batchValidate {
            expectTelexError(code, mentioning: mentions) {
                _ = try RecordBatch.validate(batch, limits: batchLimits, requireKeyTable: true)
            }
            expectTelexError(code, mentioning: []) { _ = try RecordBatch.decodeRecords(batch, limits: batchLimits) }
            return
        }
        if stage == .publishOnly {
            expectTelexError(code, mentioning: mentions) {
                _ = try RecordBatch.validate(batch, limits: batchLimits, requireKeyTable: true)
            }
            _ = try RecordBatch.validate(batch, limits: batchLimits)
            _ = try RecordBatch.decodeRecords(batch, limits: batchLimits)
            return
        }
        _ = try RecordBatch.validate(batch, limits: batchLimits, requireKeyTable: true)
        expectTelexError(code, mentioning: mentions) { _ = try RecordBatch.decodeRecords(batch, limits: batchLimits) }
    }

    /// Rewrites every vector file from `Newsroom.vectors` and `BadVectors.vectors`.
    /// Run with `TELEX_WRITE_VECTORS=1 swift test --filter writeVectors` after a deliberate wire change.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["TELEX_WRITE_VECTORS"] == "1"))
    func writeVectors() throws {
        try FileManager.default.createDirectory(at: VectorDirectory.bad, withIntermediateDirectories: true)
        for vector in Newsroom.vectors {
            try write(
                try VectorWriter.file(vector), to: VectorDirectory.good.appendingPathComponent(vector.name + ".json"))
        }
        let frameLimits = FrameLimits()
        let batchLimits = RecordBatchLimits()
        for vector in BadVectors.vectors {
            let json = JSONValue.object([
                ("name", .string(vector.name)),
                ("description", .string(vector.description)),
                ("hex", .string(Hex.encode(vector.bytes))),
                ("stage", .string(vector.stage.rawValue)),
                ("expectedError", .string(vector.code.name)),
                ("expectedCode", .int(Int64(vector.code.rawValue))),
                ("messageMentions", .array(vector.mentions.map { .string($0) })),
                (
                    "limits",
                    .object([
                        ("maxFrameSize", .int(Int64(frameLimits.maxFrameSize))),
                        ("maxUncompressedBytes", .int(Int64(batchLimits.maxUncompressedBytes))),
                        ("maxRecordCount", .int(Int64(batchLimits.maxRecordCount))),
                    ])
                ),
            ])
            try write(json, to: VectorDirectory.bad.appendingPathComponent(vector.name + ".json"))
        }
    }

    private func write(_ json: JSONValue, to url: URL) throws {
        try Data((json.rendered() + "\n").utf8).write(to: url)
    }
}
