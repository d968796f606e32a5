import Foundation
import NIOCore
import NIOPosix
import TelexConsole
import TelexEvents
import TelexProtocol
import Testing

@Suite("Console data: topics and events of a real broker", .timeLimit(.minutes(1)))
struct DataEventsTests {
    @Test("the overview is the broker's ADMIN info, read off the event loop")
    func overview() async throws {
        try await DataFixture.withBroker { server, client in
            try await DataFixture.publish([try DataFixture.article("urn:o", headline: "O")], to: "news.o", with: client)
            let overview = try await DataFixture.data(server).overview(for: DataFixture.anonymous)
            #expect(overview.address == "127.0.0.1:\(server.localPort!)")
            #expect(overview.serverName == server.configuration.serverName && !overview.version.isEmpty)
            #expect(overview.topicCount == 1 && overview.connectionCount == 1 && overview.dataBytes > 0)
            #expect(overview.fsyncPolicy == server.configuration.log.fsync.description)
            #expect(overview.uptimeMilliseconds >= 0 && !overview.tls)
        }
    }

    @Test("topics carry offsets, size and the sampled rate; a pattern filters them")
    func topicsAndRates() async throws {
        try await DataFixture.withBroker { server, client in
            let clock = DataTestClock()
            let data = DataFixture.data(server, clock: clock)
            try await DataFixture.publish((0..<3).map { try DataFixture.article("urn:a:\($0)", headline: "A\($0)") },
                                          to: "news.a", with: client)
            try await DataFixture.publish([try DataFixture.article("urn:b:0", headline: "B0")], to: "news.b",
                                          with: client)
            data.sample()
            clock.advance(milliseconds: 2000)
            try await DataFixture.publish((3..<7).map { try DataFixture.article("urn:a:\($0)", headline: "A\($0)") },
                                          to: "news.a", with: client)
            data.sample()

            let all = try await data.topics(matching: "", for: DataFixture.anonymous)
            #expect(all.topics.map(\.topic) == ["news.a", "news.b"])
            #expect(all.sampleIntervalSeconds == 2)
            let a = try #require(all.topics.first)
            #expect(a.startOffset == 0 && a.endOffset == 7 && a.segmentCount == 1)
            #expect(a.bytes > 0 && a.lastAppendTime > 0)
            #expect(a.rateHistory == [2.0])
            #expect(a.eventsPerSecond == 2.0)
            #expect(all.topics[1].rateHistory == [0.0])

            let b = try await data.topics(matching: "news.b", for: DataFixture.anonymous)
            #expect(b.topics.map(\.topic) == ["news.b"])
            let error = await dataError { _ = try await data.topics(matching: "news..", for: DataFixture.anonymous) }
            #expect(error?.code == .invalidTopic)
        }
    }

    @Test("events: the newest N without from, pages with from and next, limits and offsets outside the log")
    func eventsPaging() async throws {
        try await DataFixture.withBroker { server, client in
            let data = DataFixture.data(server) { $0.maxEventsPerRequest = 5 }
            let user = DataFixture.anonymous
            for batch in 0..<2 {
                try await DataFixture.publish((0..<5).map {
                    try DataFixture.article("urn:e:\(batch * 5 + $0)", headline: "Headline \(batch * 5 + $0)")
                }, to: "news.paging", with: client)
            }

            let newest = try await data.events(topic: "news.paging", from: nil, limit: 3, for: user)
            #expect(newest.events.map(\.offset) == [7, 8, 9])
            #expect(newest.next == 10 && newest.startOffset == 0 && newest.endOffset == 10)
            let event = try #require(newest.events.first)
            #expect(event.type == "article.created" && event.uri == "urn:e:7" && event.headline == "Headline 7")
            #expect(!event.id.isEmpty && event.brokerTime > 0 && event.topic == "news.paging")
            #expect(event.event["data"]?["uri"]?.stringValue == "urn:e:7")

            // Pages across the batch boundary at offset 5.
            let first = try await data.events(topic: "news.paging", from: 0, limit: 4, for: user)
            #expect(first.events.map(\.offset) == [0, 1, 2, 3] && first.next == 4)
            let second = try await data.events(topic: "news.paging", from: first.next, limit: 4, for: user)
            #expect(second.events.map(\.offset) == [4, 5, 6, 7] && second.next == 8)
            let clamped = try await data.events(topic: "news.paging", from: 2, limit: 500, for: user)
            #expect(clamped.events.map(\.offset) == [2, 3, 4, 5, 6])
            let all = try await data.events(topic: "news.paging", from: nil, limit: 50, for: user)
            #expect(all.events.map(\.offset) == [5, 6, 7, 8, 9])

            for beyond: Int64 in [10, 1000] {
                let empty = try await data.events(topic: "news.paging", from: beyond, limit: 5, for: user)
                #expect(empty.events.isEmpty && empty.next == beyond && empty.endOffset == 10)
            }
            let below = await dataError {
                _ = try await data.events(topic: "news.paging", from: -1, limit: 5, for: user)
            }
            #expect(below?.code == .offsetOutOfRange)
            #expect(below?.message.contains("offset -1") == true && below?.message.contains("news.paging") == true)
            #expect(below?.message.contains("starts at 0") == true)
            let missing = await dataError {
                _ = try await data.events(topic: "news.none", from: nil, limit: 5, for: user)
            }
            #expect(missing?.code == .topicNotFound && missing?.message.contains("news.none") == true)
            let zero = await dataError {
                _ = try await data.events(topic: "news.paging", from: nil, limit: 0, for: user)
            }
            #expect(zero?.code == .invalidRequest)
        }
    }

    @Test("once retention removed the oldest segments, offsets below the start are out of range; newest-N stops there")
    func belowTheStart() async throws {
        try await DataFixture.withBroker(configure: {
            $0.log.segmentBytes = 1024
            $0.log.retentionMilliseconds = 3_600_000
        }) { server, client in
            let data = DataFixture.data(server)
            let user = DataFixture.anonymous
            for index in 0..<6 {
                try await DataFixture.publish(
                    [try DataFixture.article("urn:r:\(index)", headline: "R\(index)",
                                             body: String(repeating: "retained ", count: 100))],
                    to: "news.retained", with: client)
            }
            let log = try #require(server.topicStore?.log("news.retained"))
            // Two hours from now every sealed segment is past retention; only the active one stays.
            let later = Int64(Date().timeIntervalSince1970 * 1000) + 7_200_000
            let removed = try await NIOThreadPool.singleton.runIfActive { try log.applyRetention(now: later) }
            #expect(removed > 0)
            let start = log.startOffset
            #expect(start > 0)
            try await DataFixture.publish([try DataFixture.article("urn:r:6", headline: "R6"),
                                           try DataFixture.article("urn:r:7", headline: "R7")],
                                          to: "news.retained", with: client)

            let newest = try await data.events(topic: "news.retained", from: nil, limit: 50, for: user)
            #expect(newest.startOffset == start && newest.events.first?.offset == start)
            #expect(newest.events.last?.offset == 7 && newest.next == 8)
            let below = await dataError {
                _ = try await data.events(topic: "news.retained", from: 0, limit: 5, for: user)
            }
            #expect(below?.code == .offsetOutOfRange)
            #expect(below?.message.contains("offset 0") == true)
            #expect(below?.message.contains("starts at \(start)") == true)
            let tail = await dataError { _ = try await data.tail(topic: "news.retained", from: 0, for: user) }
            #expect(tail?.code == .offsetOutOfRange)
        }
    }

    @Test("events by uri come from the key index; a value that is not JSON shows as a note, not an error")
    func eventsByURIAndUndecodable() async throws {
        try await DataFixture.withBroker { server, client in
            let data = DataFixture.data(server)
            let user = DataFixture.anonymous
            try await DataFixture.publish([try DataFixture.article("urn:story", headline: "First")], to: "news.uri",
                                          with: client)
            try await DataFixture.publish([try DataFixture.article("urn:other", headline: "Other")], to: "news.uri",
                                          with: client)
            try await DataFixture.publish(
                [try DataFixture.article("urn:story", headline: "Second", type: "article.updated")], to: "news.uri",
                with: client)
            let broken = Record(timestamp: 1_700_000_000_000, key: ByteBuffer(string: "urn:broken"),
                                headers: [RecordHeader(name: "ce-id", value: "raw-1")],
                                value: ByteBuffer(string: "not json"))
            _ = try await client.publish([broken], to: "news.uri")

            let story = try await data.events(topic: "news.uri", uri: "urn:story", for: user)
            #expect(story.events.map(\.offset) == [0, 2])
            #expect(story.events.map(\.headline) == ["First", "Second"])
            #expect(story.events.map(\.type) == ["article.created", "article.updated"])
            #expect(try await data.events(topic: "news.uri", uri: "urn:nothing", for: user).events.isEmpty)

            let page = try await data.events(topic: "news.uri", from: 0, limit: 10, for: user)
            #expect(page.events.count == 4)
            let note = try #require(page.events.last)
            #expect(note.offset == 3 && note.type == "" && note.uri == "urn:broken" && note.id == "raw-1")
            #expect(note.headline == nil)
            #expect(note.event.stringValue?.contains("news.uri@3") == true, "\(note.event)")
        }
    }
}
