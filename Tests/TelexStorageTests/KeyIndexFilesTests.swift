import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

@Suite("Key index files: crashes, retention, inspect, indexing off", .timeLimit(.minutes(1)))
struct KeyIndexFilesTests {
    /// Appends batches of keys (with repeats and tombstones) from a seeded generator; returns the keys used.
    func appendSome(_ log: TopicLog, _ count: Int, seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        for _ in 0..<count {
            let records: [KeyedRecord] = (0..<Int.random(in: 1...3, using: &random)).map { _ in
                let key = KeyIndexTests.keys.randomElement(using: &random)!
                return (key, Int.random(in: 0..<5, using: &random) == 0 ? "article.deleted" : "news.article.updated")
            }
            _ = try log.append(makeKeyedBatch(records, codec: Bool.random(using: &random) ? .none : .zlib))
        }
    }

    @Test("a copy of the data directory taken while appends run (what kill -9 leaves) answers the same")
    func crashCopy() throws {
        try withTemporaryDirectorySync { directory in
            let configuration = testConfiguration(segmentBytes: 1500, fsync: .never)
            let log = try openLog(directory, configuration)
            try appendSome(log, 30, seed: 3)
            // Wait for the sealing rounds the rolls queued, as a running broker would have done by now; the
            // copy is then taken without closing (no final fsync, no producer snapshot, active `.keys` absent).
            try log.sync()
            try appendSome(log, 5, seed: 4)
            let acknowledged = log.endOffset
            let ends = [acknowledged, acknowledged / 3]
            let before = try keyAnswers(log, keys: KeyIndexTests.keys, ends: ends)
            let copy = directory + "/crash"
            // Rounds still queued would create and rename files under the copy; the appends are all written.
            log.syncQueue.sync {}
            try FileManager.default.copyItem(atPath: logDirectory(directory), toPath: copy)
            // The crash also took away a `.keys` being written (its sealing round had not run).
            let bases = try segmentBases(directory)
            try? FileManager.default.removeItem(atPath: copy + "/" + Segment.fileName(bases[bases.count - 2], ".keys"))
            let recovered = try TopicLog(topic: "news.wire", directory: copy, configuration: configuration,
                                         logger: makeLogger())
            #expect(recovered.endOffset == acknowledged)
            #expect(try keyAnswers(recovered, keys: KeyIndexTests.keys, ends: ends) == before)
            try recovered.close()
            try log.close()
        }
    }

    @Test("retention deletes a segment's .keys with it; deleting the topic removes them all")
    func retention() throws {
        try withTemporaryDirectorySync { directory in
            let store = try TopicStore(directory: directory + "/data",
                                       configuration: testConfiguration(segmentBytes: 1500, retentionBytes: 3000),
                                       logger: makeLogger())
            let log = try store.createLog("news.wire").log
            try appendSome(log, 40, seed: 5)
            try log.sync()
            let topicDirectory = directory + "/data/topics/news.wire"
            let keysFiles = { try FileManager.default.contentsOfDirectory(atPath: topicDirectory)
                .filter { $0.hasSuffix(".keys") }.sorted() }
            let first = try keysFiles().first
            #expect(first == Segment.fileName(0, ".keys"))
            #expect(try log.applyRetention() > 0)
            let start = log.startOffset
            #expect(try keysFiles().allSatisfy { Int64($0.dropLast(5))! >= start })
            #expect(try log.latestVersions(below: log.endOffset).values.allSatisfy { $0.offset >= start })
            #expect(try store.deleteLog("news.wire"))
            #expect(!FileManager.default.fileExists(atPath: topicDirectory))
            try store.close()
        }
    }

    @Test("telexd inspect shows each .keys file's keys, versions and tombstones")
    func inspect() throws {
        try withTemporaryDirectorySync { directory in
            let configuration = testConfiguration(segmentBytes: 1500)
            let log = try openLog(directory, configuration)
            for index in 0..<30 {
                let type = index % 10 == 9 ? "article.deleted" : "news.article.updated"
                _ = try log.append(makeKeyedBatch([("urn:a:\(index % 4)", type), ("", "news.note")]))
            }
            let counts = log.keyIndexCounts
            try log.close()
            let data = try makeDataDirectory(directory)
            var found: [StorageInspector.KeyIndexDescription] = []
            try StorageInspector.inspect(dataDirectory: data) { finding in
                if case .keyIndex(let keys) = finding { found.append(keys) }
            }
            #expect(found.count == counts.count - 1, "every sealed segment has one")
            for (description, count) in zip(found, counts) {
                #expect(description.keyIndex == Segment.fileName(count.baseOffset, ".keys"))
                #expect(description.versions == count.records)
                #expect(description.tombstones == count.tombstones)
                #expect((description.keys ?? 0) <= 4)
            }
            #expect(counts.reduce(0) { $0 + $1.records } == 30)
            #expect(counts.reduce(0) { $0 + $1.tombstones } == 3)
            var lines: [String] = []
            try StorageInspector.dump(dataDirectory: data) { lines.append($0) }
            #expect(lines.contains {
                $0.hasPrefix("{\"keyIndex\":\"00000000000000000000.keys\",\"keys\":4,")
                    && $0.contains("\"topic\":\"news.wire\"")
            }, "\(lines.filter { $0.contains("keyIndex") })")
        }
    }

    @Test("with indexKeys off nothing is indexed or written and queries answer empty")
    func indexingOff() throws {
        try withTemporaryDirectorySync { directory in
            var configuration = testConfiguration(segmentBytes: 1500)
            configuration.indexKeys = false
            var log = try openLog(directory, configuration)
            try appendSome(log, 30, seed: 6)
            #expect(try log.latestVersions(below: log.endOffset).isEmpty)
            #expect(try log.versions(of: KeyIndexTests.keys[0], below: log.endOffset).isEmpty)
            try log.close()
            #expect(try FileManager.default.contentsOfDirectory(atPath: logDirectory(directory))
                .allSatisfy { !$0.hasSuffix(".keys") })
            // Turned on again: the missing `.keys` files are rebuilt.
            configuration.indexKeys = true
            log = try openLog(directory, configuration)
            #expect(try log.versions(of: KeyIndexTests.keys[0], below: log.endOffset).count > 1)
            try log.close()
            #expect(try segmentBases(directory).dropLast().allSatisfy {
                FileManager.default.fileExists(atPath: segmentPath(directory, $0, ".keys"))
            })
        }
    }
}
