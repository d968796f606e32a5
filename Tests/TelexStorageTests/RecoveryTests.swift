import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

/// A closed log of three segments whose active one holds two batches, the second smaller (the "last batch").
struct CrashFixture {
    let directory: String
    let configuration: LogConfiguration
    /// Every stored batch, in order.
    let stored: [ByteBuffer]
    let activeBase: Int64
    let lastBase: Int64
    /// Byte position of the last batch in the active segment file.
    let lastPosition: Int
    let lastSize: Int
    let snapshot: DirectorySnapshot

    var activeLogPath: String { segmentPath(directory, activeBase, ".log") }

    init(_ directory: String, lastCodec: Codec = .none) throws {
        self.directory = directory
        let batchSize = makeBatch(records: 2, seed: 0).readableBytes
        configuration = testConfiguration(segmentBytes: batchSize * 3 + batchSize / 2, indexIntervalBytes: 1)
        let log = try openLog(directory, configuration)
        for _ in 0..<7 { _ = try log.append(makeBatch(records: 2, seed: 0)) }
        _ = try log.append(makeBatch(records: 1, seed: 5, codec: lastCodec))
        stored = try readAllBatches(log)
        try log.close()

        let bases = try segmentBases(directory)
        precondition(bases == [0, 6, 12], "fixture layout changed: \(bases)")
        activeBase = bases.last!
        lastBase = header(stored.last!).baseOffset
        lastSize = stored.last!.readableBytes
        lastPosition = try fileSize(segmentPath(directory, activeBase, ".log")) - lastSize
        snapshot = try DirectorySnapshot(logDirectory(directory))
    }
}

@Suite("Crash recovery", .timeLimit(.minutes(1)))
struct RecoveryTests {
    @Test("a batch torn at any byte is cut on reopen; earlier batches stay and appends continue after them")
    func tornTailAtEveryByte() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try CrashFixture(directory)
            let kept = fixture.stored.dropLast().map(bytes)
            for cut in fixture.lastPosition..<(fixture.lastPosition + fixture.lastSize) {
                try fixture.snapshot.restore()
                truncateFile(fixture.activeLogPath, to: cut)
                let handler = RecordingLogHandler()
                let log = try openLog(directory, fixture.configuration, handler: handler)
                #expect(log.endOffset == fixture.lastBase, "cut at \(cut)")
                #expect(log.readableEndOffset == fixture.lastBase)
                #expect(try fileSize(fixture.activeLogPath) == fixture.lastPosition)
                #expect(try readAllBatches(log).map(bytes) == kept, "cut at \(cut)")
                #expect(handler.messages.contains("cut torn log tail") == (cut > fixture.lastPosition))

                let result = try log.append(makeBatch(records: 4, seed: 9))
                #expect(result.baseOffset == fixture.lastBase)
                try log.close()
                let reopened = try openLog(directory, fixture.configuration)
                #expect(reopened.endOffset == fixture.lastBase + 4)
                let after = try readAllBatches(reopened)
                #expect(after.dropLast().map(bytes) == kept)
                #expect(header(after.last!).baseOffset == fixture.lastBase)
            }
        }
    }

    @Test(
        "a bit flipped anywhere in the last batch (header included): damage, never a torn tail; its offsets are kept",
        arguments: Codec.allCases)
    func bitFlipsInLastBatch(codec: Codec) async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try CrashFixture(directory, lastCodec: codec)
            let kept = fixture.stored.dropLast().map(bytes)
            let pristine = try readFile(fixture.activeLogPath)
            // Bytes 12-19 hold the append time, which the CRC does not cover; see appendTimeGoingBackwards.
            for position in 0..<fixture.lastSize where !(12..<20).contains(position) {
                try fixture.snapshot.restore()
                var contents = pristine
                contents[fixture.lastPosition + position] ^= UInt8(1 << (position % 8))
                try writeFile(fixture.activeLogPath, contents)
                let handler = RecordingLogHandler()
                let log = try openLog(directory, fixture.configuration, handler: handler)
                let remaining = try readAllBatches(log, skipDamaged: true)
                #expect(remaining.map(bytes) == kept, "flip at byte \(position)")
                for batch in remaining { _ = try RecordBatch.validate(batch) }
                // The batch was written whole (a whole length, no unwritten sector, or a CRC that matches): damage,
                // its offsets kept, whatever the flip did to its base offset, length, magic or count (§6.1).
                #expect(!handler.messages.contains("cut torn log tail"), "flip at byte \(position)")
                #expect(handler.errorMessages == ["damaged batches in log: serving around them"])
                #expect(throws: TelexError.self) { _ = try log.read(from: fixture.lastBase, maxBytes: .max) }
                #expect(log.endOffset > fixture.lastBase, "flip at byte \(position)")
                let end = log.endOffset
                #expect(try log.append(makeBatch(records: 1)).baseOffset == end)
            }
        }
    }

    @Test("a last batch whose append time goes back before the previous batch's is kept, with a warning")
    func appendTimeGoingBackwards() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try CrashFixture(directory)
            var contents = try readFile(fixture.activeLogPath)
            for index in 12..<20 { contents[fixture.lastPosition + index] = 0 }
            try writeFile(fixture.activeLogPath, contents)
            let handler = RecordingLogHandler()
            let log = try openLog(directory, fixture.configuration, handler: handler)
            #expect(log.endOffset == fixture.lastBase + 1)
            #expect(!handler.messages.contains("cut torn log tail"))
            #expect(handler.messages.contains("append time going backwards"))
            #expect(log.lastAppendTime == header(fixture.stored[fixture.stored.count - 2]).appendTime)
            #expect(try readAllBatches(log).map { bytes($0).dropFirst(20) }
                == fixture.stored.map { bytes($0).dropFirst(20) })
        }
    }

    @Test("a corrupt batch in the middle of the active segment is kept in place and never read; the batch after it stays")
    func corruptionMidActiveSegment() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try CrashFixture(directory)
            let firstActive = fixture.lastPosition - fixture.stored[fixture.stored.count - 2].readableBytes
            #expect(firstActive == 0)
            var contents = try readFile(fixture.activeLogPath)
            contents[firstActive + 100] ^= 0x40
            try writeFile(fixture.activeLogPath, contents)

            let log = try openLog(directory, fixture.configuration)
            #expect(log.endOffset == fixture.lastBase + 1)
            for offset in fixture.activeBase..<fixture.lastBase {
                #expect(throws: TelexError.self) { _ = try log.read(from: offset, maxBytes: .max) }
            }
            let last = try #require(try log.read(from: fixture.activeBase, maxBytes: .max, skipDamaged: true))
            #expect(bytes(try last.readBytes()) == bytes(fixture.stored.last!))
            #expect(try log.read(from: 0, maxBytes: .max)?.nextOffset ?? 0 <= fixture.activeBase)
            #expect(try fileSize(fixture.activeLogPath) == contents.count)
            #expect(try log.append(makeBatch(records: 2)).baseOffset == fixture.lastBase + 1)
        }
    }

    /// Ways the index files of a sealed segment can be lost or damaged.
    enum IndexDamage: String, CaseIterable, CustomTestStringConvertible {
        case offsetIndexDeleted, timeIndexDeleted, bothDeleted
        case offsetIndexGarbage, timeIndexGarbage
        /// A single well-formed time index entry that names the wrong batch.
        case timeIndexLying
        /// The offset index cut mid-entry.
        case offsetIndexTorn

        var testDescription: String { rawValue }
    }

    @Test("damaged indexes of sealed segments are rebuilt and lookups stay right", arguments: IndexDamage.allCases)
    func damagedIndexesAreRebuilt(damage: IndexDamage) async throws {
        try await withTemporaryDirectory { directory in
            let batchSize = makeBatch(records: 2, seed: 3).readableBytes
            let configuration = testConfiguration(segmentBytes: batchSize * 5, indexIntervalBytes: 1)
            do {
                let log = try openLog(directory, configuration)
                _ = try appendWithDistinctTimes(log, (0..<12).map { _ in makeBatch(records: 2, seed: 3) })
                try log.close()
            }
            let bases = try segmentBases(directory)
            #expect(bases == [0, 10, 20])
            let sealed = bases.dropLast()
            var originals: [String: [UInt8]] = [:]
            for base in sealed {
                for suffix in [".index", ".timeindex"] {
                    let path = segmentPath(directory, base, suffix)
                    originals[path] = try readFile(path)
                }
            }

            var random = SeededGenerator(seed: 42)
            for base in sealed {
                let index = segmentPath(directory, base, ".index")
                let times = segmentPath(directory, base, ".timeindex")
                switch damage {
                case .offsetIndexDeleted:
                    try FileManager.default.removeItem(atPath: index)
                case .timeIndexDeleted:
                    try FileManager.default.removeItem(atPath: times)
                case .bothDeleted:
                    try FileManager.default.removeItem(atPath: index)
                    try FileManager.default.removeItem(atPath: times)
                case .offsetIndexGarbage:
                    try writeFile(
                        index, (0..<originals[index]!.count).map { _ in UInt8.random(in: 0...255, using: &random) })
                case .timeIndexGarbage:
                    try writeFile(
                        times, (0..<originals[times]!.count).map { _ in UInt8.random(in: 0...255, using: &random) })
                case .timeIndexLying:
                    var entry = ByteBuffer()
                    entry.writeMultipleIntegers(Int64(1), UInt32(9))
                    try writeFile(times, bytes(entry))
                case .offsetIndexTorn:
                    try writeFile(index, Array(originals[index]!.dropLast(3)))
                }
            }

            let handler = RecordingLogHandler()
            let log = try openLog(directory, configuration, handler: handler)
            #expect(handler.messages.filter { $0 == "rebuilding index" }.count == sealed.count)
            #expect(log.endOffset == 24)
            for base in sealed {
                // The offset index is rebuilt exactly; the time index may lack the closing entry added at roll.
                #expect(
                    try readFile(segmentPath(directory, base, ".index"))
                        == originals[segmentPath(directory, base, ".index")])
                let rebuilt = try readFile(segmentPath(directory, base, ".timeindex"))
                let original = originals[segmentPath(directory, base, ".timeindex")]!
                #expect(!rebuilt.isEmpty)
                #expect(rebuilt.count % TimeIndexEntry.size == 0)
                #expect(Array(original.prefix(rebuilt.count)) == rebuilt)
            }

            let times = try appendTimes(log)
            #expect(times.count == 12)
            for offset in Int64(0)..<24 {
                let slice = try #require(try log.read(from: offset, maxBytes: 1))
                #expect(slice.firstOffset == offset / 2 * 2)
            }
            for timestamp in (times.first!.appendTime - 1)...(times.last!.appendTime + 1) {
                #expect(
                    try log.offset(atOrAfter: timestamp)
                        == expectedOffset(atOrAfter: timestamp, batches: times, end: 24),
                    "timestamp \(timestamp)")
            }
            try log.close()

            // Rebuilt indexes load cleanly next time.
            let second = RecordingLogHandler()
            let reopened = try openLog(directory, configuration, handler: second)
            #expect(!second.messages.contains("rebuilding index"))
            #expect(reopened.endOffset == 24)
        }
    }
}
