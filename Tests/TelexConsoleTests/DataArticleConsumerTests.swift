import TelexAuth
import TelexClient
@testable import TelexConsole
import TelexEvents
import TelexProtocol
import Testing

@Suite("Console data: articles, consumers and resets on a real broker", .timeLimit(.minutes(1)))
struct DataArticleConsumerTests {
    @Test("an article's versions across two topics, ordered by broker time, with readable fields and the field list")
    func articleAcrossTopics() async throws {
        try await DataFixture.withBroker { server, client in
            let data = DataFixture.data(server)
            let uri = "http://ninjs.example.com/newsitems/20130709simp123"
            try await DataFixture.publish(
                [try DataFixture.article(uri, headline: "Captain on trial", body: "GROSSETO, Italy -- The trial began.",
                                         by: "Paulo Santalucia")],
                to: "news.europe.italy", with: client)
            try await DataFixture.publish(
                [try DataFixture.article(uri, headline: "Captain on trial in Italy", body: "The trial was postponed.",
                                         type: "article.updated", by: "Paulo Santalucia",
                                         extra: ["subjects": [["name": "Justice"]]])],
                to: "news.world", with: client)

            let article = try await data.article(uri: uri, for: DataFixture.anonymous)
            #expect(article.uri == uri)
            #expect(article.versions.map(\.topic) == ["news.europe.italy", "news.world"])
            #expect(article.versions.map(\.offset) == [0, 0])
            #expect(article.versions[0].brokerTime <= article.versions[1].brokerTime)
            let first = article.versions[0]
            #expect(first.type == "article.created")
            #expect(first.headline == "Captain on trial")
            #expect(first.byline == "Paulo Santalucia")
            #expect(first.bodyText == "GROSSETO, Italy -- The trial began.")
            #expect(first.section == "news.europe.italy")
            #expect(first.versionCreated == "2024-03-06T08:00:00Z")
            #expect(first.fields["headline"] == "\"Captain on trial\"")
            #expect(first.fields["byline"] == "\"Paulo Santalucia\"")
            #expect(first.fields["body"] == "\"GROSSETO, Italy -- The trial began.\"")
            #expect(first.fields["body[1].contenttype"] == "\"text/html\"")
            #expect(first.event["type"]?.stringValue == "article.created")
            let second = article.versions[1]
            #expect(second.type == "article.updated" && second.headline == "Captain on trial in Italy")
            #expect(second.section == "Justice")
            #expect(second.fields["subjects"] == "[{\"name\":\"Justice\"}]")

            #expect(try await data.article(uri: "urn:never", for: DataFixture.anonymous).versions.isEmpty)
        }
    }

    @Test("a durable consumer's committed offset, lag, subscriptions and sampled lag history; an admin resets it")
    func consumerLagAndReset() async throws {
        try await DataFixture.withBroker { server, client in
            let clock = DataTestClock()
            let data = DataFixture.data(server, clock: clock)
            let user = DataFixture.anonymous
            try await DataFixture.publish((0..<5).map { try DataFixture.article("urn:l:\($0)", headline: "L\($0)") },
                                          to: "news.lag", with: client)
            let subscription = try await client.subscribe("news.lag", from: .beginning, consumer: "indexer")
            var iterator = subscription.makeAsyncIterator()
            for _ in 0..<3 { _ = try await iterator.next() }
            try await subscription.commit(topic: "news.lag", offset: 3)
            data.sample()

            let consumers = try await data.consumers(for: user)
            let indexer = try #require(consumers.consumers.first { $0.consumer == "indexer" })
            #expect(indexer.activeSubscriptions == 1)
            #expect(indexer.topics == [ConsumerTopicJSON(topic: "news.lag", committed: 3, endOffset: 5, lag: 2,
                                                         lastCommitTime: indexer.topics.first?.lastCommitTime ?? 0)])
            #expect(indexer.topics[0].lastCommitTime > 0)
            #expect(indexer.totalLag == 2)
            #expect(indexer.lagHistory == [LagSampleJSON(time: DataTestClock.wallOrigin, lag: 2)])
            #expect(consumers.sampleIntervalSeconds == 30)

            // Subscribed: refused without force, done with it.
            let busy = await dataError {
                _ = try await data.resetConsumer("indexer", ResetRequestJSON(pattern: nil, to: "beginning", force: nil),
                                                 for: user)
            }
            #expect(busy?.code == .invalidRequest && busy?.message.contains("subscribed") == true)
            let reset = try await data.resetConsumer(
                "indexer", ResetRequestJSON(pattern: nil, to: "beginning", force: true), for: user)
            #expect(reset == ResetJSON(consumer: "indexer",
                                       resets: [.init(topic: "news.lag", previous: 3, committed: 0)]))
            let toOffset = try await data.resetConsumer(
                "indexer", ResetRequestJSON(pattern: "news.>", to: "offset:4", force: true), for: user)
            #expect(toOffset.resets == [.init(topic: "news.lag", previous: 0, committed: 4)])

            let bad = await dataError {
                _ = try await data.resetConsumer(
                    "indexer", ResetRequestJSON(pattern: nil, to: "yesterday", force: true), for: user)
            }
            #expect(bad?.code == .invalidRequest && bad?.message.contains("\"yesterday\"") == true)
            let badPattern = await dataError {
                _ = try await data.resetConsumer(
                    "indexer", ResetRequestJSON(pattern: "news..", to: "end", force: true), for: user)
            }
            #expect(badPattern?.code == .invalidTopic)
        }
    }

    @Test("a reset's target: beginning, end, offset:N, time:ISO8601; anything else names the text")
    func resetTargets() throws {
        #expect(try BrokerConsoleData.resetTarget("beginning") == .beginning)
        #expect(try BrokerConsoleData.resetTarget("end") == .end)
        #expect(try BrokerConsoleData.resetTarget("offset:42") == .offset(42))
        #expect(try BrokerConsoleData.resetTarget("time:2023-11-14T22:13:20Z") == .timestamp(1_700_000_000_000))
        #expect(try BrokerConsoleData.resetTarget("time:2023-11-14T22:13:20.5Z") == .timestamp(1_700_000_000_500))
        for text in ["", "offset:-1", "offset:x", "time:noon", "Beginning", "latest"] {
            #expect(throws: TelexError.self) { try BrokerConsoleData.resetTarget(text) }
        }
    }
}
