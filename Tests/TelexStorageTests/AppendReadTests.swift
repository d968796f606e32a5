import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

@Suite("Appending and reading", .timeLimit(.minutes(1)))
struct AppendReadTests {
    @Test("appended batches come back stamped, with dense offsets from 0 and otherwise unchanged bytes")
    func roundTrip() async throws {
        try await withTemporaryDirectory { directory in
            let log = try openLog(directory, testConfiguration())
            let published = (0..<12).map {
                makeBatch(records: 1 + $0 % 4, seed: $0, codec: $0 % 2 == 0 ? .none : .zlib)
            }
            var results: [AppendResult] = []
            var windows: [ClosedRange<Int64>] = []
            for batch in published {
                let before = FileIO.nowMilliseconds()
                results.append(try log.append(batch))
                windows.append(before...FileIO.nowMilliseconds())
            }

            var expectedBase: Int64 = 0
            for (result, batch) in zip(results, published) {
                #expect(result.baseOffset == expectedBase)
                #expect(result.recordCount == header(batch).recordCount)
                #expect(!result.duplicate)
                expectedBase = result.nextOffset
            }
            #expect(log.startOffset == 0)
            #expect(log.endOffset == expectedBase)
            #expect(log.readableEndOffset == expectedBase)

            let stored = try readAllBatches(log)
            try #require(stored.count == published.count)
            var previousAppendTime = Int64.min
            for index in stored.indices {
                let storedHeader = header(stored[index])
                #expect(storedHeader.baseOffset == results[index].baseOffset)
                #expect(windows[index].contains(storedHeader.appendTime))
                #expect(storedHeader.appendTime >= previousAppendTime)
                previousAppendTime = storedHeader.appendTime
                #expect(header(published[index]).appendTime == 0)
                #expect(sameExceptStampedFields(stored[index], published[index]))
                // Stamping leaves the CRC valid and the records as published.
                let decoded = try RecordBatch.decodeRecords(stored[index])
                let original = try RecordBatch.decodeRecords(published[index])
                #expect(decoded.records == original.records)
            }
        }
    }

    @Test("reading from an offset inside a batch returns the whole batch that holds it")
    func readFromMiddleOfBatch() async throws {
        try await withTemporaryDirectory { directory in
            let log = try openLog(directory, testConfiguration(indexIntervalBytes: 1))
            for seed in 0..<4 { _ = try log.append(makeBatch(records: 5, seed: seed)) }
            for offset in Int64(0)..<20 {
                let slice = try #require(try log.read(from: offset, maxBytes: 1))
                #expect(slice.firstOffset == offset / 5 * 5)
                #expect(slice.firstOffset <= offset)
                #expect(slice.nextOffset == slice.firstOffset + 5)
                #expect(slice.batchCount == 1)
                let batch = try slice.readBytes()
                #expect(header(batch).baseOffset == slice.firstOffset)
            }
        }
    }

    @Test("maxBytes and maxBatches bound a read, which still returns at least one batch")
    func readLimits() async throws {
        try await withTemporaryDirectory { directory in
            let log = try openLog(directory, testConfiguration())
            var sizes: [Int] = []
            for seed in 0..<6 {
                let batch = makeBatch(records: 2, seed: seed)
                sizes.append(batch.readableBytes)
                _ = try log.append(batch)
            }
            let one = try #require(try log.read(from: 0, maxBytes: 1))
            #expect(one.batchCount == 1)
            #expect(one.length == sizes[0])

            let twoExactly = try #require(try log.read(from: 0, maxBytes: sizes[0] + sizes[1]))
            #expect(twoExactly.batchCount == 2)
            #expect(twoExactly.nextOffset == 4)
            #expect(try RecordBatch.split(try twoExactly.readBytes()).count == 2)

            let justUnderTwo = try #require(try log.read(from: 0, maxBytes: sizes[0] + sizes[1] - 1))
            #expect(justUnderTwo.batchCount == 1)

            let threeBatches = try #require(try log.read(from: 2, maxBytes: .max, maxBatches: 3))
            #expect(threeBatches.batchCount == 3)
            #expect(threeBatches.firstOffset == 2)
            #expect(threeBatches.nextOffset == 8)
            #expect(threeBatches.length == sizes[1] + sizes[2] + sizes[3])

            let everything = try #require(try log.read(from: 0, maxBytes: .max))
            #expect(everything.batchCount == 6)
            #expect(everything.length == sizes.reduce(0, +))
        }
    }

    @Test("a read at or past the end returns nil; below the start it throws")
    func readAtEnd() async throws {
        try await withTemporaryDirectory { directory in
            let log = try openLog(directory, testConfiguration())
            #expect(try log.read(from: 0, maxBytes: .max) == nil)
            _ = try log.append(makeBatch(records: 3))
            #expect(try log.read(from: 3, maxBytes: .max) == nil)
            #expect(try log.read(from: 1000, maxBytes: .max) == nil)
            #expect(try log.read(from: 2, maxBytes: .max)?.firstOffset == 0)
            let error = #expect(throws: TelexError.self) { try log.read(from: -1, maxBytes: .max) }
            #expect(error?.code == .offsetOutOfRange)
        }
    }

    @Test("the active segment rolls once the next batch would pass segmentBytes; reads cross segments")
    func rollOnSize() async throws {
        try await withTemporaryDirectory { directory in
            let batchSize = makeBatch(records: 2, seed: 0).readableBytes
            let configuration = testConfiguration(segmentBytes: batchSize * 3 + batchSize / 2)
            var published: [ByteBuffer] = []
            do {
                let log = try openLog(directory, configuration)
                for _ in 0..<20 {
                    let batch = makeBatch(records: 2, seed: 0)
                    published.append(batch)
                    _ = try log.append(batch)
                }
                #expect(log.segmentCount == 7)
                let stored = try readAllBatches(log, maxBytes: .max)
                #expect(stored.count == 20)
                for (storedBatch, publishedBatch) in zip(stored, published) {
                    #expect(sameExceptStampedFields(storedBatch, publishedBatch))
                }
                // One read never spans two segment files.
                let first = try #require(try log.read(from: 0, maxBytes: .max))
                #expect(first.nextOffset == 6)
                try log.close()
            }

            let bases = try segmentBases(directory)
            #expect(bases == [0, 6, 12, 18, 24, 30, 36])
            for base in bases {
                let size = try fileSize(segmentPath(directory, base, ".log"))
                #expect(size <= configuration.segmentBytes)
                // Each file starts with the batch its name says.
                let contents = try readFile(segmentPath(directory, base, ".log"))
                #expect(header(ByteBuffer(bytes: contents)).baseOffset == base)
                #expect(FileManager.default.fileExists(atPath: segmentPath(directory, base, ".index")))
                #expect(FileManager.default.fileExists(atPath: segmentPath(directory, base, ".timeindex")))
            }

            let reopened = try openLog(directory, configuration)
            #expect(reopened.segmentCount == 7)
            #expect(reopened.endOffset == 40)
            let stored = try readAllBatches(reopened)
            #expect(stored.count == 20)
            #expect(zip(stored, published).allSatisfy { sameExceptStampedFields($0, $1) })
            #expect(try reopened.append(makeBatch(records: 1)).baseOffset == 40)
        }
    }

    @Test("with segmentAgeMilliseconds 0 every batch after the first starts a new segment")
    func rollOnAge() async throws {
        try await withTemporaryDirectory { directory in
            let configuration = testConfiguration(segmentAgeMilliseconds: 0)
            var published: [ByteBuffer] = []
            do {
                let log = try openLog(directory, configuration)
                for seed in 0..<5 {
                    published.append(makeBatch(records: 3, seed: seed))
                    _ = try log.append(published.last!)
                }
                #expect(log.segmentCount == 5)
                #expect(try readAllBatches(log).count == 5)
                try log.close()
            }
            #expect(try segmentBases(directory) == [0, 3, 6, 9, 12])
            let reopened = try openLog(directory, configuration)
            #expect(reopened.endOffset == 15)
            let stored = try readAllBatches(reopened)
            #expect(stored.map { header($0).baseOffset } == [0, 3, 6, 9, 12])
            #expect(zip(stored, published).allSatisfy { sameExceptStampedFields($0, $1) })
        }
    }

    @Test("startOffset, endOffset and offset(atOrAfter:) before, inside and after the log", arguments: [1, 4096])
    func timeLookups(indexIntervalBytes: Int) async throws {
        try await withTemporaryDirectory { directory in
            let batchSize = makeBatch(records: 2, seed: 1).readableBytes
            let configuration = testConfiguration(segmentBytes: batchSize * 4, indexIntervalBytes: indexIntervalBytes)
            let log = try openLog(directory, configuration)
            #expect(log.startOffset == 0)
            #expect(log.endOffset == 0)
            #expect(try log.offset(atOrAfter: 0) == 0)

            var batches: [ByteBuffer] = []
            for seed in 0..<14 { batches.append(makeBatch(records: 2, seed: seed % 3 + 1)) }
            let appended = try appendWithDistinctTimes(log, batches)
            #expect(log.segmentCount > 2)
            #expect(log.endOffset == 28)

            func checkLookups(_ log: TopicLog) throws {
                let times = try appendTimes(log)
                let first = times.first!.appendTime
                let last = times.last!.appendTime
                #expect(try log.offset(atOrAfter: 0) == 0)
                #expect(try log.offset(atOrAfter: first - 1000) == 0)
                #expect(try log.offset(atOrAfter: last + 1) == log.endOffset)
                #expect(try log.offset(atOrAfter: .max) == log.endOffset)
                for timestamp in (first - 2)...(last + 2) {
                    let expected = expectedOffset(atOrAfter: timestamp, batches: times, end: log.endOffset)
                    #expect(try log.offset(atOrAfter: timestamp) == expected, "timestamp \(timestamp)")
                }
                for (result, appendTime) in appended {
                    #expect(try log.offset(atOrAfter: appendTime) == result.baseOffset)
                }
            }
            try checkLookups(log)
            try log.close()

            let reopened = try openLog(directory, configuration)
            #expect(reopened.startOffset == 0)
            #expect(reopened.endOffset == 28)
            try checkLookups(reopened)
        }
    }
}
