import Foundation
import NIOCore
import TelexAuth
import TelexCLI
import TelexClient
import TelexProtocol
import TelexServer
import Testing

@Suite("Admin commands over a real broker", .timeLimit(.minutes(1)))
struct AdminTests {
    @Test("info, topics and consumers describe the broker's known state")
    func listings() async throws {
        try await withServer { server, client in
            let before = Int64(Date().timeIntervalSince1970 * 1000)
            _ = try await client.publish(try records(0..<5), to: "news.world")
            _ = try await client.publish(try records(0..<3), to: "news.sport")
            let subscription = try await client.subscribe("news.world", from: .beginning, consumer: "indexer")
            _ = try await collect(subscription, count: 3)
            try await subscription.commit(topic: "news.world", offset: 3)

            let info = try await client.brokerInfo()
            #expect(info.serverName == "telexd" && !info.version.isEmpty)
            #expect(info.address.hasSuffix(":\(server.localPort!)"))
            #expect(info.fsyncPolicy == "always")
            #expect(info.topicCount == 2 && info.connectionCount >= 1)
            #expect(info.dataBytes > 0 && info.uptimeMilliseconds >= 0)

            let topics = try await client.topics()
            #expect(topics.map(\.topic) == ["news.sport", "news.world"])
            let world = try #require(topics.last)
            #expect(world.startOffset == 0 && world.endOffset == 5 && world.segmentCount == 1 && world.bytes > 0)
            #expect(world.lastAppendTime >= before)
            #expect(try await client.topics(matching: "*.sport").map(\.topic) == ["news.sport"])

            let positions = try await client.consumerPositions(consumer: "indexer")
            #expect(positions.count == 1)
            let position = try #require(positions.first)
            #expect(position.topic == "news.world" && position.committed == 3 && position.endOffset == 5)
            #expect(position.lag == 2 && position.lastCommitTime >= before)
            #expect(try await client.consumerPositions(consumer: "nobody").isEmpty)
        }
    }

    @Test("a reset to the beginning, the end, an offset or a time is where the consumer resumes")
    func resetToEachPosition() async throws {
        try await withServer { server, client in
            _ = try await client.publish(try records(0..<4), to: "news.world")
            let firstAppend = try #require(try await client.topics().first).lastAppendTime
            try await Task.sleep(for: .milliseconds(30))
            _ = try await client.publish(try records(4..<6), to: "news.world")

            /// Resumes consumer `name` and returns the first offset it reads.
            func resumedOffset(_ name: String) async throws -> Int64 {
                let subscription = try await client.subscribe("news.world", from: .end, consumer: name)
                return try #require(try await collect(subscription, count: 1).first).offset
            }
            let cases: [(String, StartPosition, Int64)] = [
                ("from-beginning", .beginning, 0), ("from-offset", .offset(3), 3),
                ("from-time", .timestamp(firstAppend + 1), 4), ("clamped", .offset(99), 6),
            ]
            for (name, position, expected) in cases {
                let resets = try await client.resetConsumer(name, to: position, topics: "news.world")
                #expect(resets == [ConsumerReset(topic: "news.world", previous: -1, committed: expected)])
                if expected < 6 { #expect(try await resumedOffset(name) == expected, "\(name)") }
            }
            // The end: nothing old is delivered, the next record is.
            _ = try await client.resetConsumer("from-end", to: .end, topics: "news.>")
            let subscription = try await client.subscribe("news.world", from: .beginning, consumer: "from-end")
            _ = try await client.publish(try records(6..<7), to: "news.world")
            #expect(try #require(try await collect(subscription, count: 1).first).offset == 6)

            // Without a pattern: every topic the consumer has a position in.
            let again = try await client.resetConsumer("from-offset", to: .beginning, force: true)
            #expect(again == [ConsumerReset(topic: "news.world", previous: 3, committed: 0)])
        }
    }

    @Test("a reset is refused while the consumer is subscribed, unless forced")
    func resetWhileSubscribed() async throws {
        try await withServer { server, client in
            _ = try await client.publish(try records(0..<3), to: "news.world")
            try await withAnotherClient(server) { other in
                let live = try await other.subscribe("news.world", from: .beginning, consumer: "live")
                let error = await #expect(throws: TelexError.self) {
                    try await client.resetConsumer("live", to: .beginning, topics: "news.world")
                }
                #expect(error?.code == .invalidRequest)
                #expect(error?.message.contains("subscribed") == true)
                let forced = try await client.resetConsumer("live", to: .offset(2), topics: "news.world", force: true)
                #expect(forced.map(\.committed) == [2])
                await live.cancel()
            }
            let resets = try await client.resetConsumer("live", to: .beginning, topics: "news.world")
            #expect(resets.map(\.committed) == [0])
        }
    }

    @Test("delete-topic removes the data, ends its subscriptions and frees its place under the topic cap")
    func deleteTopic() async throws {
        try await withTemporaryDirectory { directory in
            try await withServer(directory: directory, configure: { $0.limits.maxTopics = 2 }) { server, client in
                _ = try await client.publish(try records(0..<3), to: "news.doomed")
                _ = try await client.publish(try records(0..<1), to: "news.kept")
                let capped = await #expect(throws: PublishError.self) {
                    _ = try await client.publish(try records(0..<1), to: "news.third")
                }
                #expect((capped?.underlying as? TelexError)?.code == .tooManyTopics)
                let subscription = try await client.subscribe("news.doomed", from: .beginning, consumer: "reader")
                var iterator = subscription.makeAsyncIterator()
                _ = try await collect(&iterator, count: 3)
                try await subscription.commit(topic: "news.doomed", offset: 3)

                try await client.deleteTopic("news.doomed")
                #expect(!FileManager.default.fileExists(atPath: directory + "/topics/news.doomed"))
                #expect(try await client.topics().map(\.topic) == ["news.kept"])
                #expect(try await client.consumerPositions(consumer: "reader").isEmpty)
                let ended = await #expect(throws: TelexError.self) {
                    while try await iterator.next() != nil {}
                }
                #expect(ended?.code == .topicNotFound)
                _ = try await client.publish(try records(0..<1), to: "news.third")
                let missing = await #expect(throws: TelexError.self) { try await client.deleteTopic("news.doomed") }
                #expect(missing?.code == .topicNotFound)
            }
        }
    }

    @Test("only admin principals may send ADMIN; others get NOT_AUTHORIZED, and both are audited")
    func adminOnly() async throws {
        try await withTemporaryDirectory { directory in
            let usersFile = directory + "/users.json"
            let auditLog = directory + "/audit.log"
            let readerToken = try UsersAdministration.add(
                file: usersFile, name: "reader", publish: ["news.>"], subscribe: ["news.>"])
            let opsToken = try UsersAdministration.add(
                file: usersFile, name: "ops", publish: [], subscribe: [], admin: true)
            let server = try await startServer(directory: directory + "/data") {
                $0.auth.usersFile = usersFile
                $0.auth.auditLogFile = auditLog
            }
            var reader = clientConfiguration(server)
            reader.authToken = readerToken
            try await TelexClient.withClient(configuration: reader) { client in
                let error = await #expect(throws: TelexError.self) { try await client.topics() }
                #expect(error?.code == .notAuthorized)
                #expect(error?.message.contains("'reader'") == true)
                await #expect(throws: TelexError.self) { try await client.deleteTopic("news.world") }
            }
            var ops = clientConfiguration(server)
            ops.authToken = opsToken
            let topics = try await TelexClient.withClient(configuration: ops) { client in
                try await client.topics()
            }
            #expect(topics.isEmpty)
            try await server.shutdown()
            // The audit log is written by a queue of its own: wait for the records.
            func audited(_ predicate: (Substring) -> Bool) async throws -> Bool {
                for _ in 0..<100 {
                    let text = (try? String(contentsOfFile: auditLog, encoding: .utf8)) ?? ""
                    if text.split(separator: "\n").contains(where: predicate) { return true }
                    try await Task.sleep(for: .milliseconds(50))
                }
                return false
            }
            #expect(try await audited { $0.contains(#""event":"admin""#) && $0.contains(#""principal":"ops""#) })
            #expect(try await audited { $0.contains("authorization_refused") && $0.contains("ADMIN topics") })
        }
    }
}
