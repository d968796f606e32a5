import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

@Suite("Compaction: segments rewritten keeping each key's newest record", .timeLimit(.minutes(1)))
struct CompactionTests {
    @Test("the rewriter keeps exactly the chosen records at their offsets, in valid batches, copying whole batches")
    func rewriterProperties() throws {
        var random = SeededGenerator(seed: 12)
        var rewriter = SegmentRewriter(limits: .init())
        for trial in 0..<200 {
            let versions = randomArticleBatches(count: 1, keys: 5, seed: UInt64(trial))[0]
                + randomArticleBatches(count: 1, keys: 5, seed: UInt64(trial + 1000))[0]
            var batch = makeArticleBatch(versions, codec: trial % 2 == 0 ? .none : .zlib,
                                         timestamp: 1_700_000_000_000 + Int64(trial))
            let base = Int64.random(in: 0..<1_000_000, using: &random)
            RecordBatch.assign(baseOffset: base, appendTime: 1_700_000_123_456, in: &batch, at: 0)
            let keep = versions.map { _ in Bool.random(using: &random) }
            var output = ByteBuffer()
            try rewriter.rewrite(batch, keep: keep, into: &output, context: "trial \(trial)")
            if keep.allSatisfy({ $0 }) { #expect(output == batch) }
            var found: [Int64: Record] = [:]
            for rewritten in try RecordBatch.split(output) {
                let header = try RecordBatch.validate(rewritten)
                #expect(header.appendTime == 1_700_000_123_456)
                #expect(header.codec == RecordBatchHeader.peek(batch, at: 0)!.codec)
                if rewritten != batch {
                    #expect(header.producerID == 0 && header.producerSequence == -1)
                }
                for (index, record) in try RecordBatch.decodeRecords(rewritten).records.enumerated() {
                    found[header.baseOffset + Int64(index)] = record
                }
            }
            let original = try RecordBatch.decodeRecords(batch).records
            let expected = Dictionary(uniqueKeysWithValues: keep.indices.filter { keep[$0] }.map {
                (base + Int64($0), original[$0])
            })
            #expect(found == expected, "trial \(trial) keep \(keep)")
        }
    }

    @Test("compaction keeps each key's newest record, unexpired tombstones and keyless records, across a reopen")
    func keepsTheModel() async throws {
        try await withTemporaryDirectory { directory in
            for seed in UInt64(1)...4 {
                let path = directory + "/\(seed)"
                let log = try openLog(path, testConfiguration(segmentBytes: 1024))
                let published = try publish(randomArticleBatches(count: 60, keys: 8, seed: seed), to: log)
                // Seals every rolled segment: only sealed ones are compacted.
                try log.sync()
                let before = log.sizeInBytes
                let active = log.state.withLock { $0.segments.last!.baseOffset }
                // Tombstones are young: kept.
                let report = try log.compact(tombstoneRetentionMilliseconds: 3_600_000)
                #expect(report.skipped.isEmpty)
                #expect(!report.rewrites.isEmpty)
                #expect(log.sizeInBytes == before - report.bytesReclaimed)
                // Records in the active segment are never removed.
                let sealedKept = modelKept(published, dropTombstones: false).union(published.keys.filter { $0 >= active })
                try expectHolds(log, published, kept: sealedKept)
                // A second round with nothing newer finds nothing to remove.
                #expect(try log.compact(tombstoneRetentionMilliseconds: 3_600_000).rewrites.isEmpty)
                // Expired tombstones go too.
                _ = try log.compact(now: FileIO.nowMilliseconds() + 7_200_000, tombstoneRetentionMilliseconds: 3_600_000)
                let expired = modelKept(published, dropTombstones: true).union(published.keys.filter { $0 >= active })
                try expectHolds(log, published, kept: expired)
                // The key index forgets what was removed: history and latest replay name only what is stored.
                try expectIndexHolds(log, published, kept: expired)
                let end = log.endOffset
                try log.close()

                let handler = RecordingLogHandler()
                let reopened = try openLog(path, testConfiguration(segmentBytes: 1024), handler: handler)
                #expect(reopened.endOffset == end)
                // The rewritten segments' indexes are trusted, not rebuilt.
                #expect(!handler.messages.contains("rebuilding index"), "\(handler.messages)")
                try expectHolds(reopened, published, kept: expired)
                #expect(!handler.messages.contains("rebuilding key index"), "\(handler.messages)")
                try expectIndexHolds(reopened, published, kept: expired)
                // A purge removes a key's every version, from the files and the index.
                let purgedKey = try #require(published.first { expired.contains($0.key) && !$0.value.key.isEmpty }?.value.key)
                let purged = try reopened.purge(key: purgedKey).flatMap(\.removedOffsets)
                #expect(!purged.isEmpty)
                #expect(Set(purged) == Set(published.filter { $0.value.key == purgedKey }.map(\.key)).intersection(expired))
                #expect(try reopened.versions(of: purgedKey, below: reopened.readableEndOffset).isEmpty)
                try expectIndexHolds(reopened, published, kept: expired.subtracting(purged))
                try expectHolds(reopened, published, kept: expired.subtracting(purged))
                // Appends go on at the end, after the gaps.
                let appended = try reopened.append(makeArticleBatch([ArticleVersion(key: "k", tombstone: false, value: "v")]))
                #expect(appended.baseOffset == end)
                try reopened.close()
            }
        }
    }

    @Test("a read from a removed offset starts at the next kept one, also across a segment emptied by compaction")
    func readsLandOnTheNextKeptOffset() async throws {
        try await withTemporaryDirectory { directory in
            let log = try openLog(directory, testConfiguration(segmentBytes: 512))
            // Segments full of versions of one key, then its final version: every earlier segment empties.
            var batches = (0..<30).map { [ArticleVersion(key: "urn:a", tombstone: false, value: "version \($0)")] }
            batches.append([ArticleVersion(key: "", tombstone: false, value: "keyless")])
            batches.append([ArticleVersion(key: "urn:a", tombstone: false, value: "final")])
            let published = try publish(batches, to: log)
            // Roll so the final version sits in a sealed segment too.
            #expect(try log.rollIfIdle(now: FileIO.nowMilliseconds() + 7_200_000))
            try log.sync()
            _ = try log.compact(tombstoneRetentionMilliseconds: 0)
            let kept = modelKept(published, dropTombstones: false)
            try expectHolds(log, published, kept: kept)
            #expect(kept == [30, 31])
            for offset in 0..<log.endOffset {
                let slice = try log.read(from: offset, maxBytes: 1)
                if offset < 32 {
                    let first = try #require(slice).firstOffset
                    #expect(first == kept.filter { $0 >= offset }.min(), "from \(offset)")
                } else {
                    #expect(slice == nil)
                }
            }
            // Emptied segments stay (an empty `.log` and their marker) so the offsets before them are not lost.
            let bases = try segmentBases(directory)
            #expect(bases.count == log.segmentCount)
            for base in bases where base < 30 {
                #expect(FileManager.default.fileExists(atPath: segmentPath(directory, base, ".compacted")))
            }
            #expect(try log.offset(atOrAfter: 0) == 30)
            try log.close()
        }
    }

    @Test("verify finds nothing wrong with a compacted topic; the inspector lists its batches and markers")
    func verifyAndInspect() async throws {
        try await withTemporaryDirectory { directory in
            let topics = directory + "/topics"
            let log = try TopicLog(topic: "frontpage.home", directory: topics + "/frontpage.home",
                                   configuration: testConfiguration(segmentBytes: 1024), logger: makeLogger())
            let published = try publish(randomArticleBatches(count: 40, keys: 4, seed: 9), to: log)
            try log.sync()
            let report = try log.compact(tombstoneRetentionMilliseconds: 0)
            #expect(report.rewrites.count >= 2)
            let kept = try storedRecords(log).keys.sorted()
            #expect(kept.count < published.count)
            try log.close()

            let verified = try StorageVerifier.verify(dataDirectory: directory)
            #expect(verified.findings.isEmpty, "\(verified.findings)")
            var offsets: [Int64] = []
            var markers: [StorageInspector.CompactionDescription] = []
            try StorageInspector.inspect(dataDirectory: directory) { finding in
                switch finding {
                case .batch(let batch): offsets += Array(batch.baseOffset...batch.lastOffset)
                case .compaction(let marker): markers.append(marker)
                case .keyIndex(let keys): #expect(keys.error == nil)
                case .problem(let problem): Issue.record("\(problem)")
                }
            }
            #expect(offsets == kept)
            #expect(markers.map(\.compacted) == report.rewrites.map { Segment.fileName($0.baseOffset, ".compacted") })
            #expect(markers.map(\.recordsRemoved) == report.rewrites.map { Int64($0.removedOffsets.count) })
            #expect(markers.map(\.recordsKept) == report.rewrites.map(\.recordsKept))
            #expect(markers.allSatisfy { $0.rewrites == 1 && $0.error == nil })
        }
    }

    @Test("retention deletes compacted segments and their markers")
    func retentionRemovesMarkers() async throws {
        try await withTemporaryDirectory { directory in
            var configuration = testConfiguration(segmentBytes: 512)
            let log = try openLog(directory, configuration)
            _ = try publish((0..<20).map { [ArticleVersion(key: "urn:a", tombstone: false, value: "version \($0)")] }, to: log)
            try log.sync()
            _ = try log.compact(tombstoneRetentionMilliseconds: 0)
            let bases = try segmentBases(directory)
            #expect(FileManager.default.fileExists(atPath: segmentPath(directory, bases[0], ".compacted")))
            try log.close()
            configuration.retentionBytes = 0
            let limited = try openLog(directory, configuration)
            #expect(try limited.applyRetention() == bases.count - 1)
            let names = try FileManager.default.contentsOfDirectory(atPath: logDirectory(directory))
            #expect(!names.contains { $0.hasSuffix(".compacted") }, "\(names)")
            try limited.close()
        }
    }

    @Test("after a skipped (damaged) segment, an expired tombstone stays: the skipped one may hold what it deletes")
    func tombstoneStaysAfterSkippedSegment() async throws {
        try await withTemporaryDirectory { directory in
            let log = try openLog(directory, testConfiguration(segmentBytes: 1024))
            var batches = (0..<12).map { [ArticleVersion(key: "urn:a", tombstone: false, value: "version \($0)")] }
            batches[1] = [ArticleVersion(key: "urn:b", tombstone: false, value: "b, to be deleted")]
            batches.append([ArticleVersion(key: "urn:b", tombstone: true, value: "{\"uri\":\"urn:b\"}")])
            batches += (12..<24).map { [ArticleVersion(key: "urn:a", tombstone: false, value: "version \($0)")] }
            let published = try publish(batches, to: log)
            let tombstone = try #require(published.first { $0.value.tombstone }?.key)
            try log.close()
            var bytes = try readFile(segmentPath(directory, 0, ".log"))
            bytes[70] ^= 0xFF
            try writeFile(segmentPath(directory, 0, ".log"), bytes)
            let reopened = try openLog(directory, testConfiguration(segmentBytes: 1024))
            try reopened.checkSegment(containing: 1)
            let report = try reopened.compact(now: FileIO.nowMilliseconds() + 7_200_000, tombstoneRetentionMilliseconds: 0)
            #expect(report.skipped.map(\.baseOffset) == [0])
            #expect(tombstone >= (try segmentBases(directory))[1])
            #expect(try storedRecords(reopened)[tombstone] != nil)
            #expect(try storedRecords(reopened)[1].map { String(buffer: $0.record.value) } == "b, to be deleted")
            try reopened.close()
        }
    }

    @Test("a segment with a damaged range is skipped and logged, not rewritten")
    func damagedSegmentSkipped() async throws {
        try await withTemporaryDirectory { directory in
            let log = try openLog(directory, testConfiguration(segmentBytes: 1024))
            _ = try publish((0..<20).map { [ArticleVersion(key: "urn:a", tombstone: false, value: "version \($0)")] }, to: log)
            try log.close()
            // Flip a byte inside the first batch's records of segment 0.
            var bytes = try readFile(segmentPath(directory, 0, ".log"))
            bytes[70] ^= 0xFF
            try writeFile(segmentPath(directory, 0, ".log"), bytes)
            let handler = RecordingLogHandler()
            let reopened = try openLog(directory, testConfiguration(segmentBytes: 1024), handler: handler)
            try reopened.checkSegment(containing: 1)
            let report = try reopened.compact(tombstoneRetentionMilliseconds: 0)
            #expect(report.skipped.map(\.baseOffset) == [0])
            #expect(report.skipped.first?.reason.contains("damaged ranges") == true)
            #expect(handler.messages.contains("compaction skipped segment"))
            #expect(try readFile(segmentPath(directory, 0, ".log")) == bytes)
            try reopened.close()
        }
    }
}
