import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

@Suite("Reads below the local log, from the archive", .timeLimit(.minutes(1)))
struct ArchiveReadTests {
    @Test("reads from offset 0 cross archive, local log and new appends with every offset once, in order")
    func acrossArchiveAndLocal() async throws {
        try await withTemporaryDirectory { directory in
            let archive = try FakeArchiveTier(directory: directory)
            let log = try makeArchivedLog(directory, archive: archive)
            let sealed = archive.archivedSegments(of: log.topic)
            #expect(sealed.count >= 3)
            #expect(try log.applyRetention() == sealed.count)
            #expect(log.localStartOffset == sealed.last!.nextOffset)
            #expect(log.startOffset == 0)
            #expect(log.segmentCount == 1)

            // Delivery asks for one fetch per archived segment, then reads on into the local log.
            let first = try await deliverAll(log)
            #expect(first.offsets == Array(0..<40))
            #expect(first.fetchesAsked == sealed.count)
            #expect(archive.fetchCount == sealed.count)

            for seed in 20..<25 { _ = try log.append(makeBatch(records: 2, seed: seed)) }
            // Again, in large slices: the cached copies are opened again (only 4 stay open), not downloaded again.
            let again = try await deliverAll(log, maxBytes: 1 << 20)
            #expect(again.offsets == Array(0..<50))
            #expect(archive.fetchCount == sealed.count)

            // The blocking read fetches by itself (on a thread of its own: it waits for the tier's fetch task).
            let fresh = try TopicLog(topic: log.topic, directory: directory + "/log", configuration: log.configuration,
                                     logger: makeLogger(), archive: archive)
            try FileManager.default.removeItem(atPath: archive.cacheDirectory + "/" + log.topic)
            let blocking = try await onOwnThread { () throws -> [Int64] in
                var offset: Int64 = 0
                var all: [Int64] = []
                while let slice = try fresh.read(from: offset, maxBytes: 1) {
                    all += try offsets(in: slice).filter { $0 >= offset }
                    offset = slice.nextOffset
                }
                return all
            }
            #expect(blocking == Array(0..<50))
            #expect(archive.fetchCount == 2 * sealed.count)

            // From the middle of an archived segment, and a coarse time lookup before the local log.
            let middle = try await deliverAll(log, from: 3)
            #expect(middle.offsets == Array(3..<50))
            #expect(try log.offset(atOrAfter: 0) == 0)
            try log.close()
            try fresh.close()
        }
    }

    @Test("offsets no archived segment holds (one missing from the listing) are DATA_LOSS; skip-damaged reads on")
    func missingArchivedSegment() async throws {
        try await withTemporaryDirectory { directory in
            let archive = try FakeArchiveTier(directory: directory)
            let log = try makeArchivedLog(directory, archive: archive)
            let sealed = archive.archivedSegments(of: log.topic)
            #expect(sealed.count >= 3)
            #expect(try log.applyRetention() == sealed.count)
            let missing = sealed[1]
            archive.unlist(topic: log.topic, baseOffset: missing.baseOffset)
            let lost = "offsets \(missing.baseOffset)-\(missing.nextOffset - 1) of \(log.topic) are lost"
            await #expect {
                _ = try await deliverAll(log)
            } throws: { error in
                guard let error = error as? TelexError else { return false }
                return error.code == .dataLoss && error.message.contains(lost) && error.topic == log.topic
            }
            let skipping = try await deliverAll(log, skipDamaged: true)
            #expect(skipping.offsets == Array(0..<missing.baseOffset) + Array(missing.nextOffset..<40))
            try log.close()
        }
    }

    @Test("archived segments still in the local log are read locally (local wins), with no gap or duplicate")
    func overlappingArchiveAndLocal() async throws {
        try await withTemporaryDirectory { directory in
            let archive = try FakeArchiveTier(directory: directory)
            let log = try makeArchivedLog(directory, archive: archive, localRetentionBytes: nil)
            let sealed = archive.archivedSegments(of: log.topic)
            try log.close()
            // Keep the two newest sealed segments locally although the archive has them all.
            var configuration = log.configuration
            configuration.localRetentionBytes = log.sizeInBytes - sealed.dropLast(2).reduce(0) { $0 + $1.bytes }
            let kept = try TopicLog(topic: log.topic, directory: directory + "/log", configuration: configuration,
                                    logger: makeLogger(), archive: archive)
            #expect(try kept.applyRetention() == sealed.count - 2)
            #expect(kept.localStartOffset == sealed[sealed.count - 2].baseOffset)
            let delivered = try await deliverAll(kept)
            #expect(delivered.offsets == Array(0..<40))
            // Only the segments below the local start were fetched.
            #expect(archive.fetchCount == sealed.count - 2)
            try kept.close()
        }
    }

    @Test("a read of an archived segment not open answers needsFetch; after the fetch it is a slice")
    func needsFetchThenSlice() async throws {
        try await withTemporaryDirectory { directory in
            let archive = try FakeArchiveTier(directory: directory)
            let log = try makeArchivedLog(directory, archive: archive)
            try log.applyRetention()
            let second = archive.archivedSegments(of: log.topic)[1]
            guard case .needsFetch(let offset) = try log.readForDelivery(from: second.baseOffset + 1, maxBytes: .max)
            else {
                Issue.record("expected needsFetch")
                return
            }
            #expect(offset == second.baseOffset + 1)
            #expect(archive.fetchCount == 0)
            try await log.fetchArchived(containing: offset)
            guard case .slice(let slice) = try log.readForDelivery(from: offset, maxBytes: .max) else {
                Issue.record("expected a slice after the fetch")
                return
            }
            #expect(slice.firstOffset <= offset && slice.nextOffset == second.nextOffset)
            try log.close()
        }
    }

    @Test("a damaged archived copy throws DATA_LOSS naming topic and offsets, and is never served")
    func damagedCopy() async throws {
        try await withTemporaryDirectory { directory in
            let archive = try FakeArchiveTier(directory: directory)
            let log = try makeArchivedLog(directory, archive: archive)
            try log.applyRetention()
            let first = archive.archivedSegments(of: log.topic)[0]
            // Flip a byte inside the first batch's records (past its 61-byte header).
            let path = archive.archivedPath(topic: log.topic, baseOffset: first.baseOffset)
            var data = try Data(contentsOf: URL(fileURLWithPath: path))
            data[RecordBatchHeader.size + 10] ^= 0x40
            try data.write(to: URL(fileURLWithPath: path))

            for _ in 0..<2 {
                let error = await #expect(throws: TelexError.self) { try await log.fetchArchived(containing: 0) }
                #expect(error?.code == .dataLoss)
                #expect(error?.topic == log.topic)
                #expect(error?.message.contains("archived segment \(first.baseOffset) of \(log.topic)") == true)
                #expect(error?.message.contains("offsets \(first.baseOffset)-\(first.nextOffset - 1)") == true)
                #expect(error?.message.contains("damaged at offset 0") == true, "\(String(describing: error))")
                guard case .needsFetch = try log.readForDelivery(from: 0, maxBytes: .max) else {
                    Issue.record("a damaged archived segment must never give a slice")
                    return
                }
            }
            let blocking = try await onOwnThread { () -> TelexError? in
                do throws(TelexError) {
                    _ = try log.read(from: 1, maxBytes: .max)
                    return nil
                } catch { return error }
            }
            #expect(blocking?.code == .dataLoss)
            // The segment after it is served.
            let second = archive.archivedSegments(of: log.topic)[1]
            try await log.fetchArchived(containing: second.baseOffset)
            guard case .slice = try log.readForDelivery(from: second.baseOffset, maxBytes: .max) else {
                Issue.record("expected a slice of the undamaged segment")
                return
            }
            try log.close()
        }
    }

    @Test("an evicted cached file is fetched again")
    func evictedIsFetchedAgain() async throws {
        try await withTemporaryDirectory { directory in
            let archive = try FakeArchiveTier(directory: directory)
            let log = try makeArchivedLog(directory, archive: archive)
            try log.applyRetention()
            try await log.fetchArchived(containing: 0)
            guard case .slice(let held) = try log.readForDelivery(from: 0, maxBytes: .max) else {
                Issue.record("expected a slice")
                return
            }
            try FileManager.default.removeItem(atPath: archive.cachedPath(topic: log.topic, baseOffset: 0))
            // A slice taken before the eviction still reads (it leases the descriptor).
            #expect(try offsets(in: held).first == 0)
            guard case .needsFetch(0) = try log.readForDelivery(from: 0, maxBytes: .max) else {
                Issue.record("an evicted segment must be fetched again")
                return
            }
            try await log.fetchArchived(containing: 0)
            #expect(archive.fetchCount == 2)
            guard case .slice(let slice) = try log.readForDelivery(from: 0, maxBytes: .max) else {
                Issue.record("expected a slice after the second fetch")
                return
            }
            #expect(slice.firstOffset == 0)
            try log.close()
        }
    }

    @Test("offsets a compaction removed at an archived segment's end are skipped, not lost")
    func gapBetweenArchivedAndLocal() async throws {
        try await withTemporaryDirectory { directory in
            let archive = try FakeArchiveTier(directory: directory)
            let log = try makeArchivedLog(directory, archive: archive)
            try log.applyRetention()
            // Pretend the last archived segment was compacted and lost its last batch: list it one batch shorter.
            let last = archive.archivedSegments(of: log.topic).last!
            let path = archive.archivedPath(topic: log.topic, baseOffset: last.baseOffset)
            var data = try Data(contentsOf: URL(fileURLWithPath: path))
            let batches = try RecordBatch.split(ByteBuffer(bytes: data))
            let kept = batches.dropLast().reduce(0) { $0 + $1.readableBytes }
            data = data.prefix(kept)
            try data.write(to: URL(fileURLWithPath: path))
            archive.list([ArchivedSegment(baseOffset: last.baseOffset, nextOffset: last.nextOffset, bytes: kept,
                                          rewrites: 1, lastAppendTime: last.lastAppendTime)], topic: log.topic)
            let removed = RecordBatchHeader.peek(batches.last!, at: 0)!
            let delivered = try await deliverAll(log)
            #expect(delivered.offsets == Array(0..<removed.baseOffset) + Array(removed.nextOffset..<40))
            try log.close()
        }
    }
}
