import NIOCore
import TelexProtocol
import Testing

@Suite("Latest and history on the wire")
struct SelectionMessageTests {
    func deliverSelected(_ ranges: [(Int64, UInt32)]) -> ByteBuffer {
        var bytes = ByteBuffer()
        bytes.writeFrame(type: .deliverSelected, requestID: 0) {
            $0.writeInteger(UInt32(1))
            $0.writeShortString("news.world")
            $0.writeInteger(UInt32(ranges.count))
            for (first, count) in ranges { $0.writeMultipleIntegers(first, count) }
        }
        return bytes
    }

    @Test("selected ranges must be non-empty, ascending, disjoint and inside the i64 offsets")
    func badRanges() throws {
        #expect(throws: Never.self) { _ = try BrokerMessage.decode(try decodeOneFrame(self.deliverSelected([(0, 1), (1, 5)]))) }
        let bad: [[(Int64, UInt32)]] = [[(3, 0)], [(5, 2), (6, 1)], [(-1, 1)], [(Int64.max - 1, 5)]]
        for ranges in bad {
            expectTelexError(.malformedFrame, mentioning: ["DELIVER_SELECTED", "range"]) {
                _ = try BrokerMessage.decode(try decodeOneFrame(deliverSelected(ranges)))
            }
        }
    }

    @Test("a consumer reset cannot target the selecting start kinds")
    func adminResetRefusesSelectingKinds() throws {
        var bytes = ByteBuffer()
        bytes.writeMessage(ClientMessage.admin(.resetConsumer(consumer: "c", pattern: "news.>", to: .latest, force: false)), requestID: 3)
        expectTelexError(.malformedFrame, mentioning: ["ADMIN", "toKind 4 is not 0-3"]) {
            _ = try ClientMessage.decode(try decodeOneFrame(bytes))
        }
    }

    @Test("a history start carries its key in place of startValue")
    func historyLayout() throws {
        var body = ByteBuffer()
        ClientMessage.subscribe(subscriptionID: 1, pattern: ">", start: .history(key: ByteBuffer(string: "urn:a")),
                                consumerName: "", initialCredit: 2, resume: []).encodeBody(into: &body)
        // id, pattern ">", kind 5, key "urn:a", consumer "", credit 2, no resume entries
        #expect(Hex.encode(body) == "00000001" + "00013e" + "05" + "000575726e3a61" + "0000" + "00000002" + "0000")
    }
}
