import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

@Suite("Idle segments", .timeLimit(.minutes(1)))
struct IdleRollTests {
    @Test("retention rolls an idle topic's old active segment and deletes it; offsets are not reused")
    func idleTopicExpires() async throws {
        try await withTemporaryDirectory { directory in
            let retention: Int64 = 60_000
            let configuration = testConfiguration(segmentAgeMilliseconds: 3_600_000, retentionMilliseconds: retention)
            let log = try openLog(directory, configuration)
            for seed in 0..<3 { _ = try log.append(makeBatch(records: 2, seed: seed)) }
            let last = log.lastAppendTime
            // Not yet past retention nor the segment age: nothing happens.
            #expect(try log.applyRetention(now: last + retention) == 0)
            #expect(log.segmentCount == 1)

            // No append since; the retention pass alone rolls the segment and then deletes it.
            #expect(try log.applyRetention(now: last + retention + 1) == 1)
            #expect(log.segmentCount == 1)
            #expect(log.startOffset == 6)
            #expect(log.endOffset == 6)
            #expect(try segmentBases(directory) == [6])
            #expect(try log.read(from: 6, maxBytes: .max) == nil)
            #expect(try log.append(makeBatch(records: 1, seed: 9)).baseOffset == 6)
            try log.close()

            let reopened = try openLog(directory, configuration)
            #expect(reopened.startOffset == 6)
            #expect(reopened.endOffset == 7)
            try reopened.close()
        }
    }

    @Test("an active segment past the segment age rolls with no append; an empty one does not")
    func idleSegmentAgeRolls() async throws {
        try await withTemporaryDirectory { directory in
            let log = try openLog(directory, testConfiguration(segmentAgeMilliseconds: 1000))
            #expect(try log.rollIfIdle(now: FileIO.nowMilliseconds() + 10_000) == false)
            _ = try log.append(makeBatch(records: 2))
            let first = try #require(try log.read(from: 0, maxBytes: .max))
            #expect(try log.rollIfIdle(now: header(try first.readBytes()).appendTime + 999) == false)
            #expect(try log.rollIfIdle(now: header(try first.readBytes()).appendTime + 1000))
            #expect(try segmentBases(directory) == [0, 2])
            // Without retention the rolled segment stays readable.
            #expect(try log.applyRetention() == 0)
            #expect(try readAllBatches(log).count == 1)
            #expect(try log.append(makeBatch(records: 1)).baseOffset == 2)
            try log.sync()
            #expect(log.unsealedSegmentCount == 0)
            try log.close()
        }
    }

    @Test("the store's retention pass expires idle topics")
    func storeExpiresIdleTopic() async throws {
        try await withTemporaryDirectory { directory in
            // A retention of 1 ms: by the time the pass runs, the topic's only batch is older than that.
            let configuration = testConfiguration(retentionMilliseconds: 1)
            let store = try TopicStore(directory: directory, configuration: configuration, logger: makeLogger())
            let log = try store.createLog("news.idle").log
            _ = try log.append(makeBatch(records: 4))
            waitForClock(after: log.lastAppendTime + 1)
            #expect(store.applyRetention() == 1)
            #expect(log.startOffset == 4)
            #expect(log.endOffset == 4)
            try store.close()
        }
    }
}
