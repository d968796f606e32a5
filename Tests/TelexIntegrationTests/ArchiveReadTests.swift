import Foundation
import NIOCore
import Testing
import TelexClient
import TelexProtocol
import TelexServer
import TelexStorage

@Suite("Reads from the archive over the wire, and read replicas", .serialized, .timeLimit(.minutes(1)))
struct ArchiveReadTests {
    /// Small segments, so a few publishes seal several.
    static func smallSegments(_ configuration: inout ServerConfiguration) {
        configuration.log.segmentBytes = 1024
        configuration.log.fsync = .never
    }

    @Test("a subscription from the beginning crosses archive, local log and live records with no gap or duplicate")
    func subscriptionCrossesArchive() async throws {
        try await withTemporaryDirectory { directory in
            let archive = try FakeArchiveTier(directory: directory + "/tier")
            try await withServer(directory: directory + "/data", configure: { configuration in
                Self.smallSegments(&configuration)
                configuration.log.localRetentionBytes = 0
                configuration.archive = archive
            }) { server, client in
                for round in 0..<12 { _ = try await client.publish(records(round * 5..<round * 5 + 5), to: "news.world") }
                let log = try #require(server.topicStore?.log("news.world"))
                try log.sync()
                try archive.archive(log)
                let archived = archive.archivedSegments(of: "news.world")
                #expect(archived.count >= 2)
                #expect(try log.applyRetention() == archived.count)
                #expect(log.localStartOffset == archived.last!.nextOffset)
                #expect(log.startOffset == 0)

                let subscription = try await client.subscribe("news.world", from: .beginning)
                var iterator = subscription.makeAsyncIterator()
                let stored = try await collect(&iterator, count: 60)
                #expect(stored.map(\.offset) == Array(0..<60))
                #expect(stored[3].record.header("ce-id") == "evt-3")
                _ = try await client.publish(records(60..<65), to: "news.world")
                let live = try await collect(&iterator, count: 5)
                #expect(live.map(\.offset) == Array(60..<65))
                await subscription.cancel()
            }
        }
    }

    @Test("a damaged archived segment ends the subscription with DATA_LOSS after the records before it")
    func damagedArchivedSegmentEndsSubscription() async throws {
        try await withTemporaryDirectory { directory in
            let archive = try FakeArchiveTier(directory: directory + "/tier")
            try await withServer(directory: directory + "/data", configure: { configuration in
                Self.smallSegments(&configuration)
                configuration.log.localRetentionBytes = 0
                configuration.archive = archive
            }) { server, client in
                for round in 0..<12 { _ = try await client.publish(records(round * 5..<round * 5 + 5), to: "news.world") }
                let log = try #require(server.topicStore?.log("news.world"))
                try log.sync()
                try archive.archive(log)
                try log.applyRetention()
                let second = try #require(archive.archivedSegments(of: "news.world").dropFirst().first)
                // Flip a byte inside the segment's first batch (past its 61-byte header).
                let path = archive.archivedPath(topic: "news.world", baseOffset: second.baseOffset)
                var data = try Data(contentsOf: URL(fileURLWithPath: path))
                data[RecordBatchHeader.size + 10] ^= 0x40
                try data.write(to: URL(fileURLWithPath: path))

                let subscription = try await client.subscribe("news.world", from: .beginning)
                var offsets: [Int64] = []
                var failure: TelexError?
                do {
                    for try await delivered in subscription { offsets.append(delivered.offset) }
                } catch let error as TelexError {
                    failure = error
                }
                #expect(offsets == Array(0..<second.baseOffset))
                #expect(failure?.code == .dataLoss)
                #expect(failure?.message.contains("archived segment \(second.baseOffset) of news.world") == true,
                        "\(String(describing: failure))")
            }
        }
    }

    @Test("a read replica refuses PUBLISH, COMMIT and durable SUBSCRIBE, naming the archive and the primary")
    func replicaRefusesWrites() async throws {
        let primary = PrimaryAddress()
        try await withServer(configure: { configuration in
            configuration.replica = ReplicaRole(source: "s3://bucket/wire", primaryAddress: { primary.value.withLock { $0 } })
        }) { server, client in
            let replica = "this broker is a read replica of s3://bucket/wire"
            await #expect {
                _ = try await client.publish(records(0..<1), to: "news.world")
            } throws: { error in
                let error = try #require((error as? PublishError)?.telexError)
                return error.code == .invalidRequest
                    && error.message.contains("\(replica): publish to the primary; the primary has not written its address yet")
            }
            primary.value.withLock { $0 = "10.1.2.3:7420" }
            await #expect {
                _ = try await client.publish(records(0..<1), to: "news.world")
            } throws: { error in
                (error as? PublishError)?.telexError?.message.contains("\(replica): publish to the primary at 10.1.2.3:7420")
                    == true
            }
            await #expect {
                _ = try await client.subscribe("news.>", from: .beginning, consumer: "indexer")
            } throws: { error in
                let error = try #require(error as? TelexError)
                return error.code == .invalidRequest && error.message.contains("with consumer 'indexer' refused")
                    && error.message.contains("primary at 10.1.2.3:7420")
            }
            let raw = try RawConnection(port: server.localPort!)
            try raw.hello()
            raw.send(.commit(subscriptionID: 1, topic: "news.world", offset: 0), requestID: 7)
            let (requestID, message) = try raw.readMessage()
            #expect(requestID == 7)
            guard case .error(let code, let text) = message else {
                Issue.record("expected an error, got \(message)")
                return
            }
            #expect(code == .invalidRequest)
            #expect(text.contains("COMMIT for 'news.world' refused: \(replica): commit to the primary at 10.1.2.3:7420"))
            // Reading without a consumer is what a replica is for.
            let subscription = try await client.subscribe("news.>", from: .beginning)
            await subscription.cancel()
        }
    }

    @Test("archiveGrew creates the topic on a replica, adopts the archive's end, and wakes a waiting subscriber")
    func archiveGrewWakesSubscribers() async throws {
        try await withTemporaryDirectory { directory in
            let archive = try FakeArchiveTier(directory: directory + "/tier")
            // The primary: its sealed segments are what the archive holds.
            let primaryLog = try await withServer(directory: directory + "/primary", configure: Self.smallSegments) {
                server, client in
                for round in 0..<8 { _ = try await client.publish(records(round * 5..<round * 5 + 5), to: "news.world") }
                return try #require(server.topicStore?.log("news.world"))
            }
            let replica = try await startServer(directory: directory + "/replica") { configuration in
                configuration.archive = archive
                configuration.replica = ReplicaRole(source: "s3://bucket/wire", primaryAddress: { nil })
            }
            do {
                try await TelexClient.withClient(configuration: clientConfiguration(replica)) { client in
                    try await client.connect()
                    let subscription = try await client.subscribe("news.>", from: .beginning)
                    var iterator = subscription.makeAsyncIterator()
                    // The primary log is closed; its sealed segments are on disk and stay sealed when reopened.
                    let reopened = try TopicLog(topic: "news.world", directory: directory + "/primary/topics/news.world",
                                                configuration: primaryLog.configuration, logger: .init(label: "test"))
                    try archive.archive(reopened)
                    try reopened.close()
                    let end = try #require(archive.archivedSegments(of: "news.world").last?.nextOffset)
                    await replica.archiveGrew(topics: ["news.world"])
                    let log = try #require(replica.topicStore?.log("news.world"))
                    #expect(log.endOffset == end)
                    #expect(log.localStartOffset == end)
                    #expect(log.startOffset == 0)
                    let delivered = try await collect(&iterator, count: Int(end))
                    #expect(delivered.map(\.offset) == Array(0..<end))

                    // The primary goes on; the subscriber waits at the old end until the archive grows again.
                    try await withServer(directory: directory + "/primary", configure: Self.smallSegments) { _, client in
                        for round in 8..<12 {
                            _ = try await client.publish(records(round * 5..<round * 5 + 5), to: "news.world")
                        }
                    }
                    let grown = try TopicLog(topic: "news.world", directory: directory + "/primary/topics/news.world",
                                             configuration: primaryLog.configuration, logger: .init(label: "test"))
                    try archive.archive(grown)
                    try grown.close()
                    let newEnd = try #require(archive.archivedSegments(of: "news.world").last?.nextOffset)
                    #expect(newEnd > end)
                    await replica.archiveGrew(topics: ["news.world"])
                    #expect(log.endOffset == newEnd)
                    let more = try await collect(&iterator, count: Int(newEnd - end))
                    #expect(more.map(\.offset) == Array(end..<newEnd))
                    await subscription.cancel()
                }
                try await replica.shutdown()
            } catch {
                try? await replica.shutdown()
                throw error
            }
        }
    }
}
