import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

/// Expects `read` to throw `DATA_LOSS`.
private func expectDataLoss(_ read: () throws -> LogSlice?, _ comment: Comment? = nil) {
    #expect(comment) { _ = try read() } throws: { error in (error as? TelexError)?.code == .dataLoss }
}

/// A closed log of three one-record batches and a last batch of `records` records, with the path of its
/// segment and the byte position of that last batch.
func segmentEndingInABigBatch(
    _ directory: String, records: Int
) throws -> (configuration: LogConfiguration, path: String, last: Int) {
    let configuration = testConfiguration()
    let log = try openLog(directory, configuration)
    for seed in 0..<3 { _ = try log.append(makeBatch(records: 1, seed: seed)) }
    _ = try log.append(makeBatch(records: records, seed: 3))
    let stored = try readAllBatches(log)
    try log.close()
    return (configuration, segmentPath(directory, 0, ".log"), stored.dropLast().reduce(0) { $0 + $1.readableBytes })
}

@Suite("Damage at segment ends, append times and gaps", .timeLimit(.minutes(1)))
struct TailDamageTests {
    @Test("an append time moved forward by a bit flip mid active segment: a warning, nothing lost or cut")
    func appendTimeMovedForward() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try ThreeHundredEvents(directory)
            let middle = ThreeHundredEvents.count / 2
            // Byte 13 is the second byte of the big-endian append time (bytes 12-19, outside the CRC).
            var contents = try readFile(fixture.logPath)
            contents[fixture.positions[middle] + 13] ^= 0x40
            try writeFile(fixture.logPath, contents)

            let handler = RecordingLogHandler()
            let log = try openLog(directory, fixture.configuration, handler: handler)
            #expect(!handler.messages.contains("cut torn log tail"))
            #expect(handler.errorMessages.isEmpty)
            #expect(handler.messages.contains("append time going backwards"))
            #expect(log.endOffset == Int64(ThreeHundredEvents.count))
            #expect(try fileSize(fixture.logPath) == contents.count)
            let read = try readAllBatches(log)
            #expect(read.count == ThreeHundredEvents.count)
            #expect(read.map { bytes($0).dropFirst(20) } == fixture.stored.map { bytes($0).dropFirst(20) })
            let moved = header(read[middle]).appendTime
            #expect(moved > header(fixture.stored[middle]).appendTime)
            #expect(log.lastAppendTime == moved)
            #expect(try log.append(makeBatch(records: 1)).baseOffset == Int64(ThreeHundredEvents.count))
        }
    }

    @Test("an acknowledged last batch with one flipped bit is a damaged range: its offset is kept, its bytes copied")
    func flippedLastBatchIsDamage() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try ThreeHundredEvents(directory)
            let last = fixture.positions.last!
            try fixture.flipBit(at: last + 80)
            let size = try fileSize(fixture.logPath)

            let handler = RecordingLogHandler()
            let log = try openLog(directory, fixture.configuration, handler: handler)
            #expect(!handler.messages.contains("cut torn log tail"))
            #expect(handler.errorMessages == ["damaged batches in log: serving around them"])
            #expect(log.endOffset == 300)
            #expect(try fileSize(fixture.logPath) == size)
            expectDataLoss { try log.read(from: 299, maxBytes: .max) }
            #expect(try log.read(from: 298, maxBytes: .max)?.nextOffset == 299)
            let copy = logDirectory(directory) + "/damaged/" + Segment.fileName(0, "-\(last).bin")
            #expect(try readFile(copy) == Array(try readFile(fixture.logPath)[last...]))
            #expect(try log.append(makeBatch(records: 1)).baseOffset == 300)
            try log.close()

            let reopened = try openLog(directory, fixture.configuration)
            #expect(reopened.endOffset == 301)
            expectDataLoss { try reopened.read(from: 299, maxBytes: .max) }
            #expect(try reopened.read(from: 299, maxBytes: .max, skipDamaged: true)?.firstOffset == 300)
        }
    }

    @Test("a last batch with an unwritten (all-zero) 512-byte sector is a torn tail: cut, and copied aside first")
    func zeroSectorInLastBatchIsTorn() async throws {
        try await withTemporaryDirectory { directory in
            let (configuration, path, last) = try segmentEndingInABigBatch(directory, records: 30)
            var contents = try readFile(path)
            let sector = (last + RecordBatchHeader.size + 511) / 512 * 512
            #expect(sector + 512 <= contents.count)
            for index in sector..<(sector + 512) { contents[index] = 0 }
            try writeFile(path, contents)

            let handler = RecordingLogHandler()
            let reopened = try openLog(directory, configuration, handler: handler)
            #expect(handler.messages.contains("cut torn log tail"))
            #expect(handler.errorMessages.isEmpty)
            #expect(reopened.endOffset == 3)
            #expect(try fileSize(path) == last)
            let copy = logDirectory(directory) + "/damaged/" + Segment.fileName(0, "-\(last)-torn.bin")
            #expect(try readFile(copy) == Array(contents[last...]))
            #expect(try reopened.append(makeBatch(records: 1)).baseOffset == 3)
        }
    }

    @Test("a bad tail of a sealed segment found while serving stays a damaged range up to the next segment")
    func sealedTailDamageIsNeverCut() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try CrashFixture(directory)
            // Segment 0 holds offsets 0-5 in three batches; its last one (4-5) is flipped.
            let path = segmentPath(directory, 0, ".log")
            let size = try fileSize(path)
            let batch = fixture.stored[0].readableBytes
            var contents = try readFile(path)
            contents[2 * batch + 80] ^= 0x10
            try writeFile(path, contents)

            let log = try openLog(directory, fixture.configuration)
            expectDataLoss { try log.read(from: 4, maxBytes: .max) }
            try log.close()
            for _ in 0..<2 {
                let handler = RecordingLogHandler()
                let reopened = try openLog(directory, fixture.configuration, handler: handler)
                #expect(!handler.messages.contains("cut torn log tail"))
                #expect(try fileSize(path) == size)
                #expect(try reopened.read(from: 2, maxBytes: .max)?.nextOffset == 4)
                expectDataLoss { try reopened.read(from: 4, maxBytes: .max) }
                expectDataLoss { try reopened.read(from: 5, maxBytes: .max) }
                #expect(try reopened.read(from: 4, maxBytes: 1, skipDamaged: true)?.firstOffset == 6)
                try reopened.close()
            }
        }
    }

    @Test("the segment before the active one: a bad last batch is a damaged range, not a torn tail",
          arguments: [false, true])
    func segmentBeforeActiveTailIsDamage(unsealed: Bool) async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try CrashFixture(directory)
            let path = segmentPath(directory, 6, ".log")
            let size = try fileSize(path)
            var contents = try readFile(path)
            contents[size - 20] ^= 0x10
            try writeFile(path, contents)
            // Without a recovery point the segment may be unsealed, and the open scans it; with one it is trusted
            // at open and checked when first read.
            if unsealed { try FileManager.default.removeItem(atPath: logDirectory(directory) + "/recovery-point") }

            let handler = RecordingLogHandler()
            let log = try openLog(directory, fixture.configuration, handler: handler)
            #expect(!handler.messages.contains("cut torn log tail"))
            #expect(handler.errorMessages == (unsealed ? ["damaged batches in log: serving around them"] : []))
            #expect(try fileSize(path) == size)
            expectDataLoss { try log.read(from: 10, maxBytes: .max) }
            #expect(handler.errorMessages == ["damaged batches in log: serving around them"])
            #expect(try log.read(from: 10, maxBytes: 1, skipDamaged: true)?.firstOffset == 12)
            #expect(log.endOffset == fixture.lastBase + 1)
        }
    }

    @Test("a gap between segments is DATA_LOSS for a reader, or skipped with skip-damaged; never jumped silently")
    func gapBetweenSegments() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try CrashFixture(directory)
            // Segment 0 loses its last batch (offsets 4-5) from its end.
            let batch = fixture.stored[0].readableBytes
            truncateFile(segmentPath(directory, 0, ".log"), to: 2 * batch)

            let log = try openLog(directory, fixture.configuration)
            #expect(try log.read(from: 2, maxBytes: .max)?.nextOffset == 4)
            for offset in Int64(4)...5 {
                expectDataLoss({ try log.read(from: offset, maxBytes: .max) }, "offset \(offset)")
                #expect(try log.read(from: offset, maxBytes: 1, skipDamaged: true)?.firstOffset == 6)
            }
            #expect(try log.read(from: 6, maxBytes: 1)?.firstOffset == 6)
        }
    }

    @Test("readForDelivery never CRC-checks: stepping over damage into an unchecked segment asks for a check there")
    func deliveryReadAsksForChecks() async throws {
        try await withTemporaryDirectory { directory in
            let batchSize = makeBatch(records: 2, seed: 0).readableBytes
            let configuration = testConfiguration(segmentBytes: batchSize * 3 + batchSize / 2)
            let log = try openLog(directory, configuration)
            for _ in 0..<10 { _ = try log.append(makeBatch(records: 2, seed: 0)) }
            try log.close()
            #expect(try segmentBases(directory) == [0, 6, 12, 18])
            // Segment 0's last batch (offsets 4-5) is flipped; segments 0 and 6 are trusted on open, not checked.
            var contents = try readFile(segmentPath(directory, 0, ".log"))
            contents[2 * batchSize + 80] ^= 0x10
            try writeFile(segmentPath(directory, 0, ".log"), contents)

            let reopened = try openLog(directory, configuration)
            guard case .needsCheck(let first) = try reopened.readForDelivery(from: 4, maxBytes: .max) else {
                Issue.record("a read of an unchecked segment did not ask for a check")
                return
            }
            try reopened.checkSegment(containing: first)
            #expect(throws: TelexError.self) { _ = try reopened.readForDelivery(from: 4, maxBytes: .max) }
            guard case .needsCheck(let next) = try reopened.readForDelivery(from: 4, maxBytes: .max, skipDamaged: true)
            else {
                Issue.record("stepping over damage into an unchecked segment did not ask for a check")
                return
            }
            #expect(next == 6)
            #expect(reopened.needsCheck(at: 6))
            try reopened.checkSegment(containing: next)
            guard case .slice(let slice) = try reopened.readForDelivery(from: 4, maxBytes: 1, skipDamaged: true) else {
                Issue.record("no slice after the check")
                return
            }
            #expect(slice.firstOffset == 6)
        }
    }

    @Test("after damage, a valid batch stored inside a record's value is not taken for a real one")
    func batchInsideARecordIsNotACandidate() async throws {
        try await withTemporaryDirectory { directory in
            // A whole valid batch claiming offset 5, carried as the value of the record of the batch at offset 1.
            var inner = makeBatch(records: 1, seed: 7)
            RecordBatch.assign(baseOffset: 5, appendTime: 1_700_000_000_000, in: &inner, at: inner.readerIndex)
            var builder = RecordBatchBuilder()
            builder.append(timestamp: 1_700_000_000_000, key: ByteBuffer(string: "carrier"), value: inner)
            let configuration = testConfiguration()
            let log = try openLog(directory, configuration)
            for batch in [makeBatch(records: 1, seed: 0), builder.build(codec: .none), makeBatch(records: 1, seed: 2),
                          makeBatch(records: 1, seed: 3)]
            {
                _ = try log.append(batch)
            }
            let stored = try readAllBatches(log)
            try log.close()
            // A bit flipped in the carrier's key, before the inner batch: the carrier fails its CRC.
            let path = segmentPath(directory, 0, ".log")
            var contents = try readFile(path)
            contents[stored[0].readableBytes + RecordBatchHeader.size + 4] ^= 0x10
            try writeFile(path, contents)

            let reopened = try openLog(directory, configuration)
            #expect(reopened.endOffset == 4)
            expectDataLoss { try reopened.read(from: 1, maxBytes: 1) }
            #expect(try reopened.read(from: 1, maxBytes: 1, skipDamaged: true)?.firstOffset == 2)
            for offset in Int64(2)...3 {
                let slice = try #require(try reopened.read(from: offset, maxBytes: 1))
                #expect(bytes(try slice.readBytes()) == bytes(stored[Int(offset)]))
            }
        }
    }
}
