import Foundation
import NIOCore
import TelexClient
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
