import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

/// The in-memory layout of the key index (Protocol/STORAGE.md §14.1): chunks of a growing segment, hash-ordered
/// sealed tables, keys compared as Strings, and the rebuild hook compaction uses.
@Suite("Key index layout", .timeLimit(.minutes(1)))
struct KeyIndexLayoutTests {
    /// Appends `batches` batches of `size` records with keys from `keys` (every seventh a tombstone), recording
    /// them in `model`.
    func append(
        _ log: TopicLog, batches: Int, size: Int, keys: [String], model: inout KeyIndexModel, start: Int = 0
    ) throws {
        for batch in 0..<batches {
            let records: [KeyedRecord] = (0..<size).map { index in
                let n = start + batch * size + index
                return (keys[n * 7919 % keys.count], n % 7 == 0 ? "article.deleted" : "news.article.published")
            }
            let result = try log.append(makeKeyedBatch(records))
            let stored = try #require(try log.read(from: result.baseOffset, maxBytes: 1))
            model.appended(records, at: result.baseOffset, appendTime: header(try stored.readBytes()).appendTime)
        }
    }

    func expectMatches(_ log: TopicLog, _ model: KeyIndexModel, keys: [String]) throws {
        let end = log.readableEndOffset
        for probe in [end, end / 3, 4096, 4097, 0] {
            #expect(try log.latestVersions(below: probe) == model.latest(below: probe, from: 0), "below \(probe)")
            for key in keys.prefix(8) {
                #expect(try log.versions(of: key, below: probe) == model.versions(of: key, below: probe, from: 0))
            }
        }
    }

    @Test("a growing segment past several chunks answers like the model, before and after it is sealed")
    func chunks() throws {
        try withTemporaryDirectorySync { directory in
            let keys = (0..<500).map { "urn:telex:article:\($0)" }
            let log = try openLog(directory, testConfiguration(segmentBytes: 64 << 20))
            var model = KeyIndexModel()
            try append(log, batches: 25, size: 200, keys: keys, model: &model)
            #expect(log.keyIndexCounts.map(\.records) == [5_000])
            try expectMatches(log, model, keys: keys)
            // A query holds the chunks it took; appends after it copy at most the last one and do not change it.
            let before = try log.versions(of: keys[0], below: log.readableEndOffset)
            try append(log, batches: 3, size: 200, keys: keys, model: &model, start: 5_000)
            #expect(try log.versions(of: keys[0], below: 5_000) == before)
            try expectMatches(log, model, keys: keys)
            try log.close()
            let reopened = try openLog(directory, testConfiguration(segmentBytes: 1 << 16))
            try expectMatches(reopened, model, keys: keys)
            try append(reopened, batches: 10, size: 200, keys: keys, model: &model, start: 5_600)
            try reopened.sync()
            #expect(reopened.segmentCount > 2)
            try expectMatches(reopened, model, keys: keys)
            try reopened.close()
        }
    }

    @Test("keys that are equal as Strings but not as bytes are one key, growing or sealed")
    func stringEquality() throws {
        try withTemporaryDirectorySync { directory in
            // U+212A KELVIN SIGN is canonically "K"; "é" precomposed and decomposed are one String.
            let spellings = [("K", "\u{212A}"), ("caf\u{E9}", "cafe\u{301}")]
            let log = try openLog(directory, testConfiguration(segmentBytes: 1 << 20))
            for (plain, other) in spellings {
                _ = try log.append(makeKeyedBatch([(plain, "news.article.published"), ("x", "news.article.published")]))
                _ = try log.append(makeKeyedBatch([(other, "article.deleted")]))
            }
            func check(_ log: TopicLog, keyCount: Int) throws {
                let end = log.readableEndOffset
                for (index, (plain, other)) in spellings.enumerated() {
                    let offsets = [Int64(index * 3), Int64(index * 3 + 2)]
                    #expect(try log.versions(of: plain, below: end).map(\.offset) == offsets)
                    #expect(try log.versions(of: other, below: end).map(\.offset) == offsets)
                    #expect(try log.latestVersions(below: end)[plain]?.offset == offsets[1])
                }
                #expect(try log.latestVersions(below: log.readableEndOffset).count == keyCount)
            }
            try check(log, keyCount: 3)
            try log.close()
            // Reopened with tiny segments the log rolls; the old segment is sealed into a hash-ordered table.
            let reopened = try openLog(directory, testConfiguration(segmentBytes: 100))
            _ = try reopened.append(makeKeyedBatch([("y", "news.article.published")]))
            try reopened.sync()
            #expect(reopened.segmentCount == 2)
            try check(reopened, keyCount: 4)
            try reopened.close()
        }
    }
}
