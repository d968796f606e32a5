import Foundation
import NIOConcurrencyHelpers
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

/// Waits for `log.whenDurable(result)`.
func waitUntilDurable(_ log: TopicLog, _ result: AppendResult) async throws {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
        log.whenDurable(result) { continuation.resume(with: $0) }
    }
}

/// The batch appender `appender` publishes as its `index`th, recognisable by its key.
func appenderBatch(_ appender: Int, _ index: Int, records: Int = 2) -> ByteBuffer {
    var builder = RecordBatchBuilder()
    for record in 0..<records {
        builder.append(
            timestamp: 1_700_000_000_000, key: ByteBuffer(string: "\(appender)/\(index)/\(record)"),
            value: ByteBuffer(string: "{\"appender\":\(appender),\"index\":\(index),\"record\":\(record)}"))
    }
    return builder.build(codec: index % 2 == 0 ? .none : .zlib)
}

func firstKey(_ batch: ByteBuffer) throws -> String {
    String(buffer: try RecordBatch.decodeRecords(batch).records[0].key)
}

@Suite("Durability and concurrency", .timeLimit(.minutes(1)))
struct DurabilityTests {
    @Test("under fsync always, readers see a batch only once whenDurable has fired")
    func alwaysHidesUntilDurable() async throws {
        try await withTemporaryDirectory { directory in
            let configuration = testConfiguration(fsync: .always)
            do {
                let log = try openLog(directory, configuration)
                let first = try log.append(makeBatch(records: 3))
                #expect(log.endOffset == 3)
                #expect(log.readableEndOffset == 0)
                #expect(try log.read(from: 0, maxBytes: .max) == nil)
                #expect(try log.offset(atOrAfter: 0) == 0)

                try await waitUntilDurable(log, first)
                #expect(log.readableEndOffset == 3)
                #expect(try log.read(from: 0, maxBytes: .max)?.nextOffset == 3)

                // A callback for an append that is already durable fires too.
                try await waitUntilDurable(log, first)

                let second = try await log.appendDurably(makeBatch(records: 2, seed: 1))
                #expect(second.baseOffset == 3)
                #expect(log.readableEndOffset == 5)
                #expect(try readAllBatches(log).count == 2)

                let third = try log.append(makeBatch(records: 1, seed: 2))
                #expect(log.readableEndOffset == 5)
                try log.sync()
                #expect(log.readableEndOffset == third.nextOffset)
                try log.close()
                let error = #expect(throws: TelexError.self) { try log.append(makeBatch()) }
                #expect(error?.code == .shuttingDown)
            }
            let reopened = try openLog(directory, configuration)
            #expect(reopened.endOffset == 6)
            #expect(reopened.readableEndOffset == 6)
            #expect(try readAllBatches(reopened).count == 3)
        }
    }

    @Test(
        "under fsync never and interval, appends are readable at once and whenDurable fires at once",
        arguments: [FsyncPolicy.never, .interval(milliseconds: 50)])
    func pageCachePolicies(policy: FsyncPolicy) async throws {
        try await withTemporaryDirectory { directory in
            let configuration = testConfiguration(fsync: policy)
            do {
                let log = try openLog(directory, configuration)
                let result = try log.append(makeBatch(records: 2))
                #expect(log.readableEndOffset == 2)
                #expect(try log.read(from: 0, maxBytes: .max)?.nextOffset == 2)
                let fired = NIOLockedValueBox(false)
                log.whenDurable(result) { outcome in
                    if case .success = outcome { fired.withLockedValue { $0 = true } }
                }
                #expect(fired.withLockedValue { $0 })
                _ = try await log.appendDurably(makeBatch(records: 1, seed: 1))
                #expect(log.readableEndOffset == 3)
                try log.close()
            }
            let reopened = try openLog(directory, configuration)
            #expect(reopened.endOffset == 3)
            try reopened.close()
        }
    }

    @Test("8 concurrent appenders get distinct, dense offsets and every batch is stored once")
    func concurrentAppenders() async throws {
        try await withTemporaryDirectory { directory in
            let batchSize = appenderBatch(0, 0).readableBytes
            // Small segments so rolls happen while appenders race.
            let configuration = testConfiguration(segmentBytes: batchSize * 20, fsync: .always)
            let appenders = 8
            let perAppender = 25
            var results: [(key: String, result: AppendResult)] = []
            do {
                let log = try openLog(directory, configuration)
                results = try await withThrowingTaskGroup(of: [(String, AppendResult)].self) { group in
                    for appender in 0..<appenders {
                        group.addTask {
                            var mine: [(String, AppendResult)] = []
                            for index in 0..<perAppender {
                                let result = try await log.appendDurably(appenderBatch(appender, index))
                                // Durable means readable under fsync always.
                                #expect(log.readableEndOffset >= result.nextOffset)
                                mine.append(("\(appender)/\(index)/0", result))
                            }
                            return mine
                        }
                    }
                    return try await group.reduce(into: []) { $0 += $1 }
                }
                #expect(log.segmentCount > 1)
                try log.close()
            }
            let sorted = results.sorted { $0.result.baseOffset < $1.result.baseOffset }
            #expect(sorted.count == appenders * perAppender)
            var next: Int64 = 0
            for (_, result) in sorted {
                #expect(result.baseOffset == next)
                #expect(!result.duplicate)
                next = result.nextOffset
            }
            #expect(Set(results.map(\.key)).count == results.count)

            let reopened = try openLog(directory, configuration)
            #expect(reopened.endOffset == next)
            let stored = try readAllBatches(reopened)
            #expect(stored.count == sorted.count)
            for (batch, expected) in zip(stored, sorted) {
                #expect(header(batch).baseOffset == expected.result.baseOffset)
                #expect(try firstKey(batch) == expected.key)
            }
        }
    }

    @Test(
        "readers racing appenders only ever see whole, valid batches with dense offsets",
        arguments: [FsyncPolicy.always, .never])
    func concurrentReaders(policy: FsyncPolicy) async throws {
        try await withTemporaryDirectory { directory in
            let batchSize = appenderBatch(0, 0, records: 3).readableBytes
            let configuration = testConfiguration(
                segmentBytes: batchSize * 16, indexIntervalBytes: batchSize * 3, fsync: policy)
            let appenders = 4
            let perAppender = 30
            let total = Int64(appenders * perAppender * 3)
            let log = try openLog(directory, configuration)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for appender in 0..<appenders {
                    group.addTask {
                        for index in 0..<perAppender {
                            _ = try await log.appendDurably(appenderBatch(appender, index, records: 3))
                        }
                    }
                }
                for reader in 0..<3 {
                    group.addTask {
                        var offset: Int64 = 0
                        while offset < total {
                            guard let slice = try log.read(from: offset, maxBytes: 1 + reader * batchSize * 2) else {
                                await Task.yield()
                                continue
                            }
                            #expect(slice.firstOffset == offset)
                            let buffer = try slice.readBytes()
                            let batches = try RecordBatch.split(buffer)
                            #expect(batches.count == slice.batchCount)
                            for batch in batches {
                                let checked = try RecordBatch.validate(batch)
                                #expect(checked.baseOffset == offset)
                                #expect(checked.recordCount == 3)
                                offset = checked.nextOffset
                            }
                            #expect(offset == slice.nextOffset)
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(log.endOffset == total)
            try log.close()
            let reopened = try openLog(directory, configuration)
            #expect(reopened.endOffset == total)
            #expect(try readAllBatches(reopened).count == appenders * perAppender)
        }
    }

    @Test("many topics appended at once through a TopicStore all survive a reopen")
    func manyTopics() async throws {
        try await withTemporaryDirectory { directory in
            let configuration = testConfiguration(fsync: .always)
            let topics = (0..<12).map { "desk\($0 % 3).story-\($0)" }
            do {
                let store = try TopicStore(directory: directory, configuration: configuration, logger: makeLogger())
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for (number, topic) in topics.enumerated() {
                        for appender in 0..<2 {
                            group.addTask {
                                let log = try store.createLog(topic).log
                                for index in 0..<(5 + number) {
                                    _ = try await log.appendDurably(appenderBatch(appender, index))
                                }
                            }
                        }
                    }
                    try await group.waitForAll()
                }
                #expect(store.topics == topics.sorted())
                try store.close()
            }
            let reopened = try TopicStore(directory: directory, configuration: configuration, logger: makeLogger())
            #expect(reopened.topics == topics.sorted())
            for (number, topic) in topics.enumerated() {
                let log = try #require(reopened.log(topic))
                let expectedBatches = 2 * (5 + number)
                #expect(log.endOffset == Int64(expectedBatches * 2))
                let keys = try readAllBatches(log).map(firstKey)
                #expect(keys.count == expectedBatches)
                #expect(Set(keys).count == expectedBatches)
            }
            try reopened.close()
        }
    }
}
