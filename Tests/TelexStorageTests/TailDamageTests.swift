import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

/// Expects `read` to throw `DATA_LOSS`.
private func expectDataLoss(_ read: () throws -> LogSlice?, _ comment: Comment? = nil) {
    #expect(comment) { _ = try read() } throws: { error in (error as? TelexError)?.code == .dataLoss }
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
}
