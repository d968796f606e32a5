import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

/// A sealed segment trusted by its indexes at open (not CRC-checked yet) with a flipped `batchLength` between two
/// index entries: walks over its headers must not take the bytes they jump to for batches.
private struct TrustedFlipFixture {
    let directory: String
    let configuration: LogConfiguration
    let batchSize: Int
    /// Append time of each batch (2 records each; segment 0 holds offsets 0-11, segment 12 the rest).
    let appendTimes: [Int64]

    init(_ directory: String, producerID: Int64 = 0) throws {
        self.directory = directory
        batchSize = makeBatch(records: 2, seed: 0).readableBytes
        // Index entries at batches 0 and 3, so batches 1 and 2 are reached only by walking from batch 0.
        configuration = testConfiguration(segmentBytes: batchSize * 6 + batchSize / 2,
                                          indexIntervalBytes: batchSize * 2 + batchSize / 2)
        let log = try openLog(directory, configuration)
        let batches = (0..<8).map { index in
            makeBatch(records: 2, seed: 0, producerID: producerID, sequence: producerID == 0 ? -1 : Int32(index * 2))
        }
        appendTimes = try appendWithDistinctTimes(log, batches).map(\.appendTime)
        try log.close()
        let bases = try segmentBases(directory)
        precondition(bases == [0, 12], "fixture layout changed: \(bases)")
    }

    /// Changes batch 1's `batchLength` (bytes 8-11 of its header, outside the CRC) by `change`.
    func changeLength(_ change: (UInt32) -> UInt32) throws {
        let path = segmentPath(directory, 0, ".log")
        var contents = try readFile(path)
        var buffer = ByteBuffer(bytes: contents[(batchSize + 8)..<(batchSize + 12)])
        let length = change(buffer.readInteger(as: UInt32.self)!)
        for (index, byte) in withUnsafeBytes(of: length.bigEndian, Array.init).enumerated() {
            contents[batchSize + 8 + index] = byte
        }
        try writeFile(path, contents)
    }
}

@Suite("Walks over a trusted sealed segment with a flipped batchLength", .timeLimit(.minutes(1)))
struct TrustedSegmentWalkTests {
    @Test("a read past the flipped header checks the segment instead of reporting a gap; skip-damaged keeps intact batches")
    func readChecksBeforeGap() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try TrustedFlipFixture(directory)
            try fixture.changeLength { $0 ^ 0x0100_0000 }  // far past the end of the segment
            let log = try openLog(directory, fixture.configuration)
            #expect(log.needsCheck(at: 4))
            guard case .needsCheck(let offset) = try log.readForDelivery(from: 4, maxBytes: 1, skipDamaged: true) else {
                Issue.record("a read over unchecked bytes must ask for a check")
                return
            }
            #expect(offset == 4)
            #expect(try log.read(from: 4, maxBytes: 1)?.firstOffset == 4)
            #expect(try log.read(from: 2, maxBytes: 1, skipDamaged: true)?.firstOffset == 4)
            #expect(throws: TelexError.self) { _ = try log.read(from: 2, maxBytes: 1) }
            guard case .slice(let slice) = try log.readForDelivery(from: 4, maxBytes: 1, skipDamaged: true) else {
                Issue.record("a checked segment is served")
                return
            }
            #expect(slice.firstOffset == 4)
        }
    }

    @Test("offset(atOrAfter:) stops at the flipped header: never past a batch it could not vouch for")
    func timeSearchStops() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try TrustedFlipFixture(directory)
            try fixture.changeLength { $0 ^ 0x0100_0000 }
            let log = try openLog(directory, fixture.configuration)
            let found = try log.offset(atOrAfter: fixture.appendTimes[2])
            #expect(found >= 0 && found <= 4)
            #expect(found == 2)
            #expect(try log.offset(atOrAfter: fixture.appendTimes[0]) == 0)
        }
    }

    @Test("offset(atOrAfter:) never takes bytes inside a batch for a header", arguments: [16, 40])
    func timeSearchInsideBatch(shorter: UInt32) async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try TrustedFlipFixture(directory)
            try fixture.changeLength { $0 - shorter }
            let log = try openLog(directory, fixture.configuration)
            let found = try log.offset(atOrAfter: fixture.appendTimes[2])
            #expect(found >= 0 && found <= 4)
        }
    }

    @Test("producer memory rebuilt on open stops at the flipped header: no made-up producer", arguments: [16, 40])
    func producersStop(shorter: UInt32) async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try TrustedFlipFixture(directory, producerID: 7)
            try fixture.changeLength { $0 - shorter }
            try? FileManager.default.removeItem(atPath: logDirectory(directory) + "/" + ProducerSnapshot.fileName)
            let log = try openLog(directory, fixture.configuration)
            let producers = log.state.withLock { Array($0.producers.keys) }
            #expect(producers == [7])
            // The active segment's batches were walked: a retry of the last batch is still a duplicate.
            let retry = try log.append(makeBatch(records: 2, seed: 0, producerID: 7, sequence: 14))
            #expect(retry.baseOffset == 14)
            #expect(log.endOffset == 16)
        }
    }
}
