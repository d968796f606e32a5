import NIOCore
import NIOEmbedded
import TelexProtocol
import TelexStorage
import Testing

@testable import TelexServer

@Suite("Connection handler", .timeLimit(.minutes(1)))
struct ConnectionHandlerTests {
    @Test("HELLO then PUBLISH gets PUBLISH_ACK, also for a topic the publish creates")
    func publish() async throws {
        let harness = try await HandlerHarness()
        try await harness.hello()
        try await harness.send(.publish(topic: "news.world", batch: makeBatch(records: 3)), requestID: 2)
        try await harness.send(.publish(topic: "news.world", batch: makeBatch(records: 2, seed: 1)), requestID: 3)
        let first = try await harness.next()
        #expect(first.requestID == 2)
        #expect(first.message == .publishAck(topic: "news.world", baseOffset: 0, recordCount: 3, duplicate: false))
        let second = try await harness.next()
        #expect(second.requestID == 3)
        #expect(second.message == .publishAck(topic: "news.world", baseOffset: 3, recordCount: 2, duplicate: false))
        #expect(harness.store.log("news.world")?.endOffset == 5)
        try await harness.finish()
    }

    @Test("requests that arrive while a topic is being created are answered in order")
    func orderBehindCreation() async throws {
        let harness = try await HandlerHarness()
        try await harness.hello()
        var pipelined = HandlerHarness.encode(.publish(topic: "news.new", batch: makeBatch()), requestID: 2)
        var ping = HandlerHarness.encode(.ping(nonce: 7), requestID: 3)
        var again = HandlerHarness.encode(.publish(topic: "news.new", batch: makeBatch(seed: 1)), requestID: 4)
        pipelined.writeBuffer(&ping)
        pipelined.writeBuffer(&again)
        try await harness.channel.writeInbound(pipelined)
        var answers: [(requestID: UInt32, message: BrokerMessage)] = []
        for _ in 0..<3 { answers.append(try await harness.next()) }
        // The ping is answered as soon as it is handled, the acks after their fsync: the acks of one topic
        // arrive in request order, and the second publish got the offsets after the first.
        #expect(answers.filter { if case .publishAck = $0.message { true } else { false } }.map(\.requestID) == [2, 4])
        #expect(answers.contains { $0 == (4, .publishAck(topic: "news.new", baseOffset: 2, recordCount: 2, duplicate: false)) })
        #expect(answers.contains { $0 == (3, .pong(nonce: 7)) })
        #expect(harness.store.log("news.new")?.endOffset == 4)
        try await harness.finish()
    }

    @Test("a SUBSCRIBE from a time looks the time up off the loop; a request behind it is answered after it")
    func orderBehindTimeLookup() async throws {
        let harness = try await HandlerHarness()
        try await harness.hello()
        try await harness.send(.publish(topic: "news.timed", batch: makeBatch(records: 2)), requestID: 2)
        _ = try await harness.next()
        var pipelined = HandlerHarness.encode(
            .subscribe(subscriptionID: 1, pattern: "news.timed", start: .timestamp(0), consumerName: "", initialCredit: 0,
                       resume: []), requestID: 3)
        var ping = HandlerHarness.encode(.ping(nonce: 5), requestID: 4)
        pipelined.writeBuffer(&ping)
        try await harness.channel.writeInbound(pipelined)
        let first = try await harness.next()
        #expect(first.requestID == 3)
        #expect(first.message == .subscribed(subscriptionID: 1, topics: [TopicRange(topic: "news.timed", startOffset: 0, endOffset: 2)]))
        var next = try await harness.next()
        if case .caughtUp = next.message { next = try await harness.next() }
        #expect(next.requestID == 4)
        #expect(next.message == .pong(nonce: 5))
        try await harness.finish()
    }

    @Test("a request before HELLO gets HANDSHAKE_REQUIRED and the connection closes")
    func handshakeRequired() async throws {
        let harness = try await HandlerHarness()
        try await harness.send(.ping(nonce: 1), requestID: 9)
        let (requestID, message) = try await harness.next()
        #expect(requestID == 9)
        guard case .error(let code, _) = message else { throw TelexError(.internalError, "expected ERROR, got \(message)") }
        #expect(code == .handshakeRequired)
        try await harness.waitForClose()
        try await harness.finish()
    }

    @Test("a wrong auth token gets AUTHENTICATION_FAILED and the connection closes")
    func authenticationFailed() async throws {
        let harness = try await HandlerHarness { $0.authToken = "secret" }
        try await harness.send(.hello(minVersion: 1, maxVersion: 1, clientName: "t", authToken: ByteBuffer(string: "guess")),
                               requestID: 1)
        let (_, message) = try await harness.next()
        guard case .error(let code, _) = message else { throw TelexError(.internalError, "expected ERROR, got \(message)") }
        #expect(code == .authenticationFailed)
        try await harness.waitForClose()
        try await harness.finish()
    }

    @Test("SUBSCRIBE gets SUBSCRIBED, the stored batches as DELIVER, then CAUGHT_UP; live batches follow")
    func subscribe() async throws {
        let harness = try await HandlerHarness()
        try await harness.hello()
        let batches = [makeBatch(records: 2), makeBatch(records: 1, seed: 1)]
        for (index, batch) in batches.enumerated() {
            try await harness.send(.publish(topic: "news.a", batch: batch), requestID: 10 + UInt32(index))
            _ = try await harness.next()
        }
        try await harness.send(.subscribe(subscriptionID: 5, pattern: "news.a", start: .beginning, consumerName: "",
                                          initialCredit: 10, resume: []), requestID: 20)
        #expect(try await harness.next().message
            == .subscribed(subscriptionID: 5, topics: [TopicRange(topic: "news.a", startOffset: 0, endOffset: 3)]))
        var offsets: [Int64] = []
        while offsets.count < 3 {
            let (_, message) = try await harness.next()
            guard case .deliver(5, "news.a", let bytes) = message else {
                throw TelexError(.internalError, "expected DELIVER, got \(message)")
            }
            for batch in try RecordBatch.split(bytes) {
                let (header, records) = try RecordBatch.decodeRecords(batch)
                offsets += records.indices.map { header.baseOffset + Int64($0) }
            }
        }
        #expect(offsets == [0, 1, 2])
        #expect(try await harness.next().message == .caughtUp(subscriptionID: 5))
        try await harness.send(.publish(topic: "news.a", batch: makeBatch(records: 1, seed: 2)), requestID: 30)
        var live: [BrokerMessage] = []
        for _ in 0..<2 { live.append(try await harness.next().message) }
        #expect(live.contains(.publishAck(topic: "news.a", baseOffset: 3, recordCount: 1, duplicate: false)))
        #expect(live.contains { if case .deliver(5, "news.a", _) = $0 { true } else { false } })
        try await harness.finish()
    }

    @Test("UNSUBSCRIBE gets UNSUBSCRIBED and no DELIVER follows")
    func unsubscribe() async throws {
        let harness = try await HandlerHarness()
        try await harness.hello()
        try await harness.send(.subscribe(subscriptionID: 1, pattern: "news.b", start: .end, consumerName: "",
                                          initialCredit: 10, resume: []), requestID: 2)
        #expect(try await harness.next().message == .subscribed(subscriptionID: 1, topics: []))
        #expect(try await harness.next().message == .caughtUp(subscriptionID: 1))
        try await harness.send(.unsubscribe(subscriptionID: 1), requestID: 3)
        #expect(try await harness.next() == (3, .unsubscribed(subscriptionID: 1)))
        try await harness.send(.publish(topic: "news.b", batch: makeBatch()), requestID: 4)
        #expect(try await harness.next().message == .publishAck(topic: "news.b", baseOffset: 0, recordCount: 2, duplicate: false))
        try await harness.send(.ping(nonce: 42), requestID: 5)
        #expect(try await harness.next() == (5, .pong(nonce: 42)))
        try await harness.finish()
    }

    @Test("CREDIT, COMMIT and UNSUBSCRIBE for an unknown subscription get UNKNOWN_SUBSCRIPTION")
    func unknownSubscription() async throws {
        let harness = try await HandlerHarness()
        try await harness.hello()
        try await harness.send(.credit(subscriptionID: 77, batches: 5), requestID: 2)
        try await harness.send(.commit(subscriptionID: 77, topic: "news.a", offset: 1), requestID: 3)
        try await harness.send(.unsubscribe(subscriptionID: 77), requestID: 4)
        for expected in [UInt32(2), 3, 4] {
            let (requestID, message) = try await harness.next()
            #expect(requestID == expected)
            guard case .error(let code, _) = message else { throw TelexError(.internalError, "expected ERROR, got \(message)") }
            #expect(code == .unknownSubscription)
        }
        #expect(harness.channel.isActive)
        try await harness.finish()
    }

    @Test("a commit is acknowledged once it is stored")
    func commit() async throws {
        let harness = try await HandlerHarness()
        try await harness.hello()
        try await harness.send(.subscribe(subscriptionID: 1, pattern: "news.*", start: .beginning, consumerName: "desk",
                                          initialCredit: 1, resume: []), requestID: 2)
        _ = try await harness.next()
        _ = try await harness.next()
        for offset in [Int64(3), 5, 4] {
            try await harness.send(.commit(subscriptionID: 1, topic: "news.c", offset: offset), requestID: UInt32(offset))
        }
        for offset in [Int64(3), 5, 4] {
            #expect(try await harness.next() == (UInt32(offset), .commitAck(topic: "news.c", offset: offset)))
        }
        #expect(harness.store.consumerOffsets.committed("desk") == ["news.c": 4])
        try await harness.finish()
    }

    @Test("a COMMIT for a topic the subscription's pattern does not match gets INVALID_REQUEST and stores nothing")
    func commitOutsidePattern() async throws {
        let harness = try await HandlerHarness()
        try await harness.hello()
        try await harness.send(.subscribe(subscriptionID: 1, pattern: "news.*", start: .beginning, consumerName: "desk",
                                          initialCredit: 1, resume: []), requestID: 2)
        _ = try await harness.next()
        _ = try await harness.next()
        try await harness.send(.commit(subscriptionID: 1, topic: "sport.c", offset: 3), requestID: 3)
        let (requestID, message) = try await harness.next()
        #expect(requestID == 3)
        guard case .error(let code, let text) = message else { throw TelexError(.internalError, "expected ERROR, got \(message)") }
        #expect(code == .invalidRequest)
        #expect(text.contains("'sport.c'") && text.contains("'news.*'"))
        #expect(harness.channel.isActive)
        #expect(harness.store.consumerOffsets.committed("desk").isEmpty)
        try await harness.finish()
    }

    @Test("on shutdown a publish in flight is still acknowledged, later requests get SHUTTING_DOWN, then it closes")
    func quiesce() async throws {
        let harness = try await HandlerHarness()
        try await harness.hello()
        let channel = harness.channel
        // In one event loop turn: a publish that must create its topic (so it is in flight on the thread pool),
        // a ping queued behind it, and the server's quiesce.
        try await channel.eventLoop.submit {
            var bytes = HandlerHarness.encode(.publish(topic: "news.late", batch: makeBatch()), requestID: 2)
            var ping = HandlerHarness.encode(.ping(nonce: 1), requestID: 3)
            bytes.writeBuffer(&ping)
            channel.pipeline.syncOperations.fireChannelRead(NIOAny(bytes))
            channel.pipeline.syncOperations.fireUserInboundEventTriggered(ConnectionHandler.Quiesce())
        }.get()
        var answers: [UInt32: BrokerMessage] = [:]
        for _ in 0..<2 {
            let (requestID, message) = try await harness.next()
            answers[requestID] = message
        }
        #expect(answers[2] == .publishAck(topic: "news.late", baseOffset: 0, recordCount: 2, duplicate: false))
        guard case .error(.shuttingDown, _) = answers[3] else {
            throw TelexError(.internalError, "expected SHUTTING_DOWN for the ping, got \(String(describing: answers[3]))")
        }
        try await harness.waitForClose()
        try await harness.finish()
    }
}
