import Dispatch
import NIOCore
import TelexAuth
import TelexProtocol
import Testing

@testable import TelexServer

@Suite("Delivery budget per connection", .timeLimit(.minutes(1)))
struct DeliveryBudgetTests {
    @Test("a plaintext subscriber that never reads holds at most 64 file regions; each one sent lets another go")
    func fileRegionsAreCapped() async throws {
        let holder = WriteHolder()
        let harness = try await HandlerHarness(holdingWrites: holder) { $0.maxDeliverBytes = 1 }
        try await harness.hello()
        _ = try await holder.release(on: harness.channel)
        let batches = 200
        for index in 0..<batches {
            try await harness.send(.publish(topic: "news.world", batch: makeBatch(seed: index)), requestID: UInt32(2 + index))
            guard case .publishAck = try await harness.next().message else { throw TelexError(.internalError, "no ack") }
            _ = try await holder.release(on: harness.channel)
        }
        try await harness.send(.subscribe(subscriptionID: 1, pattern: "news.world", start: .beginning, consumerName: "",
                                          initialCredit: 4096, resume: []), requestID: 1000)
        var delivered = 0
        var caughtUp = false
        var round = 0
        while !caughtUp {
            round += 1
            // Everything the handler will write until the next write is sent comes before this PONG.
            try await harness.send(.ping(nonce: UInt64(round)), requestID: UInt32(2000 + round))
            var deliveredThisRound = 0
            while true {
                let (_, message) = try await harness.next()
                if case .deliver = message { deliveredThisRound += 1 }
                if case .caughtUp = message { caughtUp = true }
                if case .pong = message { break }
            }
            #expect(deliveredThisRound <= ConnectionHandler.maxFileRegionsInFlight)
            #expect(try await harness.withHandler { $0.fileRegionsInFlight } <= ConnectionHandler.maxFileRegionsInFlight)
            delivered += deliveredThisRound
            #expect(round < 20, "delivery stalled at \(delivered) of \(batches) batches")
            if round >= 20 { break }
            _ = try await holder.release(on: harness.channel)
        }
        #expect(delivered == batches)
        #expect(round > batches / ConnectionHandler.maxFileRegionsInFlight)
        try await harness.finish()
    }

    @Test("over TLS, many subscriptions on one connection get everything in order with one slice read at a time")
    func oneTLSReadPerConnection() async throws {
        let harness = try await HandlerHarness(tls: true) { $0.maxDeliverBytes = 1 }
        try await harness.hello()
        let topics = (0..<30).map { "news.t\($0)" }
        var requestID: UInt32 = 2
        for topic in topics {
            for seed in 0..<5 {
                try await harness.send(.publish(topic: topic, batch: makeBatch(seed: seed)), requestID: requestID)
                requestID += 1
                guard case .publishAck = try await harness.next().message else { throw TelexError(.internalError, "no ack") }
            }
        }
        for (index, topic) in topics.enumerated() {
            try await harness.send(.subscribe(subscriptionID: UInt32(index), pattern: topic, start: .beginning,
                                              consumerName: "", initialCredit: 100, resume: []), requestID: requestID)
            requestID += 1
        }
        var batchesPerSubscription: [UInt32: Int] = [:]
        var caughtUp = Set<UInt32>()
        var subscribed = Set<UInt32>()
        // The subscriptions already SUBSCRIBED when the last DELIVER was written, and whose that DELIVER was.
        var last: (id: UInt32, subscribedThen: Set<UInt32>)?
        while caughtUp.count < topics.count {
            let (_, message) = try await harness.next()
            switch message {
            case .deliver(let id, let topic, _):
                #expect(topic == topics[Int(id)])
                // Round robin: a subscription reads twice in a row only if no other one was waiting with batches.
                if let last, last.id == id {
                    let waiting = last.subscribedThen.filter { $0 != id && batchesPerSubscription[$0, default: 0] < 5 }
                    #expect(waiting.isEmpty, "subscription \(id) read again while \(waiting.sorted()) waited")
                }
                batchesPerSubscription[id, default: 0] += 1
                last = (id, subscribed)
            case .caughtUp(let id):
                #expect(batchesPerSubscription[id] == 5)
                caughtUp.insert(id)
            case .subscribed(let id, _):
                subscribed.insert(id)
            default:
                Issue.record("unexpected \(message)")
            }
            #expect(try await harness.withHandler { $0.tlsReadsInFlight } <= 1)
        }
        #expect(batchesPerSubscription.values.allSatisfy { $0 == 5 })
        try await harness.finish()
    }

    @Test("a SUBSCRIBE waiting for its start time is refused if a reload revoked the right meanwhile")
    func revokedWhilePending() async throws {
        let principals = try Principals()
        let harness = try await HandlerHarness { $0.auth.usersFile = principals.usersFile }
        try await harness.hello(token: principals.tokens["reader"]!)
        // The topic exists, so the time lookup has a log to search.
        _ = try harness.store.createLog("news.world")
        // The harness's pool has one thread: holding it keeps the time lookup waiting.
        let gate = DispatchSemaphore(value: 0)
        let held = harness.threadPool.runIfActive(eventLoop: harness.channel.eventLoop) { gate.wait() }
        try await harness.send(.subscribe(subscriptionID: 1, pattern: "news.world", start: .timestamp(0), consumerName: "",
                                          initialCredit: 10, resume: []), requestID: 2)
        var file = try UsersFile.load(path: principals.usersFile)
        let reader = try #require(file.principals.firstIndex { $0.name == "reader" })
        file.principals[reader].subscribe = ["news.sport.>"]
        try file.write(to: principals.usersFile)
        try harness.access.reload()
        harness.channel.pipeline.fireUserInboundEventTriggered(ConnectionHandler.PermissionsChanged())
        gate.signal()
        try await held.get()
        let (answeredID, answer) = try await harness.answer()
        #expect(answeredID == 2)
        try expectError(answer, .notAuthorized, mentioning: "news.world")
        #expect(try await harness.withHandler { $0.subscriptions.isEmpty })
        try await harness.finish()
        principals.remove()
    }
}
