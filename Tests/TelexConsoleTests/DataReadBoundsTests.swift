import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
@testable import TelexConsole
import TelexEvents
import TelexProtocol
import TelexServer
import TelexStorage
import Testing

@Suite("Console data: snapshots, answer budgets, damage and retention", .timeLimit(.minutes(1)))
struct DataReadBoundsTests {
    static let user = DataFixture.anonymous

    @Test("records appended after the caller's end are not skipped: next is the end, the next read returns them")
    func appendsAfterTheSnapshot() async throws {
        try await DataFixture.withBroker { server, client in
            try await DataFixture.publish((0..<3).map { try DataFixture.article("urn:s:\($0)", headline: "S\($0)") },
                                          to: "news.race", with: client)
            let log = try #require(server.topicStore?.log("news.race"))
            let end = log.readableEndOffset
            try await DataFixture.publish((3..<6).map { try DataFixture.article("urn:s:\($0)", headline: "S\($0)") },
                                          to: "news.race", with: client)
            // One log read returns both batches; the second is past the snapshot.
            let (first, next) = try await StoredEvents.records(of: log, from: 0, end: end, limit: 50, maxBytes: 1 << 22)
            #expect(first.map(\.offset) == [0, 1, 2])
            #expect(next == 3)
            let (rest, after) = try await StoredEvents.records(of: log, from: next, end: log.readableEndOffset,
                                                               limit: 50, maxBytes: 1 << 22)
            #expect(rest.map(\.offset) == [3, 4, 5])
            #expect(after == 6)
        }
    }

    @Test("an events page stops at the byte budget (next = first offset not sent); a larger value is a note")
    func eventsByteBudget() async throws {
        try await DataFixture.withBroker { server, client in
            let data = DataFixture.data(server) { $0.maxAnswerBytes = 16_000 }
            let body = String(repeating: "word ", count: 600)
            try await DataFixture.publish((0..<8).map { try DataFixture.article("urn:b:\($0)", headline: "B\($0)",
                                                                                body: body) },
                                          to: "news.budget", with: client)
            var offsets: [Int64] = []
            var from: Int64 = 0
            while from < 8 {
                let page = try await data.events(topic: "news.budget", from: from, limit: 50, for: Self.user)
                #expect(!page.events.isEmpty && page.events.count < 8)
                #expect(page.next == (page.events.last?.offset ?? -1) + 1)
                #expect(page.events.allSatisfy { $0.headline != nil })
                offsets += page.events.map(\.offset)
                from = page.next
            }
            #expect(offsets == Array(0..<8))

            let huge = String(repeating: "long ", count: 5000)
            try await DataFixture.publish([try DataFixture.article("urn:b:huge", headline: "Huge", body: huge)],
                                          to: "news.budget", with: client)
            let page = try await data.events(topic: "news.budget", from: 7, limit: 50, for: Self.user)
            #expect(page.events.map(\.offset) == [7, 8])
            #expect(page.next == 9)
            let note = try #require(page.events.last)
            #expect(note.uri == "urn:b:huge" && note.type == "article.created" && note.headline == nil)
            let text = note.event.stringValue ?? ""
            #expect(text.contains("news.budget@8") && text.contains("bytes") && text.contains("telex-sub"))
            // Alone on a page it is still sent (as the note): at least one event per answer.
            let alone = try await data.events(topic: "news.budget", from: 8, limit: 1, for: Self.user)
            #expect(alone.events.map(\.offset) == [8] && alone.next == 9)
        }
    }

    @Test("the newest page cut by the byte budget keeps the newest events, up to the end, and next is the end")
    func newestPageByteBudget() async throws {
        try await DataFixture.withBroker { server, client in
            let data = DataFixture.data(server)
            // ~150 KB values (the body is stored twice): 50 of them are ~7.5 MB, more than the 4 MiB budget.
            let body = String(repeating: "word ", count: 15_000)
            for index in 0..<50 {
                try await DataFixture.publish([try DataFixture.article("urn:n:\(index)", headline: "N\(index)",
                                                                       body: body)],
                                              to: "news.newest", with: client)
            }
            let page = try await data.events(topic: "news.newest", from: nil, limit: 50, for: Self.user)
            let offsets = page.events.map(\.offset)
            #expect(page.endOffset == 50 && page.next == 50)
            #expect(offsets.count > 20 && offsets.count < 50)
            #expect(offsets == Array(Int64(50 - offsets.count)..<50))
            #expect(page.events.allSatisfy { $0.headline != nil })
            #expect(page.events.last?.headline == "N49")
            let sizes = page.events.map { (try? JSONEncoder().encode($0.event).count) ?? 0 }
            #expect(sizes.reduce(0, +) <= data.configuration.maxAnswerBytes + 50 * 1024)
            // The page before it ends where this one starts.
            let first = try #require(offsets.first)
            let older = try await data.events(topic: "news.newest", from: 0, limit: Int(first), for: Self.user)
            #expect(older.events.first?.offset == 0 && older.next <= first)
        }
    }

    @Test("an article answer keeps its newest versions within the budget and says it was truncated")
    func articleByteBudget() async throws {
        try await DataFixture.withBroker { server, client in
            let data = DataFixture.data(server) { $0.maxAnswerBytes = 16_000 }
            let body = String(repeating: "word ", count: 600)
            for version in 0..<5 {
                try await DataFixture.publish([try DataFixture.article("urn:big", headline: "V\(version)", body: body)],
                                              to: "news.versions", with: client)
            }
            try await DataFixture.publish([try DataFixture.article("urn:small", headline: "Small")],
                                          to: "news.versions", with: client)
            let article = try await data.article(uri: "urn:big", for: Self.user)
            #expect(article.truncated)
            #expect(!article.versions.isEmpty && article.versions.count < 5)
            // The newest ones, oldest first.
            let kept = article.versions.count
            #expect(article.versions.map(\.offset) == Array(Int64(5 - kept)..<5))
            #expect(article.versions.last?.headline == "V4")
            let byURI = try await data.events(topic: "news.versions", uri: "urn:big", for: Self.user)
            #expect(byURI.events.map(\.offset) == article.versions.map(\.offset))

            let small = try await data.article(uri: "urn:small", for: Self.user)
            #expect(!small.truncated && small.versions.map(\.headline) == ["Small"])
            let encoded = String(decoding: try JSONEncoder().encode(small), as: UTF8.self)
            #expect(encoded.contains("\"truncated\":false"))
        }
    }

    @Test("the newest-N page reads once more from the new start when retention moved it after the snapshot")
    func newestPageAfterRetention() async throws {
        try await DataFixture.withBroker(configure: {
            $0.log.segmentBytes = 1024
            $0.log.retentionBytes = 2000
            $0.retentionCheckSeconds = 3600
        }) { server, client in
            for index in 0..<6 {
                try await DataFixture.publish(
                    [try DataFixture.article("urn:r:\(index)", headline: "R\(index)",
                                             body: String(repeating: "retained ", count: 100))],
                    to: "news.moving", with: client)
            }
            // Small: it stays in the active segment, which retention keeps.
            try await DataFixture.publish([try DataFixture.article("urn:r:6", headline: "R6")], to: "news.moving",
                                          with: client)
            let log = try #require(server.topicStore?.log("news.moving"))
            // The page's first offset as chosen from the snapshot, before retention moves the start.
            let end = log.readableEndOffset
            let first = max(log.startOffset, end - 50)
            let removed = try await NIOThreadPool.singleton.runIfActive { try log.applyRetention() }
            #expect(removed > 0)
            let start = log.startOffset
            #expect(start > first)

            let page = try await BrokerConsoleData.page(of: log, first: first, end: end, limit: 50, maxBytes: 1 << 22,
                                                        newest: true)
            #expect(page.start == start)
            #expect(page.records.first?.offset == start && page.records.last?.offset == end - 1)
            #expect(page.next == end)
            // A page the user asked for by offset is refused as before.
            let paged = await dataError {
                _ = try await BrokerConsoleData.page(of: log, first: first, end: end, limit: 50, maxBytes: 1 << 22,
                                                     newest: false)
            }
            #expect(paged?.code == .offsetOutOfRange)
        }
    }
}

@Suite("Console data: damaged stored ranges", .timeLimit(.minutes(1)))
struct DataDamageTests {
    /// A log of four one-batch segments (offsets 0-2, 3-5, 6-8, 9-11) whose second segment's batch has a flipped
    /// byte, reopened so that the damage is found on the first read.
    static func withDamagedLog(_ body: (TopicLog) async throws -> Void) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("telex-console-damage-\(UUID())")
            .path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var configuration = ServerConfiguration(port: 0, dataDirectory: directory).log
        configuration.segmentBytes = 1024
        configuration.fsync = .never
        var logger = Logger(label: "telex.test.console-damage")
        logger.logLevel = .critical
        let writer = try TopicLog(topic: "news.damaged", directory: directory + "/log", configuration: configuration,
                                  logger: logger)
        for batch in 0..<4 {
            var builder = RecordBatchBuilder()
            for index in 0..<3 {
                let offset = batch * 3 + index
                let event = try DataFixture.article("urn:d:\(offset)", headline: "D\(offset)",
                                                    body: String(repeating: "damage ", count: 60))
                let record = event.record()
                builder.append(timestamp: record.timestamp, key: record.key, headers: record.headers,
                               value: record.value)
            }
            _ = try writer.append(builder.build(codec: .none))
        }
        try writer.close()
        let names = try FileManager.default.contentsOfDirectory(atPath: directory + "/log")
        let second = try #require(names.first { $0.hasSuffix(".log") && Int64($0.dropLast(4)) == 3 })
        let path = directory + "/log/" + second
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[RecordBatchHeader.size + 10] ^= 0x40
        try bytes.write(to: URL(fileURLWithPath: path))
        let log = try TopicLog(topic: "news.damaged", directory: directory + "/log", configuration: configuration,
                               logger: logger)
        try await body(log)
        try log.close()
    }

    @Test("a damaged range shows as one note naming the lost offsets; pages and tails read on after it")
    func pagesReadPastDamage() async throws {
        try await Self.withDamagedLog { log in
            let end = log.readableEndOffset
            #expect(end == 12)
            // A read starting in the damage: one note for offsets 3-5, then on from 6.
            let (notes, next) = try await StoredEvents.records(of: log, from: 3, end: end, limit: 1,
                                                               maxBytes: 1 << 22)
            #expect(notes.map(\.offset) == [3])
            #expect(next == 6)
            let note = try #require(notes.first).eventJSON
            #expect(note.type == "" && note.uri == "" && note.headline == nil && note.offset == 3)
            let text = note.event.stringValue ?? ""
            #expect(text.contains("offsets 3-5 of news.damaged") && text.contains("telexd verify"))
            let (rest, after) = try await StoredEvents.records(of: log, from: next, end: end, limit: 50,
                                                               maxBytes: 1 << 22)
            #expect(rest.map(\.offset) == Array(6..<12))
            #expect(after == 12)
            // A page reaching it (as a tail resuming before it does) shows the note in its place and goes on.
            let (all, last) = try await StoredEvents.records(of: log, from: 0, end: end, limit: 50, maxBytes: 1 << 22)
            #expect(all.map(\.offset) == [0, 1, 2, 3, 6, 7, 8, 9, 10, 11])
            #expect(all[3].lostOffsets == 3..<6 && last == 12)
            // The newest page over it too.
            let newest = try await BrokerConsoleData.page(of: log, first: 2, end: end, limit: 10, maxBytes: 1 << 22,
                                                          newest: true)
            #expect(newest.records.map(\.offset) == [2, 3, 6, 7, 8, 9, 10, 11] && newest.next == 12)
        }
    }

    @Test("a damaged article version shows at its append time, not at time 0")
    func damagedVersionKeepsItsTime() async throws {
        try await Self.withDamagedLog { log in
            let versions = try log.versions(of: "urn:d:4", below: log.readableEndOffset)
            let version = try #require(versions.first)
            #expect(version.offset == 4 && version.appendTime > 0)
            let (records, dropped) = try await StoredEvents.newestRecords(of: [(log, version)], maxBytes: 1 << 22)
            #expect(dropped == 0)
            let stored = try #require(records.first)
            #expect(stored.record == nil && stored.problem != nil)
            #expect(stored.brokerTime == version.appendTime)
        }
    }
}

@Suite("Console data: reads below the local log, from the archive", .timeLimit(.minutes(1)))
struct DataArchiveTests {
    @Test("more concurrent reads of uncached archived segments than the thread pool has threads all complete")
    func archivedReadsDoNotHoldThePool() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("telex-console-tier-\(UUID())")
            .path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let tier = try PoolArchiveTier(directory: directory)
        try await DataFixture.withBroker(configure: {
            $0.log.segmentBytes = 1024
            $0.log.fsync = .never
            $0.log.localRetentionBytes = 0
            $0.archive = tier
        }) { server, client in
            // A segment holds two of these; more archived segments than the pool has threads.
            let records = 2 * max(6, 2 * System.coreCount + 2) + 1
            for index in 0..<records {
                try await DataFixture.publish(
                    [try DataFixture.article("urn:a:\(index)", headline: "A\(index)",
                                             body: String(repeating: "archived ", count: 100))],
                    to: "news.archived", with: client)
            }
            let log = try #require(server.topicStore?.log("news.archived"))
            let archived = try await NIOThreadPool.singleton.runIfActive { () throws -> [ArchivedSegment] in
                try log.sync()
                try tier.archive(log)
                try log.applyRetention()
                return tier.archivedSegments(of: "news.archived")
            }
            #expect(archived.count > System.coreCount)
            #expect(log.localStartOffset > 0 && log.startOffset == 0)

            let data = DataFixture.data(server)
            // Each read needs its own segment fetched: the fetch's file copy runs on the same thread pool.
            let firsts = try await withThrowingTaskGroup(of: Int64?.self) { group in
                for segment in archived {
                    group.addTask {
                        try await data.events(topic: "news.archived", from: segment.baseOffset, limit: 1,
                                              for: DataFixture.anonymous).events.first?.offset
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(firsts.compactMap { $0 }.sorted() == archived.map(\.baseOffset))
            #expect(tier.fetches == archived.count)
        }
    }
}

/// An archive tier over local directories whose `fetch` copies the file on `NIOThreadPool.singleton`, as the S3
/// tier's file writes do (`ArchiveFiles.offload`).
final class PoolArchiveTier: ArchiveTier {
    let archiveDirectory: String
    let cacheDirectory: String
    private let listed = Mutex<[String: [ArchivedSegment]]>([:])
    private let fetched = Mutex(0)

    init(directory: String) throws {
        archiveDirectory = directory + "/archive"
        cacheDirectory = directory + "/cache"
        for path in [archiveDirectory, cacheDirectory] {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
    }

    var fetches: Int { fetched.withLock { $0 } }

    /// Copies every sealed segment of `log` into the archive and lists it.
    func archive(_ log: TopicLog) throws {
        var segments: [ArchivedSegment] = []
        for file in log.sealedSegmentFiles() {
            let copy = archiveDirectory + "/\(log.topic)-\(file.baseOffset).log"
            try FileManager.default.copyItem(atPath: file.logPath, toPath: copy)
            segments.append(ArchivedSegment(baseOffset: file.baseOffset, nextOffset: file.nextOffset, bytes: file.bytes,
                                            rewrites: file.rewrites, lastAppendTime: file.lastAppendTime))
        }
        listed.withLock { $0[log.topic] = segments }
    }

    func archivedSegments(of topic: String) -> [ArchivedSegment] { listed.withLock { $0[topic] ?? [] } }

    func cachedLogFile(topic: String, baseOffset: Int64) -> String? {
        let path = cacheDirectory + "/\(topic)-\(baseOffset).log"
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }

    func fetch(topic: String, baseOffset: Int64) async throws(TelexError) -> String {
        fetched.withLock { $0 += 1 }
        let source = archiveDirectory + "/\(topic)-\(baseOffset).log"
        let path = cacheDirectory + "/\(topic)-\(baseOffset).log"
        do {
            try await NIOThreadPool.singleton.runIfActive {
                try? FileManager.default.removeItem(atPath: path)
                try FileManager.default.copyItem(atPath: source, toPath: path)
            }
        } catch {
            throw TelexError(.storageFailure, "test tier could not fetch \(topic) \(baseOffset): \(error)")
        }
        return path
    }
}
