import Foundation
import TelexClient
import TelexEvents
import TelexProtocol
import Testing

@Suite("Article history over a broker", .timeLimit(.minutes(1)))
struct HistoryTests {
    static let uri = "urn:telex:test:storm"

    /// Version `version` of the test article.
    static func storm(version: Int, headline: String, by: String) -> [String: JSONValue] {
        [
            "uri": .string(uri), "type": "text", "version": .string(String(version)), "language": "en", "by": .string(by),
            "headlines": [["role": "main", "value": .string(headline)]],
            "bodies": [["role": "main", "contentType": "text/plain", "value": "The storm is moving north."]],
        ]
    }

    @Test("three versions on two topics, then a deletion: listed oldest first across topics; --at and --diff on them")
    func historyAcrossTopics() async throws {
        try await withServer { _, client in
            let steps: [(topic: String, type: String, article: [String: JSONValue])] = [
                ("news.world", "article.created", Self.storm(version: 1, headline: "Storm nears the coast", by: "A. Reporter")),
                ("news.europe", "article.updated", Self.storm(version: 2, headline: "Storm reaches the coast", by: "A. Reporter")),
                ("news.world", "article.updated", Self.storm(version: 3, headline: "Storm reaches the coast", by: "A. Reporter and B. Editor")),
                ("news.europe", "article.deleted", ["uri": .string(Self.uri)]),
            ]
            var acks: [EventAck] = []
            for (index, step) in steps.enumerated() {
                // Another article first, so the history has records of other keys to leave out.
                _ = try await client.publish(events: [try articleEvent(index)], to: step.topic)
                let event = try CloudEvent(type: step.type, article: step.article, source: "urn:telex:test", id: "storm-\(index)")
                acks += try await client.publish(events: [event], to: step.topic)
                // The broker stamps records with its wall clock in milliseconds: wait until that clock has moved on,
                // so the next version is stored later (equal times would be ordered by topic name instead).
                let stored = CloudEvent.milliseconds(Date())
                while CloudEvent.milliseconds(Date()) <= stored { try await Task.sleep(for: .milliseconds(1)) }
            }
            _ = try await client.publish(events: [try CloudEvent(type: "article.created", article: steps[0].article)],
                                         to: "sport.elsewhere")

            let delivered = try await client.history(of: Self.uri, topics: "news.>")
            #expect(delivered.map(\.topic) == acks.map(\.topic))
            #expect(delivered.map(\.offset) == acks.map(\.offset))
            #expect(delivered.map(\.offset) == [1, 1, 3, 3])
            #expect(try await client.history(of: Self.uri, topics: ">").count == 5)
            #expect(try await client.history(of: "urn:telex:test:none", topics: "news.>").isEmpty)

            let versions = try delivered.map(ArticleVersion.init)
            let list = ArticleHistory.listLines(versions)
            #expect(list.count == 4)
            #expect(list[0].hasSuffix("news.world   1  article.created  Storm nears the coast"))
            #expect(list[1].hasSuffix("news.europe  1  article.updated  Storm reaches the coast"))
            #expect(list[3].hasSuffix("news.europe  3  article.deleted  (deleted)"))
            let json = ArticleHistory.jsonLines(versions)
            #expect(try JSONValue(parsing: Array(json[2].utf8))["data"]?["version"] == "3")

            #expect(ArticleHistory.version(at: versions[0].brokerTime - 1, in: versions) == nil)
            #expect(ArticleHistory.version(at: versions[1].brokerTime, in: versions) == versions[1])
            #expect(ArticleHistory.version(at: versions[2].brokerTime - 1, in: versions) == versions[1])
            #expect(ArticleHistory.version(at: versions[3].brokerTime + 60_000, in: versions)?.isDeletion == true)

            let changes = ArticleHistory.changes(versions)
            #expect(changes.map { $0.changed.map(\.field) } == [
                ["headline", "version"], ["byline", "version"],
                ["body", "body.contenttype", "body.role", "byline", "headline", "headline.role", "language", "type", "version"],
            ])
            let diff = try JSONValue(parsing: Array(ArticleHistory.diffJSONLines(changes)[0].utf8))
            #expect(diff == [
                "from": 1, "to": 1, "fromTopic": "news.world", "toTopic": "news.europe",
                "changed": [
                    "headline": ["before": "Storm nears the coast", "after": "Storm reaches the coast"],
                    "version": ["before": "1", "after": "2"],
                ],
            ])
        }
    }
}
