import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

@Suite("Producer snapshot", .timeLimit(.minutes(1)))
struct ProducerSnapshotTests {
    static let producer: Int64 = 77
    static let other: Int64 = 88

    /// Producer 77 writes two batches into the first segment; producer 88 then rolls the log through 20 more
    /// one-batch segments, so 77's batches are far from the newest segments.
    func writeOldProducer(_ log: TopicLog) throws {
        _ = try log.append(makeBatch(records: 2, seed: 1, producerID: Self.producer, sequence: 0))
        _ = try log.append(makeBatch(records: 2, seed: 2, producerID: Self.producer, sequence: 1))
        for sequence in 0..<20 {
            _ = try log.append(makeBatch(records: 1, seed: 3, producerID: Self.other, sequence: Int32(sequence)))
        }
    }

    /// The retries of every batch written by `writeOldProducer` are answered with their original offsets.
    func expectRetriesRecognised(_ log: TopicLog) throws {
        let end = log.endOffset
        #expect(
            try log.append(makeBatch(records: 2, seed: 1, producerID: Self.producer, sequence: 0))
                == AppendResult(baseOffset: 0, recordCount: 2, duplicate: true))
        #expect(
            try log.append(makeBatch(records: 2, seed: 2, producerID: Self.producer, sequence: 1))
                == AppendResult(baseOffset: 2, recordCount: 2, duplicate: true))
        #expect(
            try log.append(makeBatch(records: 1, seed: 3, producerID: Self.other, sequence: 0))
                == AppendResult(baseOffset: 4, recordCount: 1, duplicate: true))
        #expect(log.endOffset == end)
    }

    func smallSegments() -> LogConfiguration {
        testConfiguration(
            segmentBytes: makeBatch(records: 2, seed: 1, producerID: Self.producer, sequence: 0).readableBytes)
    }

    @Test("a producer seen only in old segments is remembered after a clean reopen")
    func rememberedAfterClose() async throws {
        try await withTemporaryDirectory { directory in
            let log = try openLog(directory, smallSegments())
            try writeOldProducer(log)
            #expect(log.segmentCount >= 20)
            try log.close()
            #expect(FileManager.default.fileExists(atPath: logDirectory(directory) + "/" + ProducerSnapshot.fileName))
            let reopened = try openLog(directory, smallSegments())
            try expectRetriesRecognised(reopened)
            try reopened.close()
        }
    }

    @Test("after a crash (no close), the snapshot written at a roll plus the segments after it restore the memory")
    func rememberedAfterCrash() async throws {
        try await withTemporaryDirectory { directory in
            let log = try openLog(directory, smallSegments())
            try writeOldProducer(log)
            try log.sync()
            log.syncQueue.sync {}
            // Opened again without closing the first: what a restart after kill -9 sees.
            let handler = RecordingLogHandler()
            let recovered = try openLog(directory, smallSegments(), handler: handler)
            try expectRetriesRecognised(recovered)
            #expect(!handler.messages.contains { $0.contains("producer snapshot") })
            try recovered.close()
        }
    }

    @Test("a damaged snapshot is ignored with a warning and every segment is read instead")
    func damagedSnapshotFallsBack() async throws {
        try await withTemporaryDirectory { directory in
            let log = try openLog(directory, smallSegments())
            try writeOldProducer(log)
            try log.close()
            let path = logDirectory(directory) + "/" + ProducerSnapshot.fileName
            var contents = try Data(contentsOf: URL(fileURLWithPath: path))
            contents[20] ^= 0x10
            try contents.write(to: URL(fileURLWithPath: path))
            let handler = RecordingLogHandler()
            let reopened = try openLog(directory, smallSegments(), handler: handler)
            #expect(handler.messages.contains("ignoring unreadable producer snapshot; reading every segment instead"))
            try expectRetriesRecognised(reopened)
            try reopened.close()
        }
    }

    @Test("a snapshot newer than the log (its tail was cut) is ignored and deleted")
    func newerSnapshotIgnored() async throws {
        try await withTemporaryDirectory { directory in
            let log = try openLog(directory, testConfiguration())
            _ = try log.append(makeBatch(records: 2, producerID: Self.producer, sequence: 0))
            try log.close()
            // A snapshot claiming a batch at offsets 2-3 that the log does not have.
            var producers = try #require(try ProducerSnapshot.load(directory: logDirectory(directory))).producers
            producers[Self.producer]!.remember(1, baseOffset: 2, recordCount: 2, appendTime: 0)
            try ProducerSnapshot(offset: 4, producers: producers).write(directory: logDirectory(directory))
            let handler = RecordingLogHandler()
            let reopened = try openLog(directory, testConfiguration(), handler: handler)
            #expect(
                handler.messages.contains(
                    "ignoring producer snapshot newer than the log; reading every segment instead"))
            #expect(!FileManager.default.fileExists(atPath: logDirectory(directory) + "/" + ProducerSnapshot.fileName))
            #expect(
                try reopened.append(makeBatch(records: 2, producerID: Self.producer, sequence: 1))
                    == AppendResult(baseOffset: 2, recordCount: 2, duplicate: false))
            #expect(try reopened.append(makeBatch(records: 2, producerID: Self.producer, sequence: 0)).duplicate)
            try reopened.close()
        }
    }

    @Test("a snapshot round-trips keeping each producer's newest batches; a truncated one is refused, naming the file")
    func encoding() throws {
        var state = ProducerState(lastAppendTime: 5)
        for sequence in 0..<200 {
            state.remember(Int32(sequence), baseOffset: Int64(sequence) * 3, recordCount: 3, appendTime: 5)
        }
        let snapshot = ProducerSnapshot(offset: 600, producers: [1: state, 2: ProducerState(lastAppendTime: 9)])
        let decoded = try ProducerSnapshot(decoding: snapshot.encoded(), path: "p")
        #expect(decoded.offset == 600)
        #expect(decoded.producers[2]?.lastAppendTime == 9)
        // Only the newest entries are kept.
        #expect(decoded.producers[1]?.lookup(199)?.baseOffset == 597)
        #expect(decoded.producers[1]?.lookup(Int32(200 - ProducerSnapshot.entriesPerProducer)) != nil)
        #expect(decoded.producers[1]?.lookup(Int32(199 - ProducerSnapshot.entriesPerProducer)) == nil)
        var truncated = snapshot.encoded()
        truncated.moveWriterIndex(to: truncated.writerIndex - 1)
        let error = #expect(throws: TelexError.self) {
            try ProducerSnapshot(decoding: truncated, path: "/d/producers.snapshot")
        }
        #expect(error?.message.contains("/d/producers.snapshot is not a valid producer snapshot") == true)
    }

    @Test("the format-1 fixture (no snapshot) opens and still recognises its producer's first batch")
    func fixtureWithoutSnapshot() async throws {
        try await withTemporaryDirectory { directory in
            let data = try copyFormatFixture("format-1", into: directory)
            let store = try TopicStore(directory: data, configuration: testConfiguration(), logger: makeLogger())
            let log = try #require(store.log("news.wire"))
            let retry = try log.append(try #require(formatFixtureBatches["news.wire"]?.first))
            #expect(retry == AppendResult(baseOffset: 0, recordCount: 2, duplicate: true))
            try store.close()
        }
    }
}
