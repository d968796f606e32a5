import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

/// Opt-in figures: `TELEX_COMPACTION_MEASURE=1 swift test --filter CompactionMeasurements`.
@Suite("Compaction measurements", .enabled(if: ProcessInfo.processInfo.environment["TELEX_COMPACTION_MEASURE"] == "1"))
struct CompactionMeasurements {
    @Test("a round over 10,000 articles × 10 versions (zlib batches of 50), and a purge of one article",
          .timeLimit(.minutes(5)))
    func roundAndPurge() async throws {
        try await withTemporaryDirectory { directory in
            let log = try openLog(directory, testConfiguration(segmentBytes: 1 << 20))
            var serial = 0
            for version in 0..<10 {
                for first in stride(from: 0, to: 10_000, by: 50) {
                    let versions = (first..<first + 50).map { article -> ArticleVersion in
                        serial += 1
                        let body = String(repeating: "Lorem ipsum dolor sit amet \(serial % 97) ", count: 12)
                        return ArticleVersion(key: "urn:article:\(article)", tombstone: false,
                                              value: "{\"version\":\(version),\"body\":\"\(body)\"}")
                    }
                    _ = try log.append(makeArticleBatch(versions, codec: .zlib))
                }
            }
            try log.sync()
            let before = log.sizeInBytes
            let clock = ContinuousClock()
            var report = CompactionReport()
            let round = try clock.measure {
                report = try log.compact(tombstoneRetentionMilliseconds: 86_400_000)
            }
            let seconds = Double(round.components.seconds) + Double(round.components.attoseconds) / 1e18
            print("""
                compaction: 100,000 records, \(before) bytes in \(log.segmentCount) segments: \
                \(report.rewrites.count) rewritten, \(report.recordsRemoved) records removed, \
                \(report.bytesReclaimed) bytes reclaimed in \(round) \
                (\(Int(Double(before) / seconds / 1_048_576)) MiB/s read)
                """)
            var purged: [SegmentRewrite] = []
            let purge = try clock.measure { purged = try log.purge(key: "urn:article:42") }
            print("purge: \(purged.flatMap(\.removedOffsets).count) records of one article in \(purge)")
            try log.close()
        }
    }
}
