import NIOCore
import NIOTestUtils
import TelexProtocol
import Testing

/// Messages that exercise the edges of each layout: empty strings and lists, extreme integers, every start kind.
let edgeCaseMessages: [WireMessage] = [
    .client(.hello(minVersion: 0, maxVersion: 255, clientName: "", authToken: ByteBuffer())),
    .broker(.helloOK(version: 1, serverName: "télex — Bäckerei 東京", maxFrameSize: .max)),
    .client(.publish(topic: "a", batch: ByteBuffer())),
    .broker(.publishAck(topic: Newsroom.topic, baseOffset: .max, recordCount: .max, duplicate: true)),
    .client(
        .subscribe(
            subscriptionID: .max, pattern: ">", start: .beginning, consumerName: "", initialCredit: 0, resume: [])),
    .client(.subscribe(
        subscriptionID: 0, pattern: "news.*.breaking", start: .offset(-1), consumerName: "x",
        initialCredit: .max, resume: (0..<300).map { TopicOffset(topic: "news.t\($0)", offset: Int64($0)) })),
    .client(.subscribe(
        subscriptionID: 5, pattern: "news.world", start: .timestamp(.min), consumerName: "archive",
        initialCredit: 4, resume: [])),
    .broker(.subscribed(subscriptionID: 1, topics: [])),
    .broker(.deliver(subscriptionID: 9, topic: Newsroom.topic, batches: ByteBuffer())),
    .broker(.deliverSelected(subscriptionID: 9, topic: Newsroom.topic, selected: [], batches: ByteBuffer())),
    .broker(.deliverSelected(
        subscriptionID: 1, topic: Newsroom.topic, selected: [0..<1, 5..<Int64(UInt32.max) + 5], batches: Newsroom.deliveredBatches)),
    .client(.subscribe(subscriptionID: 2, pattern: ">", start: .latest, consumerName: "", initialCredit: 1, resume: [])),
    .client(.subscribe(
        subscriptionID: 3, pattern: "news.>", start: .history(key: ByteBuffer(string: "urn:x")), consumerName: "",
        initialCredit: 1, resume: [], options: .skipDamaged)),
    .client(.credit(subscriptionID: 0, batches: 0)),
    .client(.commit(subscriptionID: 1, topic: Newsroom.topic, offset: .min)),
    .broker(.commitAck(topic: Newsroom.topic, offset: 0)),
    .client(.ping(nonce: .max)),
    .broker(.pong(nonce: 0)),
    .broker(.error(code: TelexError.Code(rawValue: 999), message: "")),
    .broker(.error(code: .internalError, message: String(repeating: "ß", count: 20_000))),
]

@Suite("Message round trips", .timeLimit(.minutes(1)))
struct RoundTripTests {
    static let messages: [WireMessage] = Newsroom.vectors.map(\.message) + edgeCaseMessages

    @Test(arguments: messages)
    func encodeThenDecodeIsIdentity(_ message: WireMessage) throws {
        let bytes = frameBytes(message, requestID: 42)
        let frame = try decodeOneFrame(bytes)
        #expect(frame.header == FrameHeader(type: message.type, requestID: 42))
        #expect(Int(bytes.getInteger(at: 0, as: UInt32.self)!) == bytes.readableBytes - 4)
        #expect(try WireMessage.decode(frame) == message)
    }

    @Test func everyMessageTypeIsCovered() {
        #expect(Set(Self.messages.map(\.type)) == Set(MessageType.allCases))
    }

    @Test func encodeBodyWritesOnlyTheBody() {
        var body = ByteBuffer()
        ClientMessage.ping(nonce: 0x0102_0304_0506_0708).encodeBody(into: &body)
        #expect(Hex.encode(body) == "0102030405060708")
    }

    @Test func startValueIsIgnoredForBeginningAndEnd() throws {
        var bytes = ByteBuffer()
        bytes.writeFrame(type: .subscribe, requestID: 3) {
            $0.writeInteger(UInt32(1))
            $0.writeShortString("news.>")
            $0.writeMultipleIntegers(UInt8(1), Int64(12345))
            $0.writeShortString("")
            $0.writeMultipleIntegers(UInt32(1), UInt16(0))
        }
        let message = try ClientMessage.decode(try decodeOneFrame(bytes))
        #expect(
            message
                == .subscribe(
                    subscriptionID: 1, pattern: "news.>", start: .end, consumerName: "",
                    initialCredit: 1, resume: []))
    }

    /// An ERROR text longer than 60,000 bytes is cut to at most 60,000 bytes at a character boundary.
    @Test func longErrorTextIsTruncatedOnAScalarBoundary() throws {
        let text = "a" + String(repeating: "é", count: 40_000)  // byte 60,000 falls inside an "é"
        let frame = try decodeOneFrame(frameBytes(.error(code: .internalError, message: text), requestID: 1))
        guard case .error(let code, let decoded) = try BrokerMessage.decode(frame) else {
            Issue.record("not an ERROR")
            return
        }
        #expect(code == .internalError)
        #expect(decoded.utf8.count == 59_999)
        #expect(text.hasPrefix(decoded))
    }

    @Test func framesSurviveBeingFedOneByteAtATime() throws {
        let pairs: [(ByteBuffer, [Frame])] = try Newsroom.vectors.map { vector in
            let bytes = frameBytes(vector.message, requestID: vector.requestID)
            return (bytes, [try decodeOneFrame(bytes)])
        }
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) { FrameDecoder() }
    }

    @Test func severalFramesInOneReadDecodeInOrder() throws {
        var stream = ByteBuffer()
        for vector in Newsroom.vectors { stream.writeMessage(vector.message, requestID: vector.requestID) }
        let frames = try decodeStream(stream)
        #expect(try frames.map { try WireMessage.decode($0) } == Newsroom.vectors.map(\.message))
        #expect(frames.map(\.header.requestID) == Newsroom.vectors.map(\.requestID))
    }

    @Test func aFrameAtExactlyTheLimitIsAccepted() throws {
        let bytes = frameBytes(
            .publish(topic: Newsroom.topic, batch: ByteBuffer(repeating: 7, count: 100)),
            requestID: 1)
        let frame = try decodeOneFrame(bytes, limits: FrameLimits(maxFrameSize: bytes.readableBytes - 4))
        #expect(frame.body.readableBytes == bytes.readableBytes - 12)
    }

    @Test func partialHeaderWaitsForMoreBytes() throws {
        var decoder = FrameDecoder()
        let bytes = frameBytes(.ping(nonce: 1), requestID: 1)
        for length in 0..<bytes.readableBytes {
            var partial = bytes.getSlice(at: 0, length: length)!
            #expect(try decoder.decode(buffer: &partial) == nil)
            #expect(partial.readerIndex == 0, "a partial frame must not be consumed")
        }
    }
}

extension WireMessage: CustomTestStringConvertible {
    var testDescription: String {
        switch self {
        case .client(.publish(let topic, let batch)): "PUBLISH \(topic) (\(batch.readableBytes) batch bytes)"
        case .broker(.deliver(let id, let topic, let batches)):
            "DELIVER \(id) \(topic) (\(batches.readableBytes) bytes)"
        case .client(.subscribe(let id, let pattern, _, _, _, let resume, _)) where resume.count > 5:
            "SUBSCRIBE \(id) \(pattern) (\(resume.count) resume)"
        case .broker(.error(let code, let message)) where message.utf8.count > 200:
            "ERROR \(code.name) (\(message.utf8.count) bytes)"
        case .client(let message): String(describing: message)
        case .broker(let message): String(describing: message)
        }
    }
}
