import NIOCore
import TelexProtocol
import Testing

/// Each side decodes only the messages of its direction; a frame of the other direction fails with a clear error.
@Suite("Message directions", .timeLimit(.minutes(1)))
struct DirectionTests {
    @Test(arguments: Newsroom.vectors)
    func eachVectorDecodesOnlyWithTheEnumOfItsDirection(_ vector: Newsroom.Vector) throws {
        let frame = try decodeOneFrame(frameBytes(vector.message, requestID: vector.requestID))
        let context = "\(vector.message.type.name) (request id \(vector.requestID))"
        switch vector.message {
        case .client(let message):
            #expect(try ClientMessage.decode(frame) == message)
            expectTelexError(.malformedFrame, mentioning: ["\(context) is sent by clients, not by the broker"]) {
                _ = try BrokerMessage.decode(frame)
            }
        case .broker(let message):
            #expect(try BrokerMessage.decode(frame) == message)
            expectTelexError(.invalidRequest, mentioning: ["\(context) is sent by the broker, not to it"]) {
                _ = try ClientMessage.decode(frame)
            }
        }
    }

    /// The body is decoded before the direction is judged: a malformed body is MALFORMED_FRAME on either side,
    /// with the same field error, whatever the type.
    @Test(arguments: MessageType.allCases)
    func aMalformedBodyIsMalformedOnEitherSide(_ type: MessageType) throws {
        var bytes = ByteBuffer()
        bytes.writeFrame(type: type, requestID: 77) { _ in }
        let frame = try decodeOneFrame(bytes)
        let clientError = try #require(throws: TelexError.self) { try ClientMessage.decode(frame) }
        let brokerError = try #require(throws: TelexError.self) { try BrokerMessage.decode(frame) }
        #expect(clientError == brokerError)
        #expect(clientError.code == .malformedFrame)
        #expect(clientError.message.hasPrefix("\(type.name) (request id 77): truncated at field"))
    }

    @Test func theDirectionErrorCarriesTheRequestID() throws {
        let frame = try decodeOneFrame(frameBytes(BrokerMessage.pong(nonce: 1), requestID: 9))
        let error = try #require(throws: TelexError.self) { try ClientMessage.decode(frame) }
        #expect(
            error == TelexError(.invalidRequest, "PONG (request id 9) is sent by the broker, not to it", requestID: 9))
        let ping = try decodeOneFrame(frameBytes(ClientMessage.ping(nonce: 1), requestID: 10))
        let pingError = try #require(throws: TelexError.self) { try BrokerMessage.decode(ping) }
        let expected = TelexError(
            .malformedFrame, "PING (request id 10) is sent by clients, not by the broker", requestID: 10)
        #expect(pingError == expected)
    }
}
