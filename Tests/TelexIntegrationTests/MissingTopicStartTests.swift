import TelexClient
import TelexProtocol
import Testing

@Suite("Subscribing to a topic that does not exist yet", .timeLimit(.minutes(1)))
struct MissingTopicStartTests {
    @Test("an offset start on a missing topic gets an empty SUBSCRIBED, then the topic from offset 0")
    func offsetStartOnMissingTopic() async throws {
        try await withServer { _, client in
            // Offset 5 would be out of range for an existing empty topic; for a missing one it is not checked.
            let subscription = try await client.subscribe("news.later", from: .offset(5))
            #expect(subscription.topics.isEmpty)
            _ = try await client.publish(plainRecords(0..<3), to: "news.later")
            let delivered = try await collect(subscription, count: 3)
            #expect(delivered.map(\.topic) == ["news.later", "news.later", "news.later"])
            #expect(delivered.map(\.offset) == [0, 1, 2])
            await subscription.cancel()
        }
    }
}
