import Dispatch
import NIOCore
import NIOEmbedded
import TelexProtocol
import Synchronization
import TelexStorage
import Testing

@testable import TelexServer

@Suite("Connection limits", .timeLimit(.minutes(1)))
struct LimitsTests {
    @Test("a connection that sends nothing is closed with HANDSHAKE_TIMEOUT when the timeout passes")
    func idleConnectionTimesOut() async throws {
        let harness = try await HandlerHarness { $0.limits.handshakeTimeout = .seconds(10) }
        await harness.channel.testingEventLoop.advanceTime(by: .seconds(9))
        #expect(harness.channel.isActive)
        await harness.channel.testingEventLoop.advanceTime(by: .seconds(1))
        let (requestID, message) = try await harness.next()
        #expect(requestID == 0)
        try expectError(message, .handshakeTimeout, mentioning: "within 10.0 seconds")
        try await harness.waitForClose()
        try await harness.finish()
    }

    @Test("a connection trickling its HELLO one byte a second is closed at the timeout all the same")
    func tricklingConnectionTimesOut() async throws {
        let harness = try await HandlerHarness { $0.limits.handshakeTimeout = .seconds(10) }
        let hello = HandlerHarness.encode(
            .hello(minVersion: 1, maxVersion: 1, clientName: "slow-loris", authToken: ByteBuffer()), requestID: 1)
        for index in 0..<10 {
            try await harness.channel.writeInbound(hello.getSlice(at: index, length: 1)!)
            await harness.channel.testingEventLoop.advanceTime(by: .seconds(1))
        }
        let (requestID, message) = try await harness.next()
        #expect(requestID == 0)
        try expectError(message, .handshakeTimeout, mentioning: "HELLO")
        try await harness.waitForClose()
        try await harness.finish()
    }

    @Test("a HELLO in time cancels the timeout")
    func helloInTime() async throws {
        let harness = try await HandlerHarness { $0.limits.handshakeTimeout = .seconds(10) }
        await harness.channel.testingEventLoop.advanceTime(by: .seconds(5))
        try await harness.hello()
        await harness.channel.testingEventLoop.advanceTime(by: .seconds(60))
        try await harness.send(.ping(nonce: 3), requestID: 2)
        let answer = try await harness.next()
        #expect(answer.requestID == 2)
        #expect(answer.message == .pong(nonce: 3))
        try await harness.finish()
    }

    @Test("a PUBLISH that would pass the topic cap gets TOO_MANY_TOPICS, creates nothing, and the connection goes on")
    func topicCap() async throws {
        let harness = try await HandlerHarness { $0.limits.maxTopics = 2 }
        try await harness.hello()
        for (index, topic) in ["news.a", "news.b"].enumerated() {
            try await harness.send(.publish(topic: topic, batch: makeBatch()), requestID: UInt32(2 + index))
            guard case .publishAck = try await harness.next().message else { throw TelexError(.internalError, "no ack") }
        }
        try await harness.send(.publish(topic: "news.c", batch: makeBatch()), requestID: 4)
        let refused = try await harness.next()
        #expect(refused.requestID == 4)
        try expectError(refused.message, .tooManyTopics, mentioning: "news.c")
        #expect(harness.store.log("news.c") == nil)
        try await harness.send(.publish(topic: "news.a", batch: makeBatch(seed: 1)), requestID: 5)
        let again = try await harness.next()
        #expect(again.requestID == 5)
        #expect(again.message == .publishAck(topic: "news.a", baseOffset: 2, recordCount: 2, duplicate: false))
        try await harness.finish()
    }

    @Test("a principal creating topics faster than the rate gets RATE_LIMITED naming the topic; no topic is created")
    func creationRate() async throws {
        let harness = try await HandlerHarness {
            $0.limits.topicCreationRate = 0.001
            $0.limits.topicCreationBurst = 2
        }
        try await harness.hello()
        for (index, topic) in ["news.a", "news.b"].enumerated() {
            try await harness.send(.publish(topic: topic, batch: makeBatch()), requestID: UInt32(2 + index))
            guard case .publishAck = try await harness.next().message else { throw TelexError(.internalError, "no ack") }
        }
        try await harness.send(.publish(topic: "news.c", batch: makeBatch()), requestID: 4)
        let refused = try await harness.next()
        #expect(refused.requestID == 4)
        try expectError(refused.message, .rateLimited, mentioning: "news.c")
        #expect(harness.store.log("news.c") == nil)
        try await harness.send(.publish(topic: "news.b", batch: makeBatch(seed: 1)), requestID: 5)
        guard case .publishAck = try await harness.next().message else { throw TelexError(.internalError, "no ack") }
        try await harness.finish()
    }

    @Test("existing topics count toward the cap; a released reservation gives its place and token back")
    func topicReservations() throws {
        let limiter = TopicCreationLimiter(
            limits: ServerLimits(maxTopics: 3, topicCreationRate: 1, topicCreationBurst: 2), existingTopics: 1)
        let first = try limiter.reserve("news.a", principal: "desk")
        _ = try limiter.reserve("news.b", principal: "other")
        #expect(refusal { try limiter.reserve("news.c", principal: "third") } == .tooManyTopics)
        limiter.release(first)
        #expect(limiter.topicCount == 2)
        _ = try limiter.reserve("news.c", principal: "desk")
        #expect(limiter.topicCount == 3)
        #expect(refusal { try limiter.reserve("news.d", principal: "desk") } == .tooManyTopics)
    }

    @Test("each principal has its own bucket, refilled at the rate")
    func creationBuckets() throws {
        let clock = TestClock()
        let limiter = TopicCreationLimiter(
            limits: ServerLimits(topicCreationRate: 2, topicCreationBurst: 1), existingTopics: 0, now: { clock.now })
        _ = try limiter.reserve("news.a", principal: "desk")
        #expect(refusal { try limiter.reserve("news.b", principal: "desk") } == .rateLimited)
        _ = try limiter.reserve("news.b", principal: "other")
        clock.advance(nanoseconds: 400_000_000)
        #expect(refusal { try limiter.reserve("news.c", principal: "desk") } == .rateLimited)
        clock.advance(nanoseconds: 100_000_000)
        _ = try limiter.reserve("news.c", principal: "desk")
        #expect(limiter.topicCount == 3)
    }

    @Test("SUBSCRIBE beyond the cap gets TOO_MANY_SUBSCRIPTIONS; after an UNSUBSCRIBE there is room again")
    func subscriptionCap() async throws {
        let harness = try await HandlerHarness { $0.limits.maxSubscriptions = 2 }
        try await harness.hello()
        func subscribe(_ id: UInt32, requestID: UInt32) async throws -> (requestID: UInt32, message: BrokerMessage) {
            try await harness.send(.subscribe(subscriptionID: id, pattern: "news.\(id)", start: .end, consumerName: "",
                                              initialCredit: 1, resume: []), requestID: requestID)
            var answer = try await harness.next()
            while case .caughtUp = answer.message { answer = try await harness.next() }
            return answer
        }
        guard case .subscribed = try await subscribe(1, requestID: 2).message else { throw TelexError(.internalError, "1") }
        guard case .subscribed = try await subscribe(2, requestID: 3).message else { throw TelexError(.internalError, "2") }
        let refused = try await subscribe(3, requestID: 4)
        #expect(refused.requestID == 4)
        try expectError(refused.message, .tooManySubscriptions, mentioning: "news.3")
        try await harness.send(.unsubscribe(subscriptionID: 1), requestID: 5)
        #expect(try await harness.next().message == .unsubscribed(subscriptionID: 1))
        guard case .subscribed = try await subscribe(3, requestID: 6).message else { throw TelexError(.internalError, "3") }
        try await harness.finish()
    }

    @Test("over the unacknowledged-bytes budget the handler withholds reads, and passes them on as acks drain")
    func unackedBytesBackPressure() async throws {
        let harness = try await HandlerHarness { $0.limits.maxUnackedBytes = 100 }
        let reads = ReadCounter()
        try await harness.channel.pipeline.addHandler(reads, position: .first).get()
        try await harness.hello()
        let channel = harness.channel
        try await channel.testingEventLoop.executeInContext { channel.pipeline.read() }
        #expect(reads.count == 1)

        // The topic's creation waits for the pool's only thread, so the publish stays unanswered.
        let gate = DispatchSemaphore(value: 0)
        harness.threadPool.submit { _ in gate.wait() }
        let batch = makeBatch(records: 5)
        #expect(batch.readableBytes > 100)
        var pipelined = HandlerHarness.encode(.publish(topic: "news.pressure", batch: batch), requestID: 2)
        var ping = HandlerHarness.encode(.ping(nonce: 9), requestID: 3)
        pipelined.writeBuffer(&ping)
        try await channel.writeInbound(pipelined)
        try await channel.testingEventLoop.executeInContext { channel.pipeline.read() }
        #expect(reads.count == 1, "a read passed while over budget")

        gate.signal()
        var answers: [(requestID: UInt32, message: BrokerMessage)] = []
        for _ in 0..<2 { answers.append(try await harness.next()) }
        // Requests decoded before reading stopped are still answered.
        #expect(answers.contains { $0 == (2, .publishAck(topic: "news.pressure", baseOffset: 0, recordCount: 5, duplicate: false)) })
        #expect(answers.contains { $0 == (3, .pong(nonce: 9)) })
        #expect(reads.count == 2, "the withheld read was not passed on once the ack drained the budget")
        try await channel.testingEventLoop.executeInContext { channel.pipeline.read() }
        #expect(reads.count == 3)
        try await harness.finish()
    }
}

/// Counts the `read()` requests that reach the front of the pipeline (where the socket would read).
final class ReadCounter: ChannelOutboundHandler, Sendable {
    typealias OutboundIn = IOData
    private let reads = Mutex(0)

    var count: Int { reads.withLock { $0 } }

    func read(context: ChannelHandlerContext) {
        reads.withLock { $0 += 1 }
        context.read()
    }
}

/// A settable monotonic clock for the limiter, in nanoseconds.
final class TestClock: Sendable {
    private let nanoseconds = Mutex<Int64>(0)
    var now: Int64 { nanoseconds.withLock { $0 } }
    func advance(nanoseconds delta: Int64) { nanoseconds.withLock { $0 += delta } }
}

/// The code `body` was refused with, or nil if it was not.
func refusal(_ body: () throws -> some Any) -> TelexError.Code? {
    do {
        _ = try body()
        return nil
    } catch {
        return (error as? TelexError)?.code
    }
}

func expectError(
    _ message: BrokerMessage, _ expected: TelexError.Code, mentioning word: String,
    sourceLocation: SourceLocation = #_sourceLocation
) throws {
    guard case .error(let code, let text) = message else {
        throw TelexError(.internalError, "expected ERROR \(expected), got \(message)")
    }
    #expect(code == expected, sourceLocation: sourceLocation)
    #expect(text.contains(word), "'\(text)' does not mention \(word)", sourceLocation: sourceLocation)
}
