import NIOCore
import TelexProtocol
import Testing

@Suite("Bad frames", .timeLimit(.minutes(1)))
struct FrameErrorTests {
    @Test func truncatedFrameAtEndOfStreamIsMalformed() throws {
        var bytes = frameBytes(.ping(nonce: 7), requestID: 3)
        bytes.moveWriterIndex(to: bytes.writerIndex - 3)
        var decoder = FrameDecoder()
        #expect(try decoder.decode(buffer: &bytes) == nil)
        expectTelexError(.malformedFrame, mentioning: ["connection closed inside frame 1", "17 bytes"]) {
            _ = try decoder.decodeLast(buffer: &bytes, seenEOF: true)
        }
    }

    @Test func truncatedHeaderAtEndOfStreamIsMalformed() throws {
        var bytes = frameBytes(.ping(nonce: 7), requestID: 3).getSlice(at: 0, length: 6)!
        var decoder = FrameDecoder()
        expectTelexError(.malformedFrame, mentioning: ["incomplete frame", "6 bytes"]) {
            _ = try decoder.decodeLast(buffer: &bytes, seenEOF: true)
        }
    }

    @Test func cleanEndOfStreamIsNotAnError() throws {
        var decoder = FrameDecoder()
        var bytes = frameBytes(.pong(nonce: 7), requestID: 3)
        #expect(try decoder.decodeLast(buffer: &bytes, seenEOF: true) != nil)
        #expect(try decoder.decodeLast(buffer: &bytes, seenEOF: true) == nil)
    }

    @Test func lengthOverTheLimitFailsBeforeTheBodyArrives() throws {
        var bytes = ByteBuffer()
        bytes.writeMultipleIntegers(UInt32((8 << 20) + 1), UInt8(1), MessageType.publish.rawValue, UInt16(0), UInt32(7))
        var decoder = FrameDecoder()
        expectTelexError(.frameTooLarge, mentioning: ["frame 1", "8388609", "maximum frame size of 8388608"]) {
            _ = try decoder.decode(buffer: &bytes)
        }
    }

    @Test func lengthOverAConfiguredLimitFailsOnTheLengthAlone() throws {
        var bytes = ByteBuffer()
        bytes.writeInteger(UInt32(1025))
        var decoder = FrameDecoder(limits: FrameLimits(maxFrameSize: 1024))
        expectTelexError(.frameTooLarge, mentioning: ["1025", "1024"]) { _ = try decoder.decode(buffer: &bytes) }
    }

    @Test func lengthShorterThanTheHeaderIsMalformed() throws {
        var bytes = ByteBuffer()
        bytes.writeInteger(UInt32(7))
        var decoder = FrameDecoder()
        expectTelexError(.malformedFrame, mentioning: ["length 7", "8-byte frame header"]) {
            _ = try decoder.decode(buffer: &bytes)
        }
    }

    @Test func unknownMessageTypeIsRejectedWithItsByte() throws {
        var bytes = ByteBuffer()
        bytes.writeMultipleIntegers(UInt32(8), UInt8(1), UInt8(0x2A), UInt16(0), UInt32(21))
        var decoder = FrameDecoder()
        do {
            _ = try decoder.decode(buffer: &bytes)
            Issue.record("no error")
        } catch let error as TelexError {
            #expect(error.code == .unknownMessageType)
            #expect(error.message.contains("unknown message type 0x2a"))
            #expect(error.message.contains("request id 21"))
            #expect(error.requestID == 21)
        }
    }

    @Test(arguments: [UInt8(0), 2, 255])
    func unknownVersionIsRejected(_ version: UInt8) throws {
        var bytes = ByteBuffer()
        bytes.writeMultipleIntegers(UInt32(16), version, MessageType.ping.rawValue, UInt16(0), UInt32(22), UInt64(1))
        var decoder = FrameDecoder()
        do {
            _ = try decoder.decode(buffer: &bytes)
            Issue.record("no error")
        } catch let error as TelexError {
            #expect(error.code == .unsupportedVersion)
            #expect(error.message.contains("protocol version \(version) is not supported"))
            #expect(error.requestID == 22)
        }
    }

    @Test func headerErrorsNameTheFrameNumber() throws {
        var bytes = frameBytes(.ping(nonce: 1), requestID: 1)
        bytes.writeMultipleIntegers(UInt32(8), UInt8(1), UInt8(0x77), UInt16(0), UInt32(2))
        expectTelexError(.unknownMessageType, mentioning: ["frame 2", "0x77"]) { _ = try decodeStream(bytes) }
    }

    /// Every message except PUBLISH, DELIVER and DELIVER_SELECTED has a fixed end; one more byte is an error. (A SUBSCRIBE without
    /// its optional options byte is not at its end yet: see `subscribeOptionsByteIsOptional`.)
    @Test(arguments: Newsroom.vectors.filter {
        ![.publish, .deliver, .deliverSelected].contains($0.message.type) && !$0.message.endsBeforeSubscribeOptions
    })
    func trailingBodyByteIsMalformed(_ vector: Newsroom.Vector) throws {
        var bytes = ByteBuffer()
        bytes.writeFrame(type: vector.message.type, requestID: vector.requestID) {
            vector.message.encodeBody(into: &$0)
            $0.writeInteger(UInt8(0))
        }
        let frame = try decodeOneFrame(bytes)
        expectTelexError(.malformedFrame, mentioning: [vector.message.type.name, "1 unexpected trailing bytes"]) {
            _ = try WireMessage.decode(frame)
        }
    }

    /// SUBSCRIBE's trailing options byte: absent or 0 is no options, bit 0 is skip damaged, other bits are refused.
    @Test func subscribeOptionsByteIsOptional() throws {
        let plain = ClientMessage.subscribe(
            subscriptionID: 1, pattern: "news.world", start: .beginning, consumerName: "", initialCredit: 8, resume: [])
        func decoded(optionsByte: UInt8?) throws -> ClientMessage {
            var bytes = ByteBuffer()
            bytes.writeFrame(type: .subscribe, requestID: 3) {
                plain.encodeBody(into: &$0)
                if let optionsByte { $0.writeInteger(optionsByte) }
            }
            return try ClientMessage.decode(try decodeOneFrame(bytes))
        }
        #expect(try decoded(optionsByte: nil) == plain)
        #expect(try decoded(optionsByte: 0) == plain)
        guard case .subscribe(_, _, _, _, _, _, let options) = try decoded(optionsByte: 1) else {
            Issue.record("not a SUBSCRIBE")
            return
        }
        #expect(options == .skipDamaged)
        expectTelexError(.malformedFrame, mentioning: ["SUBSCRIBE", "options 2"]) { _ = try decoded(optionsByte: 2) }
    }

    /// Cutting a body short anywhere inside its fields is an error naming the message and a field.
    @Test(arguments: Newsroom.vectors)
    func truncatedBodyIsMalformed(_ vector: Newsroom.Vector) throws {
        var body = ByteBuffer()
        vector.message.encodeBody(into: &body)
        var fixedPart = body.readableBytes
        switch vector.message {
        case .client(.publish(let topic, _)): fixedPart = 2 + topic.utf8.count
        case .broker(.deliver(_, let topic, _)): fixedPart = 4 + 2 + topic.utf8.count
        case .broker(.deliverSelected(_, let topic, let selected, _)):
            fixedPart = BrokerMessage.deliverSelectedPrefixSize(topic: topic, rangeCount: selected.count)
        // Without its optional last byte a SUBSCRIBE is whole.
        case .client(.subscribe(_, _, _, _, _, _, let options)) where !options.isEmpty: fixedPart -= 1
        default: break
        }
        for length in 0..<fixedPart {
            var bytes = ByteBuffer()
            bytes.writeFrame(type: vector.message.type, requestID: vector.requestID) {
                $0.writeImmutableBuffer(body.getSlice(at: 0, length: length)!)
            }
            let frame = try decodeOneFrame(bytes)
            expectTelexError(.malformedFrame, mentioning: [vector.message.type.name, "truncated at field"]) {
                _ = try WireMessage.decode(frame)
            }
        }
    }

    @Test func invalidUTF8InAStringIsMalformed() throws {
        var bytes = ByteBuffer()
        bytes.writeFrame(type: .commitAck, requestID: 4) {
            $0.writeInteger(UInt16(3))
            $0.writeBytes([0x6E, 0xC3, 0x28])
            $0.writeInteger(Int64(1))
        }
        expectTelexError(.malformedFrame, mentioning: ["COMMIT_ACK", "topic is not valid UTF-8"]) {
            _ = try BrokerMessage.decode(try decodeOneFrame(bytes))
        }
    }

    @Test func duplicateFlagMustBeZeroOrOne() throws {
        var bytes = ByteBuffer()
        bytes.writeFrame(type: .publishAck, requestID: 4) {
            $0.writeShortString(Newsroom.topic)
            $0.writeMultipleIntegers(Int64(10), UInt32(1), UInt8(2))
        }
        expectTelexError(.malformedFrame, mentioning: ["duplicate flag 2"]) {
            _ = try BrokerMessage.decode(try decodeOneFrame(bytes))
        }
    }

    @Test func unknownStartKindIsMalformed() throws {
        var bytes = ByteBuffer()
        bytes.writeFrame(type: .subscribe, requestID: 4) {
            $0.writeInteger(UInt32(1))
            $0.writeShortString("news.>")
            $0.writeMultipleIntegers(UInt8(6), Int64(0))
            $0.writeShortString("")
            $0.writeMultipleIntegers(UInt32(1), UInt16(0))
        }
        expectTelexError(.malformedFrame, mentioning: ["SUBSCRIBE", "startKind 6"]) {
            _ = try ClientMessage.decode(try decodeOneFrame(bytes))
        }
    }

    @Test func resumeCountLargerThanTheEntriesIsMalformed() throws {
        var bytes = ByteBuffer()
        bytes.writeFrame(type: .subscribe, requestID: 4) {
            $0.writeInteger(UInt32(1))
            $0.writeShortString("news.>")
            $0.writeMultipleIntegers(UInt8(0), Int64(0))
            $0.writeShortString("")
            $0.writeMultipleIntegers(UInt32(1), UInt16(2))
            $0.writeShortString(Newsroom.topic)
            $0.writeInteger(Int64(5))
        }
        expectTelexError(.malformedFrame, mentioning: ["resume[1].topic"]) {
            _ = try ClientMessage.decode(try decodeOneFrame(bytes))
        }
    }
}

extension Newsroom.Vector: CustomTestStringConvertible {
    var testDescription: String { name }
}

extension WireMessage {
    /// A SUBSCRIBE encoded without its optional trailing options byte.
    var endsBeforeSubscribeOptions: Bool {
        if case .client(.subscribe(_, _, _, _, _, _, let options)) = self { return options.isEmpty }
        return false
    }
}
