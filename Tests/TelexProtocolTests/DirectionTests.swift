import NIOCore
import TelexProtocol
import Testing

/// Each side decodes only the messages of its direction; a frame of the other direction fails with a clear error.
@Suite("Message directions")
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

    /// The direction is checked before any field: an empty body gets the direction error, not a truncation, from
    /// the other side's decoder, and a truncation (or a message) from its own.
    @Test(arguments: MessageType.allCases)
    func theDirectionIsCheckedBeforeTheBody(_ type: MessageType) throws {
        var bytes = ByteBuffer()
        bytes.writeFrame(type: type, requestID: 77) { _ in }
        let frame = try decodeOneFrame(bytes)
        let clientResult = Result { () throws(TelexError) in try ClientMessage.decode(frame) }
        let brokerResult = Result { () throws(TelexError) in try BrokerMessage.decode(frame) }
        let (own, other) = type.isSentByClients ? (clientResult.map { _ in }, brokerResult.map { _ in })
            : (brokerResult.map { _ in }, clientResult.map { _ in })
        if case .failure(let error) = own {
            #expect(error.code == .malformedFrame)
            #expect(error.message.contains("truncated at field"))
        }
        let expected =
            type.isSentByClients
            ? TelexError(.malformedFrame, "\(type.name) (request id 77) is sent by clients, not by the broker", requestID: 77)
            : TelexError(.invalidRequest, "\(type.name) (request id 77) is sent by the broker, not to it", requestID: 77)
        guard case .failure(let error) = other else {
            Issue.record("\(type.name) decoded by the other direction's enum")
            return
        }
        #expect(error == expected)
    }
}
