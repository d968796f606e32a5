import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

@Suite("Local retention that trusts the archive, and replicas adopting its end", .timeLimit(.minutes(1)))
struct ArchiveRetentionTests {
    @Test("retention deletes only segments the archive lists with the same base, bytes and rewrites")
    func deletesOnlyArchived() async throws {
        try await withTemporaryDirectory { directory in
            let archive = try FakeArchiveTier(directory: directory)
            let log = try makeArchivedLog(directory, archive: archive, including: { _ in false })
            let sealed = log.sealedSegmentFiles()
            #expect(sealed.count >= 4)
            // Everything is over the budget, but nothing is archived yet: nothing goes.
            #expect(try log.applyRetention() == 0)

            // The second sealed segment is left out: the first goes, the second stops the pass.
            try archive.archive(log, including: { $0.baseOffset != sealed[1].baseOffset })
            #expect(try log.applyRetention() == 1)
            #expect(log.localStartOffset == sealed[1].baseOffset)
            #expect(try segmentBases(directory).first == sealed[1].baseOffset)
            #expect(log.startOffset == 0)

            // Listed with other bytes (a different file than the local one): still kept, whatever the limits.
            archive.list([ArchivedSegment(baseOffset: sealed[1].baseOffset, nextOffset: sealed[1].nextOffset,
                                          bytes: sealed[1].bytes - 1, rewrites: 0, lastAppendTime: nil)],
                         topic: log.topic)
            #expect(try log.applyRetention() == 0)
            #expect(log.localStartOffset == sealed[1].baseOffset)

            // Once it is archived as it is, it and the archived segments after it go; the active one stays.
            try archive.archive(log, including: { $0.baseOffset == sealed[1].baseOffset })
            #expect(try log.applyRetention() == sealed.count - 1)
            #expect(log.segmentCount == 1)
            #expect(try await deliverAll(log).offsets == Array(0..<40))
            try log.close()
        }
    }

    @Test("a local segment with known damage stays although archived as it is (locally it is served around)")
    func damagedSegmentKept() async throws {
        try await withTemporaryDirectory { directory in
            let archive = try FakeArchiveTier(directory: directory)
            let log = try makeArchivedLog(directory, archive: archive, localRetentionBytes: nil)
            let sealed = log.sealedSegmentFiles()
            try log.close()
            // Rot in the first sealed segment's middle, the same size: the archive still lists it as it is.
            let handle = try FileHandle(forUpdating: URL(fileURLWithPath: sealed[0].logPath))
            try handle.seek(toOffset: UInt64(sealed[0].bytes / 2))
            let byte = try handle.read(upToCount: 1)!
            try handle.seek(toOffset: UInt64(sealed[0].bytes / 2))
            try handle.write(contentsOf: Data([byte[0] ^ 0x5A]))
            try handle.close()
            var configuration = log.configuration
            configuration.localRetentionBytes = 0
            let reopened = try TopicLog(topic: log.topic, directory: directory + "/log", configuration: configuration,
                                        logger: makeLogger(), archive: archive)
            try reopened.checkSegment(containing: sealed[0].baseOffset)
            #expect(try reopened.applyRetention() == 0)
            #expect(reopened.localStartOffset == 0)
            try reopened.close()
        }
    }

    @Test("localRetentionBytes keeps the local log within its budget, oldest archived segments first")
    func localBudget() async throws {
        try await withTemporaryDirectory { directory in
            let archive = try FakeArchiveTier(directory: directory)
            let log = try makeArchivedLog(directory, archive: archive, localRetentionBytes: nil)
            let sealed = log.sealedSegmentFiles()
            // Without a local budget (and no other retention) archived segments stay.
            #expect(try log.applyRetention() == 0)
            try log.close()

            var configuration = log.configuration
            let active = log.sizeInBytes - sealed.reduce(0) { $0 + $1.bytes }
            configuration.localRetentionBytes = active + sealed.last!.bytes
            let limited = try TopicLog(topic: log.topic, directory: directory + "/log", configuration: configuration,
                                       logger: makeLogger(), archive: archive)
            #expect(try limited.applyRetention() == sealed.count - 1)
            #expect(limited.localStartOffset == sealed.last!.baseOffset)
            #expect(limited.sizeInBytes <= configuration.localRetentionBytes!)
            try limited.close()

            // Without an archive the local budget is ignored.
            configuration.localRetentionBytes = 0
            let plain = try TopicLog(topic: log.topic, directory: directory + "/log", configuration: configuration,
                                     logger: makeLogger())
            #expect(try plain.applyRetention() == 0)
            #expect(plain.startOffset == sealed.last!.baseOffset)
            try plain.close()
        }
    }

    @Test("a replica's empty log adopts the archive's end; reads below it go to the archive")
    func adoptArchiveEnd() async throws {
        try await withTemporaryDirectory { directory in
            let archive = try FakeArchiveTier(directory: directory)
            let primary = try makeArchivedLog(directory, archive: archive, localRetentionBytes: nil)
            let end = archive.archivedSegments(of: primary.topic).last!.nextOffset
            try primary.close()

            let replica = try TopicLog(topic: primary.topic, directory: directory + "/replica",
                                       configuration: primary.configuration, logger: makeLogger(), archive: archive)
            #expect(replica.endOffset == 0)
            #expect(try replica.adoptArchiveEnd(end))
            #expect(replica.endOffset == end)
            #expect(replica.localStartOffset == end)
            #expect(replica.startOffset == 0)
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory + "/replica")
                .filter { $0.hasSuffix(".log") } == [Segment.fileName(end, ".log")])
            #expect(try await deliverAll(replica).offsets == Array(0..<end))
            // The same end again, or a log holding records, changes nothing.
            #expect(try !replica.adoptArchiveEnd(end))
            _ = try replica.append(makeBatch(records: 2, seed: 99))
            #expect(try !replica.adoptArchiveEnd(end + 10))
            #expect(replica.endOffset == end + 2)
            try replica.close()

            let reopened = try TopicLog(topic: primary.topic, directory: directory + "/replica",
                                        configuration: primary.configuration, logger: makeLogger(), archive: archive)
            #expect(reopened.localStartOffset == end)
            #expect(try await deliverAll(reopened).offsets == Array(0..<(end + 2)))
            try reopened.close()
        }
    }
}
