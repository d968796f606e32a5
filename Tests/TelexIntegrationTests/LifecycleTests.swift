import Logging
import NIOCore
import ServiceLifecycle
import ServiceLifecycleTestKit
import TelexClient
import TelexProtocol
import TelexServer
import Testing

/// The broker as a swift-service-lifecycle `Service`: graceful shutdown from a `ServiceGroup` (what SIGTERM does in
/// telexd) and from `testGracefulShutdown`.
@Suite("Broker lifecycle", .serialized, .timeLimit(.minutes(1)))
struct LifecycleTests {
    private static func makeServer(directory: String) -> TelexServer {
        var logger = Logger(label: "telex.test.server")
        logger.logLevel = .warning
        return TelexServer(
            configuration: ServerConfiguration(port: 0, dataDirectory: directory, eventLoopThreads: 2), logger: logger)
    }

    @Test("graceful shutdown of the ServiceGroup with publishes in flight: each is acknowledged and stored, or fails")
    func gracefulShutdownWithPublishesInFlight() async throws {
        try await withTemporaryDirectory { directory in
            let records = plainRecords(0..<5_000, bodyBytes: 100)
            let server = Self.makeServer(directory: directory)
            var logger = Logger(label: "telex.test.group")
            logger.logLevel = .warning
            let group = ServiceGroup(services: [server], logger: logger)
            let (acknowledged, failure) = try await withThrowingTaskGroup(
                of: Void.self, returning: ([PublishAck], PublishError?).self
            ) { tasks in
                tasks.addTask { try await group.run() }
                // Generous bounds: the whole suite runs in parallel on a loaded machine; these are hang checks.
                try #require(await eventually(seconds: 50) { server.localPort != nil })
                var configuration = clientConfiguration(server)
                configuration.publishWindow = 256
                configuration.maxBatchRecords = 4
                configuration.maxReconnectAttempts = 1
                configuration.requestTimeout = .seconds(60)
                let outcome = try await TelexClient.withClient(configuration: configuration) { client in
                    // Some acknowledged before the shutdown for certain, so the check below is never vacuous.
                    let before = try await client.publish(Array(records[0..<100]), to: "news.graceful")
                    let publishing = Task { try await client.publish(Array(records[100...]), to: "news.graceful") }
                    #expect(await eventually(seconds: 50) {
                        (server.topicStore?.log("news.graceful")?.endOffset ?? 0) > 300
                    })
                    await group.triggerGracefulShutdown()
                    do {
                        return (before + (try await publishing.value), PublishError?.none)
                    } catch let error as PublishError {
                        return (before + error.acknowledged, error)
                    }
                }
                // The group finishes on its own once the broker has shut down.
                try await tasks.waitForAll()
                return outcome
            }
            if let failure {
                // Refused by the quiescing broker, or the connection closed under it: nothing else.
                let code = failure.telexError?.code
                #expect(code == .shuttingDown || code == .connectionFailed || code == .closed,
                        "publishing failed with \(failure)")
            }
            let acknowledgedCount = acknowledged.reduce(0) { $0 + Int($1.recordCount) }
            #expect(acknowledgedCount >= 100)

            // Every acknowledged batch is on disk after a restart, at the offsets its ack named, with its records.
            let restarted = try await startServer(directory: directory)
            let stored: [Int64: Record] = try await withAnotherClient(restarted) { client in
                let end = restarted.topicStore?.log("news.graceful")?.endOffset ?? 0
                var stored: [Int64: Record] = [:]
                guard end > 0 else { return stored }
                let subscription = try await client.subscribe("news.graceful", from: .beginning)
                for try await delivered in subscription {
                    stored[delivered.offset] = delivered.record
                    if delivered.offset + 1 >= end { break }
                }
                return stored
            }
            try await restarted.shutdown()
            let published = Set(records.map { String(buffer: $0.value) })
            var missing = 0
            for ack in acknowledged {
                for offset in ack.baseOffset..<(ack.baseOffset + Int64(ack.recordCount)) {
                    guard let record = stored[offset], published.contains(String(buffer: record.value)) else {
                        missing += 1
                        continue
                    }
                }
            }
            #expect(missing == 0, "\(missing) of \(acknowledgedCount) acknowledged records were lost")
        }
    }

    @Test("a subscriber attached does not hold up graceful shutdown")
    func subscriberDoesNotDelayShutdown() async throws {
        try await withTemporaryDirectory { directory in
            let server = Self.makeServer(directory: directory)
            try await testGracefulShutdown { trigger in
                try await withThrowingTaskGroup(of: Void.self) { tasks in
                    tasks.addTask { try await server.run() }
                    try #require(await eventually(seconds: 50) { server.localPort != nil })
                    try await withAnotherClient(server) { client in
                        _ = try await client.publish(plainRecords(0..<10), to: "news.attached")
                        let subscription = try await client.subscribe("news.>", from: .beginning)
                        var iterator = subscription.makeAsyncIterator()
                        for _ in 0..<10 { _ = try await iterator.next() }
                        // The subscription is live and waiting for more when the shutdown begins.
                        let started = ContinuousClock.now
                        trigger.triggerGracefulShutdown()
                        try await tasks.waitForAll()
                        let took = ContinuousClock.now - started
                        #expect(took < .seconds(10), "graceful shutdown with a subscriber attached took \(took)")
                        withExtendedLifetime(iterator) {}
                    }
                }
            }
            await server.waitUntilClosed()
        }
    }
}
