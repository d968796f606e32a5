import Foundation
import NIOCore
import TelexClient
import TelexProtocol
import TelexServer
import Testing

/// Records with distinct keys `key-N`, no event model involved.
func plainRecords(_ range: Range<Int>, bodyBytes: Int = 200) -> [Record] {
    range.map { index in
        Record(timestamp: 1_700_000_000_000 + Int64(index), key: ByteBuffer(string: "key-\(index)"),
               headers: [RecordHeader(name: "n", value: "\(index)")],
               value: ByteBuffer(string: "value \(index) " + String(repeating: "x", count: bodyBytes)))
    }
}

/// Waits until `condition` holds, polling; false if it did not within `seconds`.
func eventually(seconds: Double = 5, _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return try await condition()
}

/// Runs `body` with a broker, a proxy in front of it, and a client connected through the proxy.
func withProxiedClient<T: Sendable>(
    configureServer: (inout ServerConfiguration) -> Void = { _ in },
    configureClient: (inout ClientConfiguration) -> Void = { _ in },
    _ body: (TelexServer, TestProxy, TelexClient) async throws -> T
) async throws -> T {
    try await withTemporaryDirectory { directory in
        let server = try await startServer(directory: directory, configure: configureServer)
        let proxy: TestProxy
        do {
            proxy = try await TestProxy.start(targetPort: server.localPort!)
        } catch {
            try? await server.shutdown()
            throw error
        }
        var configuration = clientConfiguration(server)
        configuration.port = proxy.port
        configureClient(&configuration)
        do {
            let result = try await TelexClient.withClient(configuration: configuration) { client in
                try await body(server, proxy, client)
            }
            await proxy.stop()
            try await server.shutdown()
            return result
        } catch {
            await proxy.stop()
            try? await server.shutdown()
            throw error
        }
    }
}

@Suite("Client lifecycle and cancellation", .serialized, .timeLimit(.minutes(1)))
struct ClientCancellationTests {
    @Test("cancelling the task that iterates a subscription ends iteration within 5 s and sends UNSUBSCRIBE")
    func cancelEndsIteration() async throws {
        try await withProxiedClient { _, proxy, client in
            let subscription = try await client.subscribe("news.quiet", from: .end)
            let iteration = Task {
                var count = 0
                for try await _ in subscription { count += 1 }
                return count
            }
            // Let the iteration block waiting for a delivery that never comes.
            try await Task.sleep(for: .milliseconds(200))
            iteration.cancel()
            let ended = try await withThrowingTaskGroup(of: Bool.self) { group in
                group.addTask {
                    _ = try? await iteration.value
                    return true
                }
                group.addTask {
                    try await Task.sleep(for: .seconds(5))
                    return false
                }
                let first = try await group.next()!
                group.cancelAll()
                return first
            }
            #expect(ended, "iteration still blocked 5 s after its task was cancelled")
            #expect(await eventually { proxy.clientFrameTypes.contains(.unsubscribe) }, "the broker never received UNSUBSCRIBE")
            #expect(subscription.isEnded)
        }
    }

    @Test("breaking out of the loop ends the subscription on the broker")
    func breakSendsUnsubscribe() async throws {
        try await withProxiedClient { _, proxy, client in
            _ = try await client.publish(plainRecords(0..<20), to: "news.break")
            let subscription = try await client.subscribe("news.break", from: .beginning)
            var seen = 0
            for try await _ in subscription {
                seen += 1
                if seen == 3 { break }
            }
            #expect(seen == 3)
            #expect(await eventually { proxy.clientFrameTypes.contains(.unsubscribe) })
        }
    }

    @Test("withSubscription ends the subscription when its closure returns, and when it throws")
    func scopedSubscription() async throws {
        struct Stop: Error {}
        try await withProxiedClient { _, proxy, client in
            _ = try await client.publish(plainRecords(0..<5), to: "news.scoped")
            let first = try await client.withSubscription("news.scoped", from: .beginning, untilCaughtUp: true) { records in
                var keys: [String] = []
                for try await delivered in records { keys.append(String(buffer: delivered.record.key)) }
                return keys
            }
            #expect(first == (0..<5).map { "key-\($0)" })
            #expect(await eventually { proxy.clientFrameTypes.filter { $0 == .unsubscribe }.count == 1 })
            await #expect(throws: Stop.self) {
                try await client.withSubscription("news.scoped", from: .beginning) { _ in throw Stop() }
            }
            #expect(await eventually { proxy.clientFrameTypes.filter { $0 == .unsubscribe }.count == 2 })
        }
    }

    @Test("calls made before run() wait for it; calls after run() has returned fail with CLOSED")
    func lifecycle() async throws {
        try await withTemporaryDirectory { directory in
            let server = try await startServer(directory: directory)
            let client = TelexClient(configuration: clientConfiguration(server))
            let early = Task { try await client.publish(plainRecords(0..<3), to: "news.early") }
            try await Task.sleep(for: .milliseconds(100))
            let runner = Task { await client.run() }
            let acks = try await early.value
            #expect(acks.map(\.baseOffset) == [0])
            runner.cancel()
            await runner.value
            await #expect {
                _ = try await client.ping()
            } throws: { error in
                (error as? TelexError)?.code == .closed
            }
            try await server.shutdown()
        }
    }

    @Test("a wrong auth token fails at once with AUTHENTICATION_FAILED, without retrying")
    func authenticationFailure() async throws {
        try await withTemporaryDirectory { directory in
            let server = try await startServer(directory: directory) { $0.authToken = "newsroom-secret" }
            var configuration = clientConfiguration(server)
            configuration.authToken = "wrong"
            configuration.maxReconnectAttempts = 8
            configuration.initialReconnectDelay = .seconds(2)
            try await TelexClient.withClient(configuration: configuration) { client in
                await #expect {
                    try await client.connect()
                } throws: { error in
                    (error as? TelexError)?.code == .authenticationFailed
                }
                // With retries an 8-attempt backoff would take many seconds; a permanent error is not retried.
                let started = ContinuousClock.now
                await #expect(throws: (any Error).self) { _ = try await client.ping() }
                #expect(ContinuousClock.now - started < .seconds(2))
            }
            configuration.authToken = "newsroom-secret"
            try await TelexClient.withClient(configuration: configuration) { client in
                _ = try await client.ping()
            }
            try await server.shutdown()
        }
    }

    @Test("cancelling a publish throws PublishError; re-publishing what it lists as unacknowledged stores nothing twice")
    func cancelledPublish() async throws {
        try await withProxiedClient(configureClient: { $0.publishWindow = 4; $0.maxBatchRecords = 8 }) { server, _, client in
            let records = plainRecords(0..<4000, bodyBytes: 400)
            let batches = try await client.prepare(records, topic: "news.cancel")
            let publishing = Task { try await client.publish(prepared: batches) }
            try await Task.sleep(for: .milliseconds(30))
            publishing.cancel()
            var acknowledged: [PublishAck] = []
            var unacknowledged: [PreparedBatch] = []
            do {
                acknowledged = try await publishing.value
            } catch let error as PublishError {
                #expect(error.underlying is CancellationError)
                acknowledged = error.acknowledged
                unacknowledged = error.unacknowledged
            }
            #expect(acknowledged.count + unacknowledged.count == batches.count)
            let rest = try await client.publish(prepared: unacknowledged)
            let all = acknowledged + rest
            // Every batch has exactly one place in the log, and together they cover it without a gap.
            let offsets = all.map(\.baseOffset)
            #expect(Set(offsets).count == batches.count)
            #expect(all.reduce(0) { $0 + Int($1.recordCount) } == records.count)
            #expect(server.topicStore?.log("news.cancel")?.endOffset == Int64(records.count))
        }
    }

    @Test("a cancelled publish of records accounts for every record: acknowledged, unacknowledged or unsent")
    func cancelledRecordPublish() async throws {
        try await withProxiedClient(configureClient: { $0.publishWindow = 2; $0.maxBatchRecords = 4 }) { server, _, client in
            let records = plainRecords(0..<6000, bodyBytes: 400)
            let publishing = Task { try await client.publish(records, to: "news.records") }
            #expect(await eventually { (server.topicStore?.log("news.records")?.endOffset ?? 0) > 0 })
            publishing.cancel()
            do {
                _ = try await publishing.value
                Issue.record("the publish finished before it could be cancelled")
            } catch let error as PublishError {
                let unacknowledgedRecords = error.unacknowledged.reduce(0) { $0 + $1.recordCount }
                #expect(error.acknowledgedRecordCount + unacknowledgedRecords + error.unsentRecords.count == records.count)
                #expect(error.unsentRecords.upperBound == records.count || error.unsentRecords.isEmpty)
                // Completing it: the unacknowledged batches unchanged, then the unsent records.
                let rest = try await client.publish(prepared: error.unacknowledged)
                let tail = try await client.publish(Array(records[error.unsentRecords]), to: "news.records")
                let total = error.acknowledged + rest + tail
                #expect(Set(total.map(\.baseOffset)).count == total.count)
                #expect(server.topicStore?.log("news.records")?.endOffset == Int64(records.count))
            }
        }
    }

    @Test("an iteration that caught up ends the subscription on the broker")
    func caughtUpSendsUnsubscribe() async throws {
        try await withProxiedClient { _, proxy, client in
            _ = try await client.publish(plainRecords(0..<5), to: "news.rebuild")
            let subscription = try await client.subscribe("news.rebuild", from: .beginning, untilCaughtUp: true)
            var iterator = subscription.makeAsyncIterator()
            var count = 0
            while try await iterator.next() != nil { count += 1 }
            #expect(count == 5)
            #expect(subscription.isEnded)
            #expect(await eventually { proxy.clientFrameTypes.contains(.unsubscribe) })
        }
    }
}

@Suite("Client reconnects", .serialized, .timeLimit(.minutes(1)))
struct ClientReconnectTests {
    @Test("a connection cut in the middle of a publish: every record stored once, nothing acknowledged twice or lost")
    func reconnectMidPublish() async throws {
        try await withProxiedClient(configureClient: { $0.publishWindow = 16; $0.maxBatchRecords = 16 }) { server, proxy, client in
            let records = plainRecords(0..<6000, bodyBytes: 300)
            let publishing = Task { try await client.publish(records, to: "news.cut") }
            #expect(await eventually { (server.topicStore?.log("news.cut")?.endOffset ?? 0) > 500 })
            proxy.cutAll()
            let acks = try await publishing.value
            #expect(proxy.connectionsAccepted >= 2, "the cut did not force a reconnect")
            #expect(acks.reduce(0) { $0 + Int($1.recordCount) } == records.count)
            #expect(Set(acks.map(\.baseOffset)).count == acks.count, "two acks name the same offsets")
            #expect(server.topicStore?.log("news.cut")?.endOffset == Int64(records.count), "a batch was stored twice")
            let stored = try await collect(try await client.subscribe("news.cut", from: .beginning), count: records.count)
            let storedKeys = stored.map { String(buffer: $0.record.key) }
            let firstOutOfOrder = storedKeys.indices.first { storedKeys[$0] != "key-\($0)" }
            #expect(storedKeys.count == records.count && firstOutOfOrder == nil,
                    "stored order differs from published order at position \(firstOutOfOrder ?? -1)")
        }
    }

    @Test("a connection cut in the middle of a subscription: the iteration resumes with no gap and no duplicate")
    func reconnectMidSubscription() async throws {
        try await withProxiedClient(configureClient: { $0.subscriptionCredit = 4; $0.maxBatchRecords = 10 }) { _, proxy, client in
            let records = plainRecords(0..<1500)
            _ = try await client.publish(records, to: "news.resume")
            let subscription = try await client.subscribe("news.resume", from: .beginning)
            var offsets: [Int64] = []
            for try await delivered in subscription {
                offsets.append(delivered.offset)
                if offsets.count == 300 { proxy.cutAll() }
                if offsets.count == records.count { break }
            }
            #expect(proxy.connectionsAccepted >= 2, "the cut did not force a reconnect")
            let firstWrong = offsets.enumerated().first { $0.offset != Int($0.element) }
            #expect(offsets.count == records.count && firstWrong == nil, "gap or duplicate at \(String(describing: firstWrong))")
        }
    }

    @Test("a broker shut down with acks in flight: every acknowledged record is there after a restart")
    func shutdownWithAcksInFlight() async throws {
        try await withTemporaryDirectory { directory in
            let server = try await startServer(directory: directory)
            var configuration = clientConfiguration(server)
            configuration.publishWindow = 64
            configuration.maxBatchRecords = 4
            configuration.maxReconnectAttempts = 1
            let acknowledged = try await TelexClient.withClient(configuration: configuration) { client in
                let publishing = Task { try await client.publish(plainRecords(0..<20_000, bodyBytes: 100), to: "news.stop") }
                #expect(await eventually { (server.topicStore?.log("news.stop")?.endOffset ?? 0) > 200 })
                try await server.shutdown()
                do {
                    return try await publishing.value.reduce(0) { $0 + Int($1.recordCount) }
                } catch let error as PublishError {
                    return error.acknowledgedRecordCount
                }
            }
            #expect(acknowledged > 0)
            let restarted = try await startServer(directory: directory)
            let stored = restarted.topicStore?.log("news.stop")?.endOffset ?? 0
            #expect(stored >= Int64(acknowledged), "acknowledged \(acknowledged) records but only \(stored) survived")
            try await restarted.shutdown()
        }
    }
}

@Suite("Broker shutdown", .serialized, .timeLimit(.minutes(1)))
struct BrokerShutdownTests {
    @Test("shutdown called twice at once, and again afterwards, stops the broker once and returns everywhere")
    func concurrentShutdowns() async throws {
        try await withTemporaryDirectory { directory in
            let server = try await startServer(directory: directory)
            try await withAnotherClient(server) { client in
                _ = try await client.publish(plainRecords(0..<100), to: "news.twice")
            }
            async let first: Void = server.shutdown()
            async let second: Void = server.shutdown()
            _ = try await (first, second)
            try await server.shutdown()
            await server.waitUntilClosed()
            let restarted = try await startServer(directory: directory)
            #expect(restarted.topicStore?.log("news.twice")?.endOffset == 100)
            try await restarted.shutdown()
        }
    }
}
