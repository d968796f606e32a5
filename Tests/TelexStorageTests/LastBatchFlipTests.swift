import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

/// A flipped bit in the active segment's last batch, wherever it is: nothing acknowledged is lost, no offset is
/// given out again (Protocol/STORAGE.md §6.1).
@Suite("A flipped bit in the active segment's last batch", .timeLimit(.minutes(1)))
struct LastBatchFlipTests {
    /// Opens the log after the flip and checks that it kept the last batch as damage: no cut, every earlier
    /// batch served, offset 299 lost, and appends (now and after a reopen) above every stored offset.
    private func expectKept(_ fixture: ThreeHundredEvents, size: Int) throws -> TopicLog {
        let handler = RecordingLogHandler()
        let log = try openLog(fixture.directory, fixture.configuration, handler: handler)
        #expect(!handler.messages.contains("cut torn log tail"))
        #expect(handler.errorMessages == ["damaged batches in log: serving around them"])
        #expect(try fileSize(fixture.logPath) == size)
        #expect(log.endOffset >= 300)
        let read = try readAllBatches(log, skipDamaged: true)
        #expect(read.map(bytes) == fixture.stored.dropLast().map(bytes))
        #expect(throws: TelexError.self) { _ = try log.read(from: 299, maxBytes: .max) }
        let appended = try log.append(makeBatch(records: 1)).baseOffset
        #expect(appended >= 300)
        try log.close()
        let reopened = try openLog(fixture.directory, fixture.configuration)
        #expect(reopened.endOffset == appended + 1)
        return reopened
    }

    @Test("in its base offset (outside the CRC): a damaged range holding exactly its offsets")
    func baseOffset() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try ThreeHundredEvents(directory)
            try fixture.flipBit(at: fixture.positions.last! + 7)
            let log = try expectKept(fixture, size: try fileSize(fixture.logPath))
            #expect(log.endOffset == 301)
        }
    }

    @Test("in its batchLength, longer than the file and shorter than the batch", arguments: [8, 11])
    func batchLength(byte: Int) async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try ThreeHundredEvents(directory)
            let last = fixture.positions.last!
            var contents = try readFile(fixture.logPath)
            // Byte 8 is the top byte of the big-endian length (the batch now overshoots the file); byte 11 the
            // lowest: clearing its lowest set bit shortens the batch.
            let low = contents[last + 11]
            contents[last + byte] ^= byte == 8 ? 0x01 : low & (~low &+ 1)
            try writeFile(fixture.logPath, contents)
            let claimed = header(ByteBuffer(bytes: contents[last...])).totalSize
            #expect(byte == 8 ? claimed > contents.count - last : claimed < contents.count - last)
            let log = try expectKept(fixture, size: contents.count)
            #expect(log.endOffset == 301)
        }
    }

    @Test("in its magic (inside the CRC): a damaged range, the end at or above the offsets it could hold")
    func magic() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try ThreeHundredEvents(directory)
            try fixture.flipBit(at: fixture.positions.last! + RecordBatchHeader.crcStart)
            _ = try expectKept(fixture, size: try fileSize(fixture.logPath))
        }
    }

    @Test("in its record count, made smaller: the CRC finds the real count, so no offset is given out again")
    func recordCountSmaller() async throws {
        try await withTemporaryDirectory { directory in
            let (configuration, path, last) = try segmentEndingInABigBatch(directory, records: 5)
            var contents = try readFile(path)
            contents[last + 59] ^= 0x01  // the low byte of recordCount: 5 becomes 4
            try writeFile(path, contents)

            let handler = RecordingLogHandler()
            let reopened = try openLog(directory, configuration, handler: handler)
            #expect(!handler.messages.contains("cut torn log tail"))
            #expect(reopened.endOffset == 8)
            #expect(try reopened.append(makeBatch(records: 1)).baseOffset == 8)
        }
    }

    @Test("a last batch whose final partial sector is all zeros is still a torn tail")
    func zeroPartialFinalSectorIsTorn() async throws {
        try await withTemporaryDirectory { directory in
            let (configuration, path, last) = try segmentEndingInABigBatch(directory, records: 30)
            var contents = try readFile(path)
            let sector = contents.count / 512 * 512
            #expect(sector > last + RecordBatchHeader.size)
            #expect(sector < contents.count)
            for index in sector..<contents.count { contents[index] = 0 }
            try writeFile(path, contents)

            let handler = RecordingLogHandler()
            let reopened = try openLog(directory, configuration, handler: handler)
            #expect(handler.messages.contains("cut torn log tail"))
            #expect(handler.errorMessages.isEmpty)
            #expect(reopened.endOffset == 3)
            #expect(try fileSize(path) == last)
        }
    }

    @Test("a tail of zeros after the last batch (a write whose data never reached the disk) is a torn tail")
    func zeroTailIsTorn() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try ThreeHundredEvents(directory)
            let size = try fileSize(fixture.logPath)
            try writeFile(fixture.logPath, try readFile(fixture.logPath) + [UInt8](repeating: 0, count: 3000))

            let handler = RecordingLogHandler()
            let log = try openLog(directory, fixture.configuration, handler: handler)
            #expect(handler.messages.contains("cut torn log tail"))
            #expect(handler.errorMessages.isEmpty)
            #expect(log.endOffset == 300)
            #expect(try fileSize(fixture.logPath) == size)
        }
    }
}
