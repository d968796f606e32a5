import Foundation
import MetricsTestKit
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

/// A closed log of 300 one-record batches (about 50 KB) in one segment, as in the report that started this: the
/// batches as stored and where each one sits in the file.
struct ThreeHundredEvents {
    static let count = 300
    let directory: String
    let configuration: LogConfiguration
    let stored: [ByteBuffer]
    /// File position of each batch.
    let positions: [Int]
    var logPath: String { segmentPath(directory, 0, ".log") }

    init(_ directory: String, configuration: LogConfiguration = testConfiguration()) throws {
        self.directory = directory
        self.configuration = configuration
        let log = try openLog(directory, configuration)
        for seed in 0..<Self.count { _ = try log.append(makeBatch(records: 1, seed: seed)) }
        stored = try readAllBatches(log)
        try log.close()
        var position = 0
        var positions: [Int] = []
        for batch in stored {
            positions.append(position)
            position += batch.readableBytes
        }
        self.positions = positions
    }

    /// The index of the batch holding file position `position`.
    func batch(at position: Int) -> Int { positions.lastIndex { $0 <= position }! }

    /// Flips one bit at `position` of the segment file (inside a batch's records, so the headers still parse).
    func flipBit(at position: Int, in path: String? = nil) throws {
        var contents = try readFile(path ?? logPath)
        contents[position] ^= 0x10
        try writeFile(path ?? logPath, contents)
    }
}

/// Opens `directory`'s log with metrics and a recording logger.
private func openObserved(
    _ directory: String, _ configuration: LogConfiguration
) throws -> (log: TopicLog, handler: RecordingLogHandler, metrics: TestMetrics) {
    let handler = RecordingLogHandler()
    let metrics = TestMetrics()
    let log = try TopicLog(topic: "news.wire", directory: logDirectory(directory), configuration: configuration,
                           logger: makeLogger(handler), metrics: TelexMetrics(factory: metrics))
    return (log, handler, metrics)
}

private func damagedRangesCounted(_ metrics: TestMetrics) throws -> Int64 {
    try metrics.expectCounter("telex_storage_damaged_ranges_total", [("topic", "news.wire")]).totalValue
}

@Suite("Damaged batches", .timeLimit(.minutes(1)))
struct DamageTests {
    @Test("one bit flipped mid active segment: every intact batch stays at its offset and no offset is reused")
    func bitFlipMidActiveSegment() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try ThreeHundredEvents(directory)
            let end = Int64(ThreeHundredEvents.count)
            let flipped = try fileSize(fixture.logPath) / 2
            let damaged = fixture.batch(at: flipped)
            try fixture.flipBit(at: flipped)

            let (log, handler, metrics) = try openObserved(directory, fixture.configuration)
            #expect(log.endOffset == end)
            #expect(try fileSize(fixture.logPath) == fixture.positions.last! + fixture.stored.last!.readableBytes)
            for offset in Int64(0)..<end where offset != Int64(damaged) {
                let slice = try #require(try log.read(from: offset, maxBytes: 1))
                #expect(slice.firstOffset == offset)
                #expect(bytes(try slice.readBytes()) == bytes(fixture.stored[Int(offset)]))
            }

            // A read reaching the damage gets what lies before it; one starting at it is DATA_LOSS.
            let before = try #require(try log.read(from: 0, maxBytes: .max))
            #expect(before.nextOffset == Int64(damaged))
            let error = try #require(throws: TelexError.self) { _ = try log.read(from: Int64(damaged), maxBytes: .max) }
            #expect(error.code == .dataLoss)
            #expect(error.message.contains("offset \(damaged) of news.wire is lost"))
            #expect(error.topic == "news.wire" && error.offset == Int64(damaged))
            let skipped = try #require(try log.read(from: Int64(damaged), maxBytes: 1, skipDamaged: true))
            #expect(skipped.firstOffset == Int64(damaged) + 1)

            // Copied aside, logged at error level, counted.
            let position = fixture.positions[damaged]
            let aside = logDirectory(directory) + "/damaged/" + Segment.fileName(0, "-\(position).bin")
            let damagedBytes = Array(try readFile(fixture.logPath)[position..<fixture.positions[damaged + 1]])
            #expect(try readFile(aside) == damagedBytes)
            #expect(handler.errorMessages == ["damaged batches in log: serving around them"])
            #expect(!handler.messages.contains("cut torn log tail"))
            #expect(try damagedRangesCounted(metrics) == 1)

            // The next append gets the offset after the last one ever stored.
            #expect(try log.append(makeBatch(records: 2)).baseOffset == end)
            try log.close()

            // Found again on the next open, from the bytes left in place.
            let (reopened, again, _) = try openObserved(directory, fixture.configuration)
            #expect(reopened.endOffset == end + 2)
            #expect(again.errorMessages == ["damaged batches in log: serving around them"])
            #expect(throws: TelexError.self) { _ = try reopened.read(from: Int64(damaged), maxBytes: 1) }
            #expect(try reopened.read(from: Int64(damaged), maxBytes: 1, skipDamaged: true)?.firstOffset
                == Int64(damaged) + 1)
        }
    }

    @Test("a segment rolled after its damage was found keeps it across reopens: its copy aside makes it rescanned")
    func damageInASegmentSealedLater() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try ThreeHundredEvents(directory)
            let flipped = fixture.positions[100] + 80
            try fixture.flipBit(at: flipped)
            var configuration = fixture.configuration
            configuration.segmentBytes = try fileSize(fixture.logPath)
            do {
                let (log, _, _) = try openObserved(directory, configuration)
                // Too big for the active segment: rolls, sealing the damaged one.
                #expect(try log.append(makeBatch(records: 1)).baseOffset == 300)
                try log.close()
            }
            #expect(try segmentBases(directory) == [0, 300])
            let (log, handler, _) = try openObserved(directory, configuration)
            #expect(handler.errorMessages == ["damaged batches in log: serving around them"])
            #expect(throws: TelexError.self) { _ = try log.read(from: 100, maxBytes: 1) }
            #expect(try log.read(from: 99, maxBytes: .max)?.nextOffset == 100)
            #expect(try log.read(from: 101, maxBytes: 1)?.firstOffset == 101)
        }
    }

    @Test("a torn tail is still cut, and the never-acknowledged offset is given out again")
    func tornTailIsCut() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try ThreeHundredEvents(directory)
            let last = fixture.positions.last!
            truncateFile(fixture.logPath, to: last + fixture.stored.last!.readableBytes / 2)

            let (log, handler, _) = try openObserved(directory, fixture.configuration)
            #expect(handler.messages.contains("cut torn log tail"))
            #expect(handler.errorMessages.isEmpty)
            #expect(log.endOffset == 299)
            #expect(try fileSize(fixture.logPath) == last)
            // Nothing is deleted without a copy: the cut bytes are kept aside under a name of their own.
            #expect(try FileManager.default.contentsOfDirectory(atPath: logDirectory(directory) + "/damaged")
                == [Segment.fileName(0, "-\(last)-torn.bin")])
            #expect(try log.append(makeBatch(records: 1)).baseOffset == 299)
        }
    }

    @Test("a bit flipped in a sealed segment is found when first served: DATA_LOSS, or skipped")
    func flipInSealedSegmentFoundWhileServing() async throws {
        try await withTemporaryDirectory { directory in
            let batchSize = makeBatch(records: 1, seed: 0).readableBytes
            let configuration = testConfiguration(segmentBytes: batchSize * 40, indexIntervalBytes: batchSize * 4)
            let fixture = try ThreeHundredEvents(directory, configuration: configuration)
            let bases = try segmentBases(directory)
            #expect(bases.count > 3)
            // Batch 10 of the first segment, and the last batch of the second one.
            let firstPath = segmentPath(directory, bases[0], ".log")
            try fixture.flipBit(at: fixture.positions[10] + 80, in: firstPath)
            let secondPath = segmentPath(directory, bases[1], ".log")
            let lastOfSecond = Int(bases[2]) - 1
            try fixture.flipBit(at: fixture.positions[lastOfSecond] - fixture.positions[Int(bases[1])] + 80,
                                in: secondPath)

            let (log, handler, metrics) = try openObserved(directory, configuration)
            // Sealed segments whose indexes load are not CRC-checked on open.
            #expect(handler.errorMessages.isEmpty)
            #expect(try log.read(from: 0, maxBytes: .max)?.nextOffset == 10)
            let error = try #require(throws: TelexError.self) { _ = try log.read(from: 10, maxBytes: .max) }
            #expect(error.code == .dataLoss)
            #expect(error.message.contains("offset 10 of news.wire is lost"))
            #expect(handler.errorMessages == ["damaged batches in log: serving around them"])
            #expect(try log.read(from: 10, maxBytes: 1, skipDamaged: true)?.firstOffset == 11)
            #expect(try log.read(from: 11, maxBytes: 1)?.firstOffset == 11)

            // The damaged last batch of a sealed segment: skipping lands on the next segment.
            let tail = try #require(throws: TelexError.self) {
                _ = try log.read(from: Int64(lastOfSecond), maxBytes: .max)
            }
            #expect(tail.message.contains("offset \(lastOfSecond) of news.wire"))
            #expect(try log.read(from: Int64(lastOfSecond), maxBytes: 1, skipDamaged: true)?.firstOffset == bases[2])
            #expect(try damagedRangesCounted(metrics) == 2)

            // Reading everything with skip gets every intact batch exactly once.
            var offset: Int64 = 0
            var read: [Int64] = []
            while let slice = try log.read(from: offset, maxBytes: 1000, skipDamaged: true) {
                read += try RecordBatch.split(try slice.readBytes()).map { header($0).baseOffset }
                offset = slice.nextOffset
            }
            #expect(read == (0..<300).filter { $0 != 10 && $0 != Int64(lastOfSecond) })
            #expect(FileManager.default.fileExists(
                atPath: logDirectory(directory) + "/damaged/" + Segment.fileName(0, "-\(fixture.positions[10]).bin")))
        }
    }

    @Test("checkSegment checks a sealed segment ahead of reads (the broker runs it off its event loops)")
    func checkSegmentAheadOfReads() async throws {
        try await withTemporaryDirectory { directory in
            let batchSize = makeBatch(records: 1, seed: 0).readableBytes
            let configuration = testConfiguration(segmentBytes: batchSize * 40)
            let fixture = try ThreeHundredEvents(directory, configuration: configuration)
            try fixture.flipBit(at: fixture.positions[10] + 80)
            let (log, handler, _) = try openObserved(directory, configuration)
            #expect(log.needsCheck(at: 0) && log.needsCheck(at: 10))
            #expect(!log.needsCheck(at: 299))
            try log.checkSegment(containing: 0)
            #expect(!log.needsCheck(at: 10))
            #expect(handler.errorMessages == ["damaged batches in log: serving around them"])
            #expect(throws: TelexError.self) { _ = try log.read(from: 10, maxBytes: 1) }
        }
    }

    @Test("deleting a topic removes its copies of damaged bytes too")
    func deleteTopicWithDamage() async throws {
        try await withTemporaryDirectory { directory in
            let configuration = testConfiguration()
            do {
                let store = try TopicStore(directory: directory, configuration: configuration, logger: makeLogger())
                let log = try store.createLog("news.world").log
                for seed in 0..<3 { _ = try log.append(makeBatch(records: 1, seed: seed)) }
                try store.close()
            }
            let topicDirectory = directory + "/topics/news.world"
            let path = topicDirectory + "/" + Segment.fileName(0, ".log")
            var contents = try readFile(path)
            contents[RecordBatchHeader.size + 10] ^= 0x01
            try writeFile(path, contents)
            let store = try TopicStore(directory: directory, configuration: configuration, logger: makeLogger())
            #expect(FileManager.default.fileExists(atPath: topicDirectory + "/damaged"))
            #expect(try store.deleteLog("news.world"))
            #expect(!FileManager.default.fileExists(atPath: topicDirectory))
            try store.close()
        }
    }

    @Test("time lookups and producer memory step over damaged ranges")
    func walksStepOverDamage() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try ThreeHundredEvents(directory)
            // Garbage in place of batch 150's header: a walk that read it would jump to nonsense.
            var contents = try readFile(fixture.logPath)
            for index in fixture.positions[150]..<(fixture.positions[150] + 24) { contents[index] = 0xFF }
            try writeFile(fixture.logPath, contents)
            let (log, handler, _) = try openObserved(directory, fixture.configuration)
            #expect(handler.errorMessages.count == 1)
            let times = fixture.stored.map { header($0).appendTime }
            #expect(try log.offset(atOrAfter: times[299]) <= 299)
            #expect(try log.offset(atOrAfter: times[299] + 1) == 300)
        }
    }
}
