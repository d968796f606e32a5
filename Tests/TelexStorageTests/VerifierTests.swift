import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

@Suite("Storage verifier", .timeLimit(.minutes(1)))
struct VerifierTests {
    /// 10 batches of 2 records in news.wire, 4 batches a segment (segments 0, 8 and 16), every batch indexed;
    /// one zlib batch in news.sport; one consumer's offsets. Returns the batch size.
    @discardableResult
    func makeStore(_ directory: String, keepOpen: ((TopicStore) throws -> Void)? = nil) throws -> Int {
        let batchSize = makeBatch(records: 2).readableBytes
        let store = try TopicStore(
            directory: directory,
            configuration: testConfiguration(segmentBytes: batchSize * 4, indexIntervalBytes: 1), logger: makeLogger())
        let wire = try store.createLog("news.wire").log
        for _ in 0..<10 {
            // Same-sized batches, so segment and byte positions are multiples of `batchSize`.
            _ = try wire.append(makeBatch(records: 2))
            // Distinct append times give the time index one entry per batch.
            waitForClock(after: FileIO.nowMilliseconds())
        }
        _ = try store.createLog("news.sport").log.append(makeBatch(records: 3, seed: 1, codec: .zlib))
        try store.consumerOffsets.commit("indexer", topic: "news.wire", offset: 4)
        if let keepOpen { try keepOpen(store) }
        try store.close()
        return batchSize
    }

    /// Adds `delta` to the big-endian integer of `length` bytes at `index`.
    func add(_ delta: Int64, to bytes: inout [UInt8], at index: Int, length: Int) {
        var value = bytes[index..<index + length].reduce(Int64(0)) { $0 << 8 | Int64($1) } + delta
        for position in (index..<index + length).reversed() {
            bytes[position] = UInt8(value & 0xff)
            value >>= 8
        }
    }

    func wirePath(_ directory: String, _ base: Int64, _ suffix: String) -> String {
        directory + "/topics/news.wire/" + Segment.fileName(base, suffix)
    }

    /// Every file under `directory` with its bytes, to show that verifying changed nothing.
    func snapshot(_ directory: String) throws -> [String: [UInt8]] {
        var files: [String: [UInt8]] = [:]
        let enumerator = FileManager.default.enumerator(atPath: directory)
        while let name = enumerator?.nextObject() as? String {
            let path = directory + "/" + name
            if !FileIO.isDirectory(path) { files[name] = try readFile(path) }
        }
        return files
    }

    @Test("a clean store verifies clean, counts what it checked and changes nothing")
    func cleanStore() async throws {
        try await withTemporaryDirectory { directory in
            let batchSize = try makeStore(directory)
            let before = try snapshot(directory)
            var reported: [StorageVerifier.Finding] = []
            let report = try StorageVerifier.verify(dataDirectory: directory) { reported.append($0) }
            #expect(report.findings == [])
            #expect(reported == [])
            #expect(report.topics == 2)
            #expect(report.segments == 4)
            #expect(report.batches == 11)
            let sportSize = try fileSize(directory + "/topics/news.sport/" + Segment.fileName(0, ".log"))
            #expect(report.bytes == Int64(10 * batchSize + sportSize))
            #expect(report.summary == "checked 2 topics, 4 segments, 11 batches, \(report.bytes) bytes: 0 problems")
            #expect(try snapshot(directory) == before)
        }
    }

    @Test("verify runs beside an open store: it takes no lock")
    func besideOpenStore() async throws {
        try await withTemporaryDirectory { directory in
            try makeStore(directory)
            let store = try TopicStore(directory: directory, configuration: testConfiguration(), logger: makeLogger())
            defer { try? store.close() }
            let report = try StorageVerifier.verify(dataDirectory: directory)
            #expect(report.findings == [])
            #expect(report.batches == 11)
        }
    }

    @Test("a flipped bit in a sealed segment is reported with its segment, byte position and offset")
    func flippedBitInSealedSegment() async throws {
        try await withTemporaryDirectory { directory in
            let batchSize = try makeStore(directory)
            // The batch at offset 10 is the second of segment 8, at byte batchSize.
            let path = wirePath(directory, 8, ".log")
            var contents = try readFile(path)
            contents[batchSize + RecordBatchHeader.size + 5] ^= 0x10
            try writeFile(path, contents)

            let report = try StorageVerifier.verify(dataDirectory: directory)
            let finding = try #require(report.findings.first)
            #expect(report.findings.count == 1)
            #expect(finding.topic == "news.wire")
            #expect(finding.file == "00000000000000000008.log")
            #expect(finding.position == batchSize)
            #expect(finding.offset == 10)
            #expect(finding.problem.hasPrefix("CRC mismatch (stored 0x"))
            #expect(finding.problem.contains(", computed 0x"))
            #expect(finding.description.hasPrefix("news.wire 00000000000000000008.log byte \(batchSize) offset 10: CRC mismatch"))
            // The walk goes on past the bad batch.
            #expect(report.batches == 11)
        }
    }

    @Test("a corrupt offset index entry and a wrong time index entry are reported")
    func corruptIndexEntries() async throws {
        try await withTemporaryDirectory { directory in
            let batchSize = try makeStore(directory)
            // Entry 2 of segment 0's offset index is (4, 2 × batchSize): point it one byte further.
            let indexPath = wirePath(directory, 0, ".index")
            var index = try readFile(indexPath)
            #expect(index.count == 4 * OffsetIndexEntry.size)
            add(1, to: &index, at: 2 * OffsetIndexEntry.size + 4, length: 4)
            try writeFile(indexPath, index)
            // Entry 1 of segment 16's time index: one millisecond later than the batch's append time.
            let timePath = wirePath(directory, 16, ".timeindex")
            var times = try readFile(timePath)
            add(1, to: &times, at: TimeIndexEntry.size, length: 8)
            try writeFile(timePath, times)

            let report = try StorageVerifier.verify(dataDirectory: directory)
            #expect(report.findings.count == 2)
            let indexFinding = try #require(report.findings.first { $0.file.hasSuffix(".index") })
            #expect(indexFinding.file == "00000000000000000000.index")
            #expect(indexFinding.position == 2 * OffsetIndexEntry.size)
            #expect(indexFinding.offset == 4)
            #expect(indexFinding.problem.contains("points at byte \(2 * batchSize + 1), where no batch starts"))
            let timeFinding = try #require(report.findings.first { $0.file.hasSuffix(".timeindex") })
            #expect(timeFinding.file == "00000000000000000016.timeindex")
            #expect(timeFinding.position == TimeIndexEntry.size)
            #expect(timeFinding.offset == 18)
            #expect(timeFinding.problem.contains("appended at"))
        }
    }

    @Test("a damaged batch length is stepped over to the next valid batch, reported once, and the walk goes on")
    func damagedLengthIsSteppedOver() async throws {
        try await withTemporaryDirectory { directory in
            let batchSize = try makeStore(directory)
            // Segment 0, batch at offset 2: a length far past the end of the file.
            let first = wirePath(directory, 0, ".log")
            var contents = try readFile(first)
            contents[batchSize + 8] = 0x7f
            try writeFile(first, contents)
            // Segment 8, batch at offset 10: a length one byte short, which still fits but breaks the CRC and
            // puts the next header in the wrong place.
            let second = wirePath(directory, 8, ".log")
            contents = try readFile(second)
            add(-1, to: &contents, at: batchSize + 8, length: 4)
            try writeFile(second, contents)

            let report = try StorageVerifier.verify(dataDirectory: directory)
            #expect(report.findings.count == 2)
            let tooLong = try #require(report.findings.first)
            #expect(tooLong.file == "00000000000000000000.log")
            #expect(tooLong.position == batchSize)
            #expect(tooLong.offset == 2)
            #expect(tooLong.problem.hasPrefix("the batch declares"))
            #expect(tooLong.problem.hasSuffix(
                "bytes \(batchSize)..<\(2 * batchSize) are damaged, the next valid batch is at byte \(2 * batchSize) (offset 4)"))
            let tooShort = try #require(report.findings.last)
            #expect(tooShort.file == "00000000000000000008.log")
            #expect(tooShort.position == batchSize)
            #expect(tooShort.offset == 10)
            #expect(tooShort.problem.hasPrefix("CRC mismatch"))
            #expect(tooShort.problem.contains("the next valid batch is at byte \(2 * batchSize) (offset 12)"))
            // Every other batch was checked, and the index entries naming the damaged ones are not reported again.
            #expect(report.batches == 9)
            #expect(report.bytes == Int64(10 * batchSize) + Int64(try fileSize(directory + "/topics/news.sport/" + Segment.fileName(0, ".log"))))
        }
    }

    @Test("a truncated tail is reported at the batch it cuts")
    func truncatedTail() async throws {
        try await withTemporaryDirectory { directory in
            let batchSize = try makeStore(directory)
            let path = wirePath(directory, 16, ".log")
            truncateFile(path, to: 2 * batchSize - 10)

            let report = try StorageVerifier.verify(dataDirectory: directory)
            let finding = try #require(report.findings.first)
            #expect(report.findings.count == 1)
            #expect(finding.file == "00000000000000000016.log")
            #expect(finding.position == batchSize)
            #expect(finding.offset == 18)
            #expect(finding.problem == "truncated: the batch declares \(batchSize) bytes but \(batchSize - 10) remain")
            #expect(report.batches == 10)
        }
    }

    @Test("a broken offset chain, a bad FORMAT and an unreadable offsets file are reported; damaged/ is ignored")
    func chainFormatAndConsumers() async throws {
        try await withTemporaryDirectory { directory in
            try makeStore(directory)
            // Batch 2 of segment 0 claims offset 40 (the base offset is outside the CRC).
            let path = wirePath(directory, 0, ".log")
            var contents = try readFile(path)
            contents[makeBatch(records: 2).readableBytes * 2 + 7] = 40
            try writeFile(path, contents)
            try writeFile(directory + "/FORMAT", Array("telex-storage one\n".utf8))
            try writeFile(directory + "/consumers/broken.offsets", Array("news.wire 12\n".utf8))
            let damaged = directory + "/topics/news.wire/damaged"
            try FileManager.default.createDirectory(atPath: damaged, withIntermediateDirectories: false)
            try writeFile(damaged + "/00000000000000000000.log", [1, 2, 3])

            let report = try StorageVerifier.verify(dataDirectory: directory)
            // The indexes still name offset 4 there, and say so.
            #expect(report.findings.map(\.file) == [
                "FORMAT", "00000000000000000000.log", "00000000000000000000.index", "00000000000000000000.timeindex",
                "consumers/broken.offsets",
            ])
            #expect(report.findings[1].offset == 40)
            #expect(report.findings[1].problem.contains("where 4 was expected"))
            #expect(report.findings[2].problem.contains("holds the batch at offset 40"))
            #expect(report.findings[4].problem.contains("line 1"))
            #expect(report.segments == 4)
        }
    }

    @Test("a directory without topics/ is an error, not a finding")
    func refusesOtherDirectories() async throws {
        try await withTemporaryDirectory { directory in
            let error = #expect(throws: TelexError.self) { _ = try StorageVerifier.verify(dataDirectory: directory) }
            #expect(error?.message.contains("not a Telex data directory") == true)
        }
    }
}
