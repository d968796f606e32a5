import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

/// The batches of the format-1 fixture, by topic, in offset order; `writeFormatFixture` appends exactly these.
/// The zlib batches are libz's bytes: the fixture was written before Telex compressed with libdeflate.
let formatFixtureBatches: [String: [ByteBuffer]] = [
    "news.wire": [
        makeBatch(records: 2, seed: 1, codec: .zlib, producerID: 7, sequence: 0, deflate: .zlib),
        makeBatch(records: 2, seed: 2, codec: .zlib, producerID: 7, sequence: 1, deflate: .zlib),
        makeBatch(records: 2, seed: 3, codec: .zlib, producerID: 7, sequence: 2, deflate: .zlib),
    ],
    "news.sport": [makeBatch(records: 1, seed: 4)],
]

/// Consumer positions of the fixture: consumer `desk`.
let formatFixtureOffsets: [String: Int64] = ["news.wire": 4, "news.sport": 1]

/// Writes a data directory with today's code: two topics, `news.wire` rolled into three segments (one batch
/// each: offsets 0-1, 2-3, 4-5), and consumer `desk`'s offsets. Tests/TelexStorageTests/Fixtures/format-1 was made by it
/// before batches had key tables; kept so, it shows such batches still read back.
func writeFormatFixture(_ directory: String) throws {
    let batchSize = formatFixtureBatches["news.wire"]![0].readableBytes
    let store = try TopicStore(
        directory: directory, configuration: testConfiguration(segmentBytes: batchSize * 2), logger: makeLogger())
    for topic in formatFixtureBatches.keys.sorted() {
        let log = try store.createLog(topic).log
        for batch in formatFixtureBatches[topic]! { _ = try log.append(batch) }
    }
    try store.consumerOffsets.commit("desk", offsets: formatFixtureOffsets)
    try store.close()
}

/// `batch` as producers built it before key tables (PROTOCOL.md §6.1), the form the fixture's batches are stored in.
func withoutKeyTable(_ batch: ByteBuffer) throws -> ByteBuffer {
    var legacy = header(batch)
    let records = try RecordBatch.recordsSection(of: batch, header: legacy)
    legacy.flags &= ~RecordBatchHeader.keyTableFlag
    legacy.batchLength = UInt32(RecordBatchHeader.size - RecordBatchHeader.lengthPrefixSize + records.readableBytes)
    var bytes = ByteBuffer()
    legacy.write(to: &bytes)
    bytes.writeImmutableBuffer(records)
    bytes.setInteger(CRC32.checksum(bytes.getSlice(at: 24, length: bytes.readableBytes - 24)!), at: 20)
    return bytes
}

/// A copy of the committed fixture `name` in `directory` (opening a data directory may write to it).
func copyFormatFixture(_ name: String, into directory: String) throws -> String {
    let fixtures = try #require(Bundle.module.url(forResource: "Fixtures", withExtension: nil))
    let copy = directory + "/" + name
    try FileManager.default.copyItem(at: fixtures.appendingPathComponent(name), to: URL(fileURLWithPath: copy))
    return copy
}

@Suite("Storage format version", .timeLimit(.minutes(1)))
struct StorageFormatTests {
    /// Regenerates the committed fixture: `TELEX_WRITE_FORMAT_FIXTURE=1 swift test --filter regenerateFixture`.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["TELEX_WRITE_FORMAT_FIXTURE"] != nil))
    func regenerateFixture() throws {
        let target = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/format-1").path
        try? FileManager.default.removeItem(atPath: target)
        try writeFormatFixture(target)
    }

    @Test("a new data directory records the current format")
    func newDirectoryGetsFormat() async throws {
        try await withTemporaryDirectory { directory in
            let data = directory + "/data"
            try TopicStore(directory: data, configuration: testConfiguration(), logger: makeLogger()).close()
            #expect(try String(contentsOfFile: data + "/FORMAT", encoding: .utf8) == "telex-storage 1\n")
            #expect(!FileManager.default.fileExists(atPath: data + "/FORMAT.tmp"))
        }
    }

    @Test("the format-1 fixture opens: every batch reads back with its offsets and values, offsets load")
    func fixtureOpens() async throws {
        try await withTemporaryDirectory { directory in
            let data = try copyFormatFixture("format-1", into: directory)
            try expectFixtureContents(data)
        }
    }

    @Test("a directory written before FORMAT existed opens as version 1 and gets the file")
    func directoryWithoutFormatOpens() async throws {
        try await withTemporaryDirectory { directory in
            let data = try copyFormatFixture("format-1", into: directory)
            try FileManager.default.removeItem(atPath: data + "/FORMAT")
            try expectFixtureContents(data)
            #expect(try String(contentsOfFile: data + "/FORMAT", encoding: .utf8) == "telex-storage 1\n")
        }
    }

    @Test("a newer format is refused with the release it needs, and the directory is not changed")
    func newerFormatRefused() async throws {
        try await withTemporaryDirectory { directory in
            let data = try copyFormatFixture("format-1", into: directory)
            try "telex-storage 2\n".write(toFile: data + "/FORMAT", atomically: false, encoding: .utf8)
            let error = try #require(throws: TelexError.self) {
                try TopicStore(directory: data, configuration: testConfiguration(), logger: makeLogger())
            }
            #expect(error.code == .storageFailure)
            #expect(error.message == """
                \(data) was written by storage format 2; this telexd reads up to 1: \
                use a newer telexd (a release with storage format 2)
                """)
            #expect(try String(contentsOfFile: data + "/FORMAT", encoding: .utf8) == "telex-storage 2\n")
        }
    }

    @Test("a malformed FORMAT is refused, naming the file and its content", arguments: [
        "garbage\n", "telex-storage\n", "telex-storage 1", "telex-storage one\n", "telex-storage 0\n",
        "telex-storage 1 2\n", "",
    ])
    func malformedFormatRefused(contents: String) async throws {
        try await withTemporaryDirectory { directory in
            let data = try copyFormatFixture("format-1", into: directory)
            try contents.write(toFile: data + "/FORMAT", atomically: false, encoding: .utf8)
            let error = try #require(throws: TelexError.self) {
                try TopicStore(directory: data, configuration: testConfiguration(), logger: makeLogger())
            }
            #expect(error.code == .storageFailure)
            #expect(error.message.hasPrefix("\(data)/FORMAT is not a Telex storage format file"))
            #expect(error.message.contains(contents.debugDescription))
        }
    }

    @Test("the inspector reads the fixture without writing FORMAT")
    func inspectorDoesNotWriteFormat() async throws {
        try await withTemporaryDirectory { directory in
            let data = try copyFormatFixture("format-1", into: directory)
            try FileManager.default.removeItem(atPath: data + "/FORMAT")
            var lines = 0
            try StorageInspector.dump(dataDirectory: data, topic: nil) { _ in lines += 1 }
            #expect(lines == 4)
            #expect(!FileManager.default.fileExists(atPath: data + "/FORMAT"))
        }
    }

    func expectFixtureContents(_ data: String) throws {
        let store = try TopicStore(directory: data, configuration: testConfiguration(), logger: makeLogger())
        defer { try? store.close() }
        #expect(store.topics == ["news.sport", "news.wire"])
        #expect(store.log("news.wire")?.segmentCount == 3)
        for (topic, published) in formatFixtureBatches {
            let log = try #require(store.log(topic))
            let stored = try readAllBatches(log)
            #expect(stored.count == published.count, "\(topic)")
            var offset: Int64 = 0
            for (stored, published) in zip(stored, published) {
                #expect(header(stored).baseOffset == offset, "\(topic)")
                // The fixture predates key tables: its batches must still read back, table-less as they were written.
                #expect(sameExceptStampedFields(stored, try withoutKeyTable(published)), "\(topic) offset \(offset)")
                let records = try RecordBatch.decodeRecords(stored).records
                let expected = try RecordBatch.decodeRecords(published).records
                #expect(records.map { String(buffer: $0.value) } == expected.map { String(buffer: $0.value) })
                #expect(records.map { String(buffer: $0.key) } == expected.map { String(buffer: $0.key) })
                offset += Int64(header(stored).recordCount)
            }
            #expect(log.endOffset == offset)
        }
        #expect(store.consumerOffsets.committed("desk") == formatFixtureOffsets)
    }
}
