import Dispatch
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

@Suite("Locks, rolls and background fsyncs", .timeLimit(.minutes(1)))
struct LocksAndRollsTests {
    @Test("log(topic) and topics answer while another thread is inside a slow topic creation")
    func lookupsDoNotWaitForCreation() async throws {
        try await withTemporaryDirectory { directory in
            let entered = DispatchSemaphore(value: 0)
            let release = DispatchSemaphore(value: 0)
            let store = try TopicStore(
                directory: directory, configuration: testConfiguration(), logger: makeLogger(),
                willCreateLog: { topic in
                    guard topic == "news.slow" else { return }
                    entered.signal()
                    release.wait()
                })
            let existing = try store.createLog("news.wire").log
            let created = NIOLockedValueBox<TopicLog?>(nil)
            let creator = Thread { created.withLockedValue { $0 = try? store.createLog("news.slow").log } }
            creator.start()
            entered.wait()
            defer { release.signal() }

            // Inside the creation (the hook blocks it): lookups and other topics' logs are not held up.
            #expect(store.log("news.wire") === existing)
            #expect(store.log("news.slow") == nil)
            #expect(store.topics == ["news.wire"])
            #expect(try store.createLog("news.wire").log === existing)
            _ = try existing.append(makeBatch())

            release.signal()
            while created.withLockedValue({ $0 }) == nil { try await Task.sleep(for: .milliseconds(5)) }
            #expect(store.log("news.slow") === created.withLockedValue { $0 })
            #expect(store.topics == ["news.slow", "news.wire"])
            try store.close()
        }
    }

    @Test("under fsync always, a batch in a rolled segment is acknowledged only once the old segment is sealed")
    func rollDurability() async throws {
        try await withTemporaryDirectory { directory in
            // Seeds 10, 15, 20, ... give batches of one size.
            let batchSize = makeBatch(records: 2, seed: 10).readableBytes
            let configuration = testConfiguration(segmentBytes: batchSize * 3, fsync: .always)
            let handler = RecordingLogHandler()
            var acknowledged: [AppendResult] = []
            do {
                let log = try openLog(directory, configuration, handler: handler)
                for seed in stride(from: 10, to: 60, by: 5) {
                    let result = try log.append(makeBatch(records: 2, seed: seed))
                    try await waitUntilDurable(log, result)
                    // The acknowledgement covers every roll before it: the old segments' fsyncs and the
                    // directory fsync that makes the new segment's file durable.
                    #expect(log.unsealedSegmentCount == 0)
                    #expect(log.readableEndOffset >= result.nextOffset)
                    #expect(try log.read(from: result.baseOffset, maxBytes: 1)?.firstOffset == result.baseOffset)
                    acknowledged.append(result)
                }
                #expect(log.segmentCount == 4)
                #expect(handler.messages.filter { $0 == "rolled segment" }.count == 3)
                try log.close()
            }
            #expect(try segmentBases(directory) == [0, 6, 12, 18])

            // Reopening finds every acknowledged batch and sealed segments whose indexes need no rebuild.
            let reopenHandler = RecordingLogHandler()
            let reopened = try openLog(directory, configuration, handler: reopenHandler)
            #expect(!reopenHandler.messages.contains("rebuilding index"))
            #expect(!reopenHandler.messages.contains("cut torn log tail"))
            #expect(reopened.readableEndOffset == acknowledged.last!.nextOffset)
            let stored = try readAllBatches(reopened)
            #expect(stored.map { header($0).baseOffset } == acknowledged.map(\.baseOffset))
            try reopened.close()
        }
    }

    @Test("concurrent appenders racing rolls under fsync always: every acknowledged batch is readable at once")
    func concurrentRollDurability() async throws {
        try await withTemporaryDirectory { directory in
            let batchSize = appenderBatch(0, 0).readableBytes
            let configuration = testConfiguration(segmentBytes: batchSize * 2, fsync: .always)
            let log = try openLog(directory, configuration)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for appender in 0..<4 {
                    group.addTask {
                        for index in 0..<15 {
                            let result = try await log.appendDurably(appenderBatch(appender, index))
                            #expect(log.readableEndOffset >= result.nextOffset)
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(log.segmentCount > 10)
            #expect(log.unsealedSegmentCount == 0)
            try log.close()
            let reopened = try openLog(directory, configuration)
            #expect(try readAllBatches(reopened).count == 60)
            try reopened.close()
        }
    }

    @Test("under fsync never, a rolled segment is still sealed in the background")
    func rollSealsUnderNever() async throws {
        try await withTemporaryDirectory { directory in
            let batchSize = makeBatch(records: 2).readableBytes
            let log = try openLog(directory, testConfiguration(segmentBytes: batchSize, fsync: .never))
            for seed in 0..<4 { _ = try log.append(makeBatch(records: 2, seed: seed)) }
            #expect(log.segmentCount == 4)
            while log.unsealedSegmentCount > 0 { try await Task.sleep(for: .milliseconds(2)) }
            try log.close()
        }
    }

    @Test("retention takes segments out under the lock; a reader of a deleted segment still reads it")
    func retentionOutsideLock() async throws {
        try await withTemporaryDirectory { directory in
            // Seeds 10, 15, 20, ... give distinct batches of one size.
            let batchSize = makeBatch(records: 2, seed: 10).readableBytes
            var configuration = testConfiguration(segmentBytes: batchSize * 2)
            let log = try openLog(directory, configuration)
            var published: [ByteBuffer] = []
            for seed in stride(from: 10, to: 40, by: 5) {
                published.append(makeBatch(records: 2, seed: seed))
                _ = try log.append(published.last!)
            }
            #expect(log.segmentCount == 3)
            let oldest = try #require(try log.read(from: 0, maxBytes: .max))
            #expect(oldest.batchCount == 2)
            let handle = try oldest.makeFileHandle()
            defer { try? handle.close() }
            try log.close()

            configuration.retentionBytes = batchSize * 2
            let limited = try openLog(directory, configuration)
            let held = try #require(try limited.read(from: 4, maxBytes: .max))
            #expect(try limited.applyRetention() == 2)
            #expect(try segmentBases(directory) == [8])
            #expect(limited.startOffset == 8)
            // Slices taken before the deletion still read the unlinked files.
            let heldBatches = try RecordBatch.split(try held.readBytes())
            #expect(heldBatches.count == 2)
            #expect(zip(heldBatches, published[2..<4]).allSatisfy(sameExceptStampedFields))
            let oldestBatches = try RecordBatch.split(try oldest.readBytes())
            #expect(zip(oldestBatches, published[0..<2]).allSatisfy(sameExceptStampedFields))
            // The log keeps working after the unlinks.
            _ = try limited.append(makeBatch(records: 2, seed: 40))
            #expect(try readAllBatches(limited).count == 3)
            try limited.close()
        }
    }

    @Test("the interval fsync runs while the log is open and stops when it is closed")
    func intervalStopsOnClose() async throws {
        try await withTemporaryDirectory { directory in
            weak var weakLog: TopicLog?
            do {
                let log = try openLog(directory, testConfiguration(fsync: .interval(milliseconds: 5)))
                weakLog = log
                _ = try log.append(makeBatch())
                while log.intervalSyncRounds < 3 { try await Task.sleep(for: .milliseconds(5)) }
                try log.close()
                let rounds = log.intervalSyncRounds
                try await Task.sleep(for: .milliseconds(50))
                #expect(log.intervalSyncRounds == rounds)
            }
            // A pending tick holds the log only weakly.
            try await Task.sleep(for: .milliseconds(20))
            #expect(weakLog == nil)
        }
    }

    @Test(
        "a header window walks the same batches as one read per header, for any window size and limit",
        arguments: [64, 65, 100, 300, 1000, HeaderWindow.defaultBytes])
    func headerWindow(windowBytes: Int) async throws {
        try await withTemporaryDirectory { directory in
            let log = try openLog(directory, testConfiguration())
            for seed in 0..<40 { _ = try log.append(makeBatch(records: 1 + seed % 4, seed: seed)) }
            try log.close()
            let segment = try Segment(directory: logDirectory(directory), baseOffset: 0, files: FileDescriptorCache(budget: 4))
            let size = try fileSize(segmentPath(directory, 0, ".log"))
            // Limits at the end, mid-batch and mid-header, as a log's size snapshot can be.
            for limit in [size, size - 1, size - 40, size / 2, RecordBatchHeader.size, RecordBatchHeader.size - 1, 0] {
                var expected: [Int64] = []
                var position = 0
                while let header = try segment.header(at: position, limit: limit) {
                    expected.append(header.baseOffset)
                    position += header.totalSize
                }
                var window = HeaderWindow(try segment.logFile.lease(), limit: limit, windowBytes: windowBytes)
                var walked: [Int64] = []
                position = 0
                while let header = try window.header(at: position) {
                    walked.append(header.baseOffset)
                    position += header.totalSize
                }
                #expect(walked == expected, "limit \(limit)")
            }
        }
    }
}
