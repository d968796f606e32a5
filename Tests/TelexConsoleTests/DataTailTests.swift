import TelexAuth
import TelexClient
import TelexConsole
import TelexEvents
import TelexProtocol
import TelexServer
import Testing

@Suite("Console data: live tails and a reader's view", .timeLimit(.minutes(1)))
struct DataTailTests {
    @Test("a tail wakes on a publish, reads from its position, and ends when the topic is deleted")
    func tailWakesAndEnds() async throws {
        try await DataFixture.withBroker { server, client in
            let data = DataFixture.data(server)
            try await DataFixture.publish([try DataFixture.article("urn:t:0", headline: "Before")], to: "news.tail",
                                          with: client)
            let tail = try await data.tail(topic: "news.tail", from: nil, for: DataFixture.anonymous)
            // Nothing after the end yet: the wait times out empty.
            #expect(try await tail.next(maxEvents: 10, timeout: .milliseconds(50)).isEmpty)

            let waiting = Task { try await tail.next(maxEvents: 10, timeout: .seconds(30)) }
            try await DataFixture.publish([try DataFixture.article("urn:t:1", headline: "Live")], to: "news.tail",
                                          with: client)
            let live = try await waiting.value
            #expect(live.map(\.offset) == [1] && live.first?.headline == "Live")

            // From an offset: what is stored is read at once.
            let replay = try await data.tail(topic: "news.tail", from: 0, for: DataFixture.anonymous)
            #expect(try await replay.next(maxEvents: 1, timeout: .seconds(30)).map(\.offset) == [0])
            #expect(try await replay.next(maxEvents: 10, timeout: .seconds(30)).map(\.offset) == [1])
            replay.close()
            #expect(try await replay.next(maxEvents: 10, timeout: .seconds(30)).isEmpty)

            let ending = Task { try await tail.next(maxEvents: 10, timeout: .seconds(30)) }
            try await client.deleteTopic("news.tail")
            let deleted = await dataError { _ = try await ending.value }
            #expect(deleted?.code == .topicNotFound && deleted?.message.contains("news.tail") == true)
            tail.close()
        }
    }

    @Test("close wakes a waiting next, which returns empty")
    func closeWakesWaiter() async throws {
        try await DataFixture.withBroker { server, client in
            let data = DataFixture.data(server)
            try await DataFixture.publish([try DataFixture.article("urn:c:0", headline: "C")], to: "news.close",
                                          with: client)
            let tail = try await data.tail(topic: "news.close", from: nil, for: DataFixture.anonymous)
            let waiting = Task { try await tail.next(maxEvents: 10, timeout: .seconds(50)) }
            tail.close()
            #expect(try await waiting.value.isEmpty)
        }
    }

    @Test("a reader principal sees only the topics, versions and consumers it may read, and may not reset")
    func readerSeesItsOwn() async throws {
        nonisolated(unsafe) var readerToken = ""
        nonisolated(unsafe) var usersPath = ""
        try await DataFixture.withBroker(users: { path in
            usersPath = path
            var file = UsersFile()
            let admin = try file.add(name: "desk", publish: [">"], subscribe: [">"], consumers: ["*"], admin: true)
            readerToken = try file.add(name: "sports", publish: [], subscribe: ["news.sport.>"],
                                       consumers: ["sports-*"], admin: false)
            try file.write(to: path)
            return admin
        }) { server, client in
            let data = DataFixture.data(server)
            let reader = try await DataFixture.login(readerToken, at: server)
            let uri = "urn:match-report"
            try await DataFixture.publish([try DataFixture.article(uri, headline: "Match")], to: "news.sport.football",
                                          with: client)
            try await DataFixture.publish([try DataFixture.article(uri, headline: "Match (politics)")],
                                          to: "news.politics", with: client)
            for (consumer, topic) in [("sports-feed", "news.sport.>"), ("politics-feed", "news.politics"),
                                      ("sports-all", "news.>")] {
                let subscription = try await client.subscribe(topic, from: .beginning, consumer: consumer)
                var iterator = subscription.makeAsyncIterator()
                _ = try await iterator.next()
                if consumer == "sports-all" { _ = try await iterator.next() }
                try await subscription.commit()
            }
            data.sample()

            let topics = try await data.topics(matching: "", for: reader)
            #expect(topics.topics.map(\.topic) == ["news.sport.football"])
            let refused = await dataError {
                _ = try await data.events(topic: "news.politics", from: nil, limit: 5, for: reader)
            }
            #expect(refused?.code == .notAuthorized)
            #expect(refused?.message.contains("'sports'") == true)
            #expect(refused?.message.contains("'news.politics'") == true)
            // A topic it may not read answers the same whether or not it exists.
            let unknown = await dataError {
                _ = try await data.events(topic: "news.secret", from: nil, limit: 5, for: reader)
            }
            #expect(unknown?.code == .notAuthorized)
            let missing = await dataError {
                _ = try await data.events(topic: "news.sport.none", from: nil, limit: 5, for: reader)
            }
            #expect(missing?.code == .topicNotFound)
            let tailRefused = await dataError {
                _ = try await data.tail(topic: "news.politics", from: nil, for: reader)
            }
            #expect(tailRefused?.code == .notAuthorized)

            let article = try await data.article(uri: uri, for: reader)
            #expect(article.versions.map(\.topic) == ["news.sport.football"])
            let consumers = try await data.consumers(for: reader)
            #expect(consumers.consumers.map(\.consumer) == ["sports-all", "sports-feed"])
            #expect(consumers.consumers.map { $0.topics.map(\.topic) }
                == [["news.sport.football"], ["news.sport.football"]])
            // The sampled total of sports-all covers news.politics too: not shown to a user who may not read it.
            #expect(consumers.consumers.map(\.lagHistory.count) == [0, 1])

            let reset = await dataError {
                _ = try await data.resetConsumer(
                    "sports-feed", ResetRequestJSON(pattern: nil, to: "beginning", force: true), for: reader)
            }
            #expect(reset?.code == .notAuthorized && reset?.message.contains("admin") == true)
            let other = await dataError {
                _ = try await data.resetConsumer(
                    "politics-feed", ResetRequestJSON(pattern: nil, to: "end", force: true), for: reader)
            }
            #expect(other?.code == .notAuthorized && other?.message.contains("'politics-feed'") == true)

            // The admin principal sees everything and may reset.
            let desk = try await DataFixture.login(client.configuration.authToken, at: server)
            #expect(try await data.topics(matching: "", for: desk).topics.count == 2)
            let done = try await data.resetConsumer(
                "politics-feed", ResetRequestJSON(pattern: nil, to: "beginning", force: true), for: desk)
            #expect(done.resets.map(\.committed) == [0])

            // Rights are checked again on every next: a reload that takes the topic away ends the tail.
            let tail = try await data.tail(topic: "news.sport.football", from: 0, for: reader)
            #expect(try await tail.next(maxEvents: 10, timeout: .seconds(30)).map(\.offset) == [0])
            var file = try UsersFile.load(path: usersPath)
            file.principals[file.principals.firstIndex { $0.name == "sports" }!].subscribe = ["news.sport.tennis"]
            try file.write(to: usersPath)
            try await server.reload()
            let ended = await dataError { _ = try await tail.next(maxEvents: 10, timeout: .seconds(30)) }
            #expect(ended?.code == .notAuthorized && ended?.message.contains("news.sport.football") == true)
            tail.close()
        }
    }
}
