import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

@Suite("Retention", .timeLimit(.minutes(1)))
struct RetentionTests {
    func expectOutOfRange(_ log: TopicLog, below start: Int64) {
        for offset in [Int64(0), start - 1] {
            let error = #expect(throws: TelexError.self) { try log.read(from: offset, maxBytes: .max) }
            #expect(error?.code == .offsetOutOfRange)
            #expect(error?.message.contains("log starts at \(start)") == true, "\(String(describing: error))")
            #expect(error?.offset == offset)
        }
    }

    @Test("retention by size deletes the oldest whole segments, never the active one")
    func bySize() async throws {
        try await withTemporaryDirectory { directory in
            let batchSize = makeBatch(records: 2, seed: 0).readableBytes
            let segmentBytes = batchSize * 3
            var configuration = testConfiguration(segmentBytes: segmentBytes)
            let log = try openLog(directory, configuration)
            for _ in 0..<20 { _ = try log.append(makeBatch(records: 2, seed: 0)) }
            let stored = try readAllBatches(log)
            #expect(try segmentBases(directory) == [0, 6, 12, 18, 24, 30, 36])
            #expect(try log.applyRetention() == 0)
            try log.close()

            // Keep at most 2.5 segments' worth: the two newest full segments plus the active one's 2 batches fit.
            configuration.retentionBytes = segmentBytes * 2 + batchSize * 2
            let limited = try openLog(directory, configuration)
            #expect(limited.sizeInBytes == 20 * batchSize)
            #expect(try limited.applyRetention() == 4)
            #expect(try segmentBases(directory) == [24, 30, 36])
            for base in [Int64(0), 6, 12, 18] {
                for suffix in [".log", ".index", ".timeindex"] {
                    #expect(!FileManager.default.fileExists(atPath: segmentPath(directory, base, suffix)))
                }
            }
            #expect(limited.startOffset == 24)
            #expect(limited.endOffset == 40)
            #expect(limited.sizeInBytes <= configuration.retentionBytes!)
            expectOutOfRange(limited, below: 24)
            #expect(try readAllBatches(limited).map(bytes) == stored.suffix(8).map(bytes))
            #expect(try limited.offset(atOrAfter: 0) == 24)

            // A limit of zero empties everything but the active segment.
            try limited.close()
            configuration.retentionBytes = 0
            let emptied = try openLog(directory, configuration)
            #expect(try emptied.applyRetention() == 2)
            #expect(emptied.segmentCount == 1)
            #expect(emptied.startOffset == 36)
            #expect(try readAllBatches(emptied).map(bytes) == stored.suffix(2).map(bytes))
            expectOutOfRange(emptied, below: 36)
            try emptied.close()

            let reopened = try openLog(directory, configuration)
            #expect(reopened.startOffset == 36)
            #expect(reopened.endOffset == 40)
            #expect(try reopened.append(makeBatch(records: 1)).baseOffset == 40)
        }
    }

    @Test("retention by age deletes whole segments whose newest batch is too old; an idle active one is rolled first")
    func byAge() async throws {
        try await withTemporaryDirectory { directory in
            let retention: Int64 = 60_000
            let configuration = testConfiguration(segmentAgeMilliseconds: 3_600_000, retentionMilliseconds: retention)
            let log = try openLog(directory, testConfiguration(segmentAgeMilliseconds: 0))
            let appended = try appendWithDistinctTimes(log, (0..<6).map { makeBatch(records: 1, seed: $0) })
            #expect(log.segmentCount == 6)
            let times = appended.map(\.appendTime)
            try log.close()
            let aged = try openLog(directory, configuration)

            #expect(try aged.applyRetention() == 0)
            #expect(try aged.applyRetention(now: times[0] + retention) == 0)
            // Segments 0-2 have their newest batch more than the retention before `now`; 3 is exactly at it.
            #expect(try aged.applyRetention(now: times[3] + retention) == 3)
            #expect(aged.startOffset == 3)
            #expect(try segmentBases(directory) == [3, 4, 5])
            expectOutOfRange(aged, below: 3)
            #expect(try aged.read(from: 3, maxBytes: 1)?.firstOffset == 3)

            // Far in the future everything is too old: the active segment is rolled and deleted too, and the
            // log is empty at its end offset.
            #expect(try aged.applyRetention(now: times[5] + retention * 100) == 3)
            #expect(aged.segmentCount == 1)
            #expect(aged.startOffset == 6)
            #expect(aged.endOffset == 6)
            #expect(try readAllBatches(aged).isEmpty)
            expectOutOfRange(aged, below: 6)
            try aged.close()

            let reopened = try openLog(directory, configuration)
            #expect(reopened.startOffset == 6)
            #expect(reopened.endOffset == 6)
        }
    }

    @Test("a reader holding a slice can finish it after retention deleted the segment")
    func readerOutlivesDeletion() async throws {
        try await withTemporaryDirectory { directory in
            let log = try openLog(directory, testConfiguration(segmentAgeMilliseconds: 0, retentionBytes: 0))
            let first = makeBatch(records: 2, seed: 1)
            _ = try log.append(first)
            _ = try log.append(makeBatch(records: 2, seed: 2))
            let slice = try #require(try log.read(from: 0, maxBytes: .max))
            // Segment age 0: the pass rolls the active segment too, so both segments go.
            #expect(try log.applyRetention() == 2)
            #expect(!FileManager.default.fileExists(atPath: segmentPath(directory, 0, ".log")))
            #expect(sameExceptStampedFields(try slice.readBytes(), first))
        }
    }
}
