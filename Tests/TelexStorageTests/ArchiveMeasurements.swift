import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

/// Opt-in figures: `TELEX_ARCHIVE_MEASURE=1 swift test --filter ArchiveMeasurements`.
@Suite("Archive read measurements", .enabled(if: ProcessInfo.processInfo.environment["TELEX_ARCHIVE_MEASURE"] == "1"))
struct ArchiveMeasurements {
    @Test("opening a 64 MiB archived segment from the cache (whole-file CRC scan), then delivering it",
          .timeLimit(.minutes(5)))
    func openAndDeliver() async throws {
        try await withTemporaryDirectory { directory in
            let archive = try FakeArchiveTier(directory: directory)
            var configuration = testConfiguration(segmentBytes: 64 << 20)
            configuration.localRetentionBytes = 0
            let writer = try TopicLog(topic: "news.wire", directory: directory + "/log", configuration: configuration,
                                      logger: makeLogger())
            var seed = 0
            while writer.segmentCount < 2 {
                _ = try writer.append(makeBatch(records: 100, seed: seed))
                seed += 1
            }
            try writer.close()
            // For comparison: the CRC check a local sealed segment gets when first served (the same scan).
            let clock = ContinuousClock()
            let reopened = try TopicLog(topic: "news.wire", directory: directory + "/log", configuration: configuration,
                                        logger: makeLogger(), archive: archive)
            let check = try clock.measure { try reopened.checkSegment(containing: 0) }
            try archive.archive(reopened)
            try reopened.applyRetention()
            let log = reopened
            let segment = try #require(archive.archivedSegments(of: log.topic).first)
            // Copy into the cache first, so the figure is the open (scan) alone.
            _ = try await archive.fetch(topic: log.topic, baseOffset: 0)
            let open = try await clock.measure { try await log.fetchArchived(containing: 0) }
            var delivered: [Int64] = []
            let read = try await clock.measure { delivered = try await deliverAll(log, maxBytes: 1 << 20).offsets }
            #expect(delivered.count == Int(log.endOffset))
            let mib = Double(segment.bytes) / 1_048_576
            print("""
                archive: a \(String(format: "%.1f", mib)) MiB archived segment of \(segment.nextOffset) records \
                opened (CRC scan) in \(open) (a local sealed one's first check: \(check)); delivered in 1 MiB slices (headers walked, bytes read) in \(read)
                """)
            try log.close()
        }
    }
}
