import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

/// One record a compaction test publishes: its key ("" for keyless), whether it is a tombstone, and a value that
/// names it uniquely.
struct ArticleVersion: Equatable {
    var key: String
    var tombstone: Bool
    var value: String
}

/// A published batch of `versions`, with codec `codec`.
func makeArticleBatch(_ versions: [ArticleVersion], codec: Codec = .none, timestamp: Int64 = 1_700_000_000_000)
    -> ByteBuffer
{
    var builder = RecordBatchBuilder()
    for (index, version) in versions.enumerated() {
        builder.append(
            timestamp: timestamp + Int64(index), key: ByteBuffer(string: version.key),
            headers: [RecordHeader(name: "ce-type", value: version.tombstone ? "article.deleted" : "article.updated")],
            value: ByteBuffer(string: version.value))
    }
    return builder.build(codec: codec)
}

/// Every stored record of `log` by offset (records of every batch from the start, gaps and all), with the
/// batch's append time.
func storedRecords(_ log: TopicLog) throws -> [Int64: (record: Record, appendTime: Int64)] {
    var records: [Int64: (Record, Int64)] = [:]
    for batch in try readAllBatchesAcrossGaps(log) {
        let (header, decoded) = try RecordBatch.decodeRecords(batch)
        for (index, record) in decoded.enumerated() { records[header.baseOffset + Int64(index)] = (record, header.appendTime) }
    }
    return records
}

/// Every stored batch from the log start to its readable end, slice by slice: like `readAllBatches`, but a
/// slice may start after the offset asked for (a compaction gap).
func readAllBatchesAcrossGaps(_ log: TopicLog) throws -> [ByteBuffer] {
    var batches: [ByteBuffer] = []
    var offset = log.startOffset
    while let slice = try log.read(from: offset, maxBytes: 1, skipDamaged: true) {
        #expect(slice.firstOffset >= offset || slice.nextOffset > offset)
        batches += try RecordBatch.split(try slice.readBytes())
        offset = slice.nextOffset
    }
    return batches
}

/// Publishes `batches` of versions to `log` and returns each record's version by offset.
func publish(_ batches: [[ArticleVersion]], to log: TopicLog, codec: (Int) -> Codec = { $0 % 2 == 0 ? .none : .zlib })
    throws -> [Int64: ArticleVersion]
{
    var published: [Int64: ArticleVersion] = [:]
    for (index, versions) in batches.enumerated() {
        let result = try log.append(makeArticleBatch(versions, codec: codec(index)))
        for (position, version) in versions.enumerated() { published[result.baseOffset + Int64(position)] = version }
    }
    return published
}

/// `count` batches of 1-4 random versions over `keys` keys (some keyless, some tombstones), from `seed`.
func randomArticleBatches(count: Int, keys: Int, seed: UInt64) -> [[ArticleVersion]] {
    var random = SeededGenerator(seed: seed)
    var serial = 0
    return (0..<count).map { _ in
        (0..<Int.random(in: 1...4, using: &random)).map { _ in
            serial += 1
            let keyless = Int.random(in: 0..<10, using: &random) == 0
            let key = keyless ? "" : "urn:article:\(Int.random(in: 0..<keys, using: &random))"
            let tombstone = !keyless && Int.random(in: 0..<6, using: &random) == 0
            return ArticleVersion(key: key, tombstone: tombstone, value: "{\"serial\":\(serial),\"text\":\"\(String(repeating: "x", count: serial % 40))\"}")
        }
    }
}

/// The offsets compaction must keep of `published` (all below the readable end): keyless records, each key's
/// newest record unless it is a tombstone and `dropTombstones`.
func modelKept(_ published: [Int64: ArticleVersion], dropTombstones: Bool) -> Set<Int64> {
    var newest: [String: Int64] = [:]
    for (offset, version) in published where !version.key.isEmpty {
        newest[version.key] = max(newest[version.key] ?? offset, offset)
    }
    return Set(published.compactMap { offset, version in
        if version.key.isEmpty { return offset }
        guard newest[version.key] == offset else { return nil }
        return version.tombstone && dropTombstones ? nil : offset
    })
}

/// Checks that `log` holds exactly the records of `published` at `kept`, each unchanged at its offset, and
/// that reading from any offset lands on the first kept offset at or after it in the sealed segments.
func expectHolds(_ log: TopicLog, _ published: [Int64: ArticleVersion], kept: Set<Int64>,
                 sourceLocation: SourceLocation = #_sourceLocation) throws {
    let stored = try storedRecords(log)
    #expect(Set(stored.keys) == kept, "stored \(stored.keys.sorted()) kept \(kept.sorted())", sourceLocation: sourceLocation)
    for (offset, (record, _)) in stored {
        let version = try #require(published[offset], sourceLocation: sourceLocation)
        #expect(String(buffer: record.value) == version.value, "offset \(offset)", sourceLocation: sourceLocation)
        #expect(String(buffer: record.key) == version.key, sourceLocation: sourceLocation)
    }
}

/// Checks that the key index of `log` names exactly the stored versions of every key of `published` at `kept`.
func expectIndexHolds(_ log: TopicLog, _ published: [Int64: ArticleVersion], kept: Set<Int64>,
                      sourceLocation: SourceLocation = #_sourceLocation) throws {
    let end = log.readableEndOffset
    for key in Set(published.values.map(\.key)) where !key.isEmpty {
        let expected = published.filter { $0.value.key == key && kept.contains($0.key) }.map(\.key).sorted()
        #expect(try log.versions(of: key, below: end).map(\.offset) == expected, "\(key)", sourceLocation: sourceLocation)
        #expect(try log.latestVersions(below: end)[key]?.offset == expected.last, "\(key)", sourceLocation: sourceLocation)
    }
}
