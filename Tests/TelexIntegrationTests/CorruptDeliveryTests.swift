import NIOCore
import TelexClient
import TelexProtocol
import Testing

@Suite("Corrupt deliveries", .timeLimit(.minutes(1)))
struct CorruptDeliveryTests {
    @Test("a delivered batch whose CRC fails ends the iteration with CORRUPT_BATCH naming topic and offset")
    func corruptBatchStopsTheSubscription() async throws {
        try await withServer { server, publisher in
            for index in 0..<5 {
                _ = try await publisher.publish(plainRecords(index * 3..<index * 3 + 3), to: "news.world")
            }
            let proxy = try await TestProxy.start(targetPort: server.localPort!, corruptingFirstDeliver: true)
            var configuration = clientConfiguration(server)
            configuration.port = proxy.port
            let (offsets, caught) = try await TelexClient.withClient(configuration: configuration) { client in
                try await client.connect()
                let subscription = try await client.subscribe("news.world", from: .beginning)
                var offsets: [Int64] = []
                do {
                    for try await delivered in subscription { offsets.append(delivered.offset) }
                    return (offsets, nil as TelexError?)
                } catch let error as TelexError {
                    return (offsets, error)
                }
            }
            await proxy.stop()
            let corrupted = try #require(proxy.corruptedDeliver)
            #expect(corrupted.topic == "news.world")
            let error = try #require(caught)
            #expect(error.code == .corruptBatch)
            #expect(error.topic == "news.world")
            #expect(error.offset == corrupted.offset)
            #expect(error.message.contains("news.world"))
            #expect(error.message.contains("offset \(corrupted.offset)"))
            #expect(error.message.contains("CRC mismatch"))
            // Nothing of the damaged DELIVER reaches the application, not even its intact batches.
            #expect(offsets.isEmpty)
        }
    }
}
