import Foundation
import NIOCore
@testable import TelexClient
import TelexProtocol
import Testing

/// Latest-per-article replay and history against a brute-force model (PROTOCOL.md §8.9, §8.10).
@Suite("Latest replay and history", .timeLimit(.minutes(1)))
struct LatestReplayTests {
    /// One stored record as the model knows it.
    struct Stored: Hashable {
        var topic: String
        var offset: Int64
        var key: String
        var tombstone: Bool
        var brokerTime: Int64 = 0
    }

    static func record(key: String, type: String, serial: Int) -> Record {
        let value = "{\"data\":{\"uri\":\"\(key)\",\"serial\":\(serial)},\"id\":\"e\(serial)\",\"specversion\":\"1.0\",\"type\":\"\(type)\"}"
        return Record(
            timestamp: 1_700_000_000_000 + Int64(serial), key: ByteBuffer(string: key),
            headers: [RecordHeader(name: "ce-type", value: type), RecordHeader(name: "ce-id", value: "e\(serial)")],
            value: ByteBuffer(string: value))
    }

    /// Publishes a random run of versions, tombstones and keyless records over `topics`; returns what was stored.
    static func publishRandom(
        _ client: TelexClient, topics: [String], keys: Int, operations: Int, serial: inout Int,
        rng: inout some RandomNumberGenerator
    ) async throws -> [Stored] {
        var stored: [Stored] = []
        var remaining = operations
        while remaining > 0 {
            let topic = topics.randomElement(using: &rng)!
            let count = min(remaining, Int.random(in: 1...70, using: &rng))
            var batch: [Record] = []
            var planned: [(String, Bool)] = []
            for _ in 0..<count {
                serial += 1
                let roll = Int.random(in: 0..<10, using: &rng)
                let key = roll == 0 ? "" : "urn:telex:model:\(Int.random(in: 0..<keys, using: &rng))"
                let tombstone = roll == 1 || roll == 2
                batch.append(record(key: key, type: tombstone ? "article.deleted" : "article.updated", serial: serial))
                planned.append((key, tombstone))
            }
            let acks = try await client.publish(batch, to: topic)
            var index = 0
            for ack in acks {
                for offset in ack.baseOffset..<ack.baseOffset + Int64(ack.recordCount) {
                    stored.append(Stored(topic: topic, offset: offset, key: planned[index].0, tombstone: planned[index].1))
                    index += 1
                }
            }
            remaining -= count
        }
        return stored
    }

    /// Broker append times of everything stored, read back by a full replay.
    static func withBrokerTimes(_ client: TelexClient, _ stored: [Stored]) async throws -> [Stored] {
        var times: [String: [Int64: Int64]] = [:]
        try await client.withSubscription("news.>", from: .beginning, untilCaughtUp: true) { records in
            for try await delivered in records { times[delivered.topic, default: [:]][delivered.offset] = delivered.brokerTime }
        }
        return stored.map { var copy = $0; copy.brokerTime = times[$0.topic]![$0.offset]!; return copy }
    }

    /// The model: each key's newest record (append time, then topic name, then offset), tombstones left out.
    static func expectedLatest(_ stored: [Stored]) -> Set<Stored> {
        var newest: [String: Stored] = [:]
        for record in stored where !record.key.isEmpty {
            if let current = newest[record.key],
                (current.brokerTime, current.topic, current.offset) > (record.brokerTime, record.topic, record.offset)
            {
                continue
            }
            newest[record.key] = record
        }
        return Set(newest.values.filter { !$0.tombstone })
    }

    @Test("a latest replay delivers exactly the model's newest live versions, then every new event with no gap or duplicate",
          arguments: [1, 2, 3, 4])
    func latestMatchesModel(seed: UInt64) async throws {
        var rng = SeededGenerator(seed: seed)
        try await withServer(configure: { $0.log.segmentBytes = 16 << 10 }) { server, client in
            var serial = 0
            let topics = ["news.world", "news.europe", "news.sport"]
            let published = try await Self.publishRandom(client, topics: topics, keys: 40, operations: 400,
                                                         serial: &serial, rng: &rng)
            let stored = try await Self.withBrokerTimes(client, published)
            let expected = Self.expectedLatest(stored)
            let subscription = try await client.subscribe("news.>", from: .latest)
            var iterator = subscription.makeAsyncIterator()
            let replayed = try await collect(&iterator, count: expected.count)
            let ends = Dictionary(uniqueKeysWithValues: subscription.topics.map { ($0.topic, $0.endOffset) })
            #expect(Set(replayed.map { Stored(topic: $0.topic, offset: $0.offset, key: String(buffer: $0.record.key),
                                              tombstone: $0.record.header("ce-type") == "article.deleted",
                                              brokerTime: $0.brokerTime) }) == expected)
            for topic in topics {
                let offsets = replayed.filter { $0.topic == topic }.map(\.offset)
                #expect(offsets == offsets.sorted() && Set(offsets).count == offsets.count, "\(topic) in offset order, once each")
                #expect(offsets.allSatisfy { $0 < ends[topic]! })
            }
            // Live: every new record, tombstones and versions of replayed articles included, and a new topic.
            let live = try await Self.publishRandom(client, topics: topics + ["news.culture"], keys: 40, operations: 150,
                                                    serial: &serial, rng: &rng)
            let delivered = try await collect(&iterator, count: live.count)
            for topic in topics + ["news.culture"] {
                #expect(delivered.filter { $0.topic == topic }.map(\.offset) == live.filter { $0.topic == topic }.map(\.offset),
                        "\(topic): live events from the snapshot end on, all of them, in order")
            }
            await subscription.cancel()
            _ = server
        }
    }

    @Test("history returns every version of one article across topics, oldest first, and nothing published later")
    func historyMatchesModel() async throws {
        var rng = SeededGenerator(seed: 9)
        try await withServer(configure: { $0.log.segmentBytes = 16 << 10 }) { _, client in
            var serial = 0
            let published = try await Self.publishRandom(
                client, topics: ["news.world", "news.europe"], keys: 6, operations: 300, serial: &serial, rng: &rng)
            let stored = try await Self.withBrokerTimes(client, published)
            for key in (0..<6).map({ "urn:telex:model:\($0)" }) {
                let versions = try await client.history(of: key, topics: "news.>")
                let expected = stored.filter { $0.key == key }
                    .sorted { ($0.brokerTime, $0.topic, $0.offset) < ($1.brokerTime, $1.topic, $1.offset) }
                #expect(versions.map { "\($0.topic)@\($0.offset)" } == expected.map { "\($0.topic)@\($0.offset)" })
                #expect(versions.allSatisfy { String(buffer: $0.record.key) == key })
            }
            #expect(try await client.history(of: "urn:telex:model:absent", topics: "news.>").isEmpty)
            #expect(try await client.history(of: "urn:telex:model:1", topics: "sport.>").isEmpty)
        }
    }

    @Test("a record the batch cannot hold is refused by publish with the field and its size, not a crash")
    func oversizedFieldsAreRefused() async throws {
        try await withServer { _, client in
            let long = ByteBuffer(string: String(repeating: "x", count: 70_000))
            for (record, field) in [
                (Record(timestamp: 0, key: ByteBuffer(string: "urn:a"), headers: [RecordHeader(name: "ce-type", value: long)],
                        value: ByteBuffer(string: "{}")), "ce-type"),
                (Record(timestamp: 0, key: long, value: ByteBuffer(string: "{}")), "the key"),
            ] {
                do {
                    _ = try await client.publish([Self.record(key: "urn:ok", type: "article.created", serial: 1), record],
                                                 to: "news.world")
                    Issue.record("a record with a 70,000-byte \(field) was published")
                } catch {
                    let text = "\(error)"
                    #expect(text.contains("INVALID_BATCH: record 1: ") && text.contains(field) && text.contains("70000 bytes"), "\(text)")
                }
            }
        }
    }

    @Test("latest and history refuse a consumer name and resume entries")
    func refusesConsumer() async throws {
        try await withServer { _, client in
            _ = try await client.publish([Self.record(key: "urn:a", type: "article.created", serial: 1)], to: "news.world")
            await #expect(throws: TelexError.self) {
                _ = try await client.subscribe("news.>", from: .latest, consumer: "indexer")
            }
        }
    }
}

/// SplitMix64: a reproducible generator for the model tests.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The handover of a latest replay to live delivery, as a reader sees it (review findings).
@Suite("Latest replay handover", .timeLimit(.minutes(1)))
struct LatestHandoverTests {
    typealias Model = LatestReplayTests

    @Test("a live tombstone in another topic is delivered after the replayed version it deletes, and no gap is reported")
    func liveTombstoneAfterReplay() async throws {
        try await withServer { _, client in
            _ = try await client.publish((0..<300).map { Model.record(key: "urn:k\($0)", type: "article.created", serial: $0) },
                                         to: "news.europe")
            _ = try await client.publish([Model.record(key: "urn:X", type: "article.created", serial: 1000)], to: "news.europe")
            _ = try await client.publish([Model.record(key: "urn:Y", type: "article.created", serial: 1001)], to: "news.africa")
            _ = try await client.publish([Model.record(key: "urn:Z", type: "article.created", serial: 1003)], to: "news.africa")
            _ = try await client.publish([Model.record(key: "urn:Z", type: "article.deleted", serial: 1004)], to: "news.africa")
            let subscription = try await client.subscribe("news.>", from: .latest)
            _ = try await client.publish([Model.record(key: "urn:X", type: "article.deleted", serial: 1002)], to: "news.africa")
            _ = try await client.publish([Model.record(key: "urn:W", type: "article.created", serial: 1005)], to: "news.asia")
            var iterator = subscription.makeAsyncIterator()
            let got = try await collect(&iterator, count: 304)
            let order = got.map { "\($0.topic)@\($0.offset):\(String(buffer: $0.record.key)):\($0.record.header("ce-type") ?? "")" }
            let version = try #require(order.firstIndex { $0.hasPrefix("news.europe@300:") })
            let tombstone = try #require(order.firstIndex { $0.hasSuffix("urn:X:article.deleted") })
            #expect(tombstone > version, "the live tombstone came at \(tombstone), before the replayed version at \(version)")
            #expect(order.suffix(2).contains { $0.hasPrefix("news.asia@0:") }, "a topic born during the replay comes after it")
            #expect(got.allSatisfy { $0.skippedBefore == nil }, "no damage reported in a healthy log")
            await subscription.cancel()
        }
    }

    @Test("batches holding no selected record are not sent")
    func unselectedBatchesNotSent() async throws {
        try await withServer { server, client in
            _ = try await client.publish([Model.record(key: "urn:static", type: "article.created", serial: 0)], to: "news.world")
            for index in 1...200 {
                _ = try await client.publish([Model.record(key: "urn:hot", type: "article.updated", serial: index)], to: "news.world")
            }
            let raw = try RawConnection(port: server.localPort!)
            try raw.hello()
            raw.send(.subscribe(subscriptionID: 1, pattern: "news.>", start: .latest, consumerName: "", initialCredit: 1000,
                                resume: []), requestID: 2)
            var batchesSent = 0
            var handedOn: [Range<Int64>] = []
            loop: while true {
                switch try raw.readMessage().message {
                case .deliverSelected(_, _, let selected, let batches):
                    batchesSent += try RecordBatch.split(batches).count
                    handedOn += selected
                case .deliver(_, _, let batches):
                    batchesSent += try RecordBatch.split(batches).count
                case .caughtUp: break loop
                default: continue
                }
            }
            #expect(handedOn == [0..<1, 200..<201])
            #expect(batchesSent == 2, "sent \(batchesSent) batches for 2 selected records")
        }
    }

    @Test("a connection cut after CAUGHT_UP resumes a latest subscription whose topic ends with a tombstone, without a reported gap")
    func cutAfterCaughtUp() async throws {
        try await withProxiedClient(configureClient: { _ in }) { _, proxy, client in
            _ = try await client.publish([Model.record(key: "urn:a", type: "article.created", serial: 1)], to: "news.world")
            _ = try await client.publish([Model.record(key: "urn:b", type: "article.created", serial: 2)], to: "news.world")
            _ = try await client.publish([Model.record(key: "urn:b", type: "article.deleted", serial: 3)], to: "news.world")
            let subscription = try await client.subscribe("news.>", from: .latest)
            var iterator = subscription.makeAsyncIterator()
            #expect(try await collect(&iterator, count: 1).map(\.offset) == [0])
            #expect(await eventually { subscription.caughtUpArrived })
            proxy.cutAll()
            _ = try await client.publish([Model.record(key: "urn:c", type: "article.created", serial: 4)], to: "news.world")
            let live = try await collect(&iterator, count: 1)
            #expect(live.map(\.offset) == [3] && live[0].skippedBefore == nil)
            await subscription.cancel()
        }
    }

    @Test("a connection cut before CAUGHT_UP ends a latest replay with CONNECTION_FAILED, saying to start it again")
    func cutDuringReplay() async throws {
        try await withProxiedClient(configureClient: { $0.subscriptionCredit = 1 }) { _, proxy, client in
            _ = try await client.publish((0..<200).map { Model.record(key: "urn:k\($0)", type: "article.created", serial: $0) },
                                         to: "news.world")
            let subscription = try await client.subscribe("news.>", from: .latest)
            var iterator = subscription.makeAsyncIterator()
            _ = try await collect(&iterator, count: 1)
            proxy.cutAll()
            do {
                _ = try await collect(&iterator, count: 200)
                Issue.record("a latest replay went on after its connection was lost mid-snapshot")
            } catch let error as TelexError {
                #expect(error.code == .connectionFailed && error.message.contains("start it again"))
            }
        }
    }
}
