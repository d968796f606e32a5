import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

@Suite("Key table cache: sealed tables loaded on demand", .timeLimit(.minutes(1)))
struct KeyTableCacheTests {
    static let keys = KeyIndexTests.keys + ["urn:telex:article:absent"]

    /// A log of many small sealed segments, with repeats and tombstones, all sealed (`sync`).
    func filledLog(_ directory: String, cacheBytes: Int) throws -> TopicLog {
        var configuration = testConfiguration(segmentBytes: 1500)
        configuration.keyTableCacheBytes = cacheBytes
        let log = try openLog(directory, configuration)
        try KeyIndexFilesTests().appendSome(log, 60, seed: 11)
        try log.sync()
        return log
    }

    /// The bytes of the largest sealed table of `log`.
    func largestTable(_ log: TopicLog) -> Int {
        log.keySnapshots(below: log.endOffset).compactMap { snapshot in
            snapshot.summary == nil ? nil : try! log.keyIndex(snapshot)?.sealed.map(KeyTableCache.bytes(of:))
        }.max() ?? 0
    }

    @Test("answers are the same with no cache, a cache smaller than the tables, a cold one and a warm one")
    func evictionAndReload() throws {
        try withTemporaryDirectorySync { directory in
            let log = try filledLog(directory, cacheBytes: 64 << 20)
            let sealed = log.keySnapshots(below: log.endOffset).filter { $0.summary != nil }.count
            #expect(sealed >= 5)
            let ends = [log.endOffset, log.endOffset / 2, 1]
            let cold = try keyAnswers(log, keys: Self.keys, ends: ends)
            #expect(log.keyTables.count == sealed)
            let warm = try keyAnswers(log, keys: Self.keys, ends: ends)
            #expect(warm == cold)
            log.keyTables.removeAll()
            #expect(try keyAnswers(log, keys: Self.keys, ends: ends) == cold)
            let table = largestTable(log)
            try log.close()
            // The same log reopened with room for two tables (constant eviction), and with none.
            for bytes in [2 * table, 0] {
                var configuration = testConfiguration(segmentBytes: 1500)
                configuration.keyTableCacheBytes = bytes
                let reopened = try openLog(directory, configuration)
                #expect(try keyAnswers(reopened, keys: Self.keys, ends: ends) == cold)
                #expect(reopened.keyTables.count <= (bytes == 0 ? 0 : 2))
                try reopened.close()
            }
        }
    }

    @Test("a sealed table that can be neither loaded nor rebuilt fails key queries and purge; it is never left out")
    func unreadableTableFailsQueries() async throws {
        try await withTemporaryDirectory { directory in
            let log = try filledLog(directory, cacheBytes: 0)
            let key = Self.keys[0]
            let expected = try log.versions(of: key, below: log.endOffset)
            #expect(!expected.isEmpty)
            let topicDirectory = log.directory
            for name in try FileManager.default.contentsOfDirectory(atPath: topicDirectory) where name.hasSuffix(".keys") {
                try FileManager.default.removeItem(atPath: topicDirectory + "/" + name)
            }
            let faults = FaultInjectingFileSystem()
            faults.fail(.read, on: ".log", with: EIO, count: 1_000_000)
            try await withFileSystem(faults, under: directory) {
                #expect(throws: TelexError.self) { try log.versions(of: key, below: log.endOffset) }
                #expect(throws: TelexError.self) { try log.latestVersions(below: log.endOffset) }
                #expect(throws: TelexError.self) { try log.purge(key: key) }
            }
            // Readable again: the tables are rebuilt and the answer is whole.
            #expect(try log.versions(of: key, below: log.endOffset) == expected)
            try log.close()
        }
    }

    @Test("the cache never holds more than its capacity, evicting the least recently used table first")
    func bound() throws {
        try withTemporaryDirectorySync { directory in
            let probe = try filledLog(directory, cacheBytes: 0)
            let sizes = try probe.keySnapshots(below: probe.endOffset).filter { $0.summary != nil }
                .map { KeyTableCache.bytes(of: try probe.keyIndex($0)!.sealed!) }
            #expect(probe.keyTableCacheBytes == 0 && probe.keyTables.count == 0)
            try probe.close()
            // Room for the first table and the larger of the next two.
            let capacity = sizes[0] + max(sizes[1], sizes[2])
            var configuration = testConfiguration(segmentBytes: 1500)
            configuration.keyTableCacheBytes = capacity
            let log = try openLog(directory, configuration)
            let snapshots = log.keySnapshots(below: log.endOffset).filter { $0.summary != nil }
            let ids = snapshots.map { $0.summary!.id }
            _ = try log.keyIndex(snapshots[0])
            _ = try log.keyIndex(snapshots[1])
            #expect(log.keyTableCacheBytes == sizes[0] + sizes[1])
            _ = log.keyTables.table(ids[0])
            _ = try log.keyIndex(snapshots[2])
            #expect(log.keyTables.table(ids[1]) == nil)
            #expect(log.keyTables.table(ids[0]) != nil && log.keyTables.table(ids[2]) != nil)
            #expect(log.keyTableCacheBytes == sizes[0] + sizes[2])
            for snapshot in snapshots {
                _ = try log.keyIndex(snapshot)
                #expect(log.keyTableCacheBytes <= capacity)
            }
            _ = try keyAnswers(log, keys: Self.keys, ends: [log.endOffset])
            #expect(log.keyTableCacheBytes <= capacity && log.keyTableCacheBytes > 0)
            try log.close()
        }
    }

    @Test("a .keys deleted or damaged after sealing is rebuilt from its segment when a query needs it")
    func rebuiltOnDemand() throws {
        try withTemporaryDirectorySync { directory in
            let handler = RecordingLogHandler()
            var configuration = testConfiguration(segmentBytes: 1500)
            configuration.keyTableCacheBytes = 0
            let log = try openLog(directory, configuration, handler: handler)
            try KeyIndexFilesTests().appendSome(log, 60, seed: 12)
            try log.sync()
            let ends = [log.endOffset, log.endOffset / 2]
            let before = try keyAnswers(log, keys: Self.keys, ends: ends)
            let bases = try segmentBases(directory)
            let path = { (base: Int64) in logDirectory(directory) + "/" + Segment.fileName(base, ".keys") }
            let written = try Data(contentsOf: URL(fileURLWithPath: path(bases[1])))
            try FileManager.default.removeItem(atPath: path(bases[1]))
            var damaged = try Data(contentsOf: URL(fileURLWithPath: path(bases[2])))
            damaged[damaged.count / 2] ^= 0xFF
            try damaged.write(to: URL(fileURLWithPath: path(bases[2])))
            #expect(try keyAnswers(log, keys: Self.keys, ends: ends) == before)
            // Rewritten as the sealing round wrote it (a table's file is unique).
            #expect(try Data(contentsOf: URL(fileURLWithPath: path(bases[1]))) == written)
            let repaired = try Data(contentsOf: URL(fileURLWithPath: path(bases[2])))
            #expect(repaired != damaged)
            var buffer = ByteBuffer(bytes: repaired)
            #expect(throws: Never.self) { _ = try KeyTableFile.decode(buffer, path: path(bases[2])) }
            buffer.clear()
            #expect(handler.messages.filter { $0.contains("rebuilding key index") }.count >= 2)
            try log.close()
            // The reopened log trusts the rewritten files: nothing to rebuild.
            let handlerAfter = RecordingLogHandler()
            let reopened = try openLog(directory, configuration, handler: handlerAfter)
            #expect(try keyAnswers(reopened, keys: Self.keys, ends: ends) == before)
            #expect(!handlerAfter.messages.contains { $0.contains("rebuilding") })
            try reopened.close()
        }
    }
}
