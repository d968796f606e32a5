import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

/// One record of a keyed batch: its key (empty: not an article) and its `ce-type`.
typealias KeyedRecord = (key: String, type: String)

/// A batch of article events with the given keys and types (`article.deleted` makes a tombstone).
func makeKeyedBatch(_ records: [KeyedRecord], codec: Codec = .none) -> ByteBuffer {
    var builder = RecordBatchBuilder()
    for (index, record) in records.enumerated() {
        builder.append(
            timestamp: 1_700_000_000_000 + Int64(index), key: ByteBuffer(string: record.key),
            headers: [RecordHeader(name: "ce-type", value: ByteBuffer(string: record.type))],
            value: ByteBuffer(string: "{\"uri\":\"\(record.key)\",\"n\":\(index)}"))
    }
    return builder.build(codec: codec)
}

/// The brute-force model of a log's key index: every appended record, kept while its offset is in the log.
struct KeyIndexModel {
    var records: [(key: String, version: KeyVersion)] = []

    mutating func appended(_ batch: [KeyedRecord], at baseOffset: Int64, appendTime: Int64) {
        for (index, record) in batch.enumerated() where !record.key.isEmpty {
            records.append((record.key, KeyVersion(offset: baseOffset + Int64(index), appendTime: appendTime,
                                                   tombstone: record.type == "article.deleted")))
        }
    }

    func latest(below end: Int64, from start: Int64) -> [String: KeyVersion] {
        var latest: [String: KeyVersion] = [:]
        for (key, version) in records where version.offset >= start && version.offset < end { latest[key] = version }
        return latest
    }

    func versions(of key: String, below end: Int64, from start: Int64) -> [KeyVersion] {
        records.filter { $0.key == key && $0.version.offset >= start && $0.version.offset < end }.map(\.version)
    }
}

/// Every answer of the index at the ends `ends`: the latest versions and each key's versions.
func keyAnswers(_ log: TopicLog, keys: [String], ends: [Int64]) throws -> [String] {
    try ends.flatMap { end in
        try ["latest below \(end): " + log.latestVersions(below: end).sorted { $0.key < $1.key }
            .map { "\($0.key)=\($0.value.offset)/\($0.value.appendTime)/\($0.value.tombstone)" }.joined(separator: " ")]
            + keys.map { key in
                try "\(key) below \(end): "
                    + log.versions(of: key, below: end).map { "\($0.offset)/\($0.appendTime)/\($0.tombstone)" }
                    .joined(separator: " ")
            }
    }
}

@Suite("Key index", .timeLimit(.minutes(1)))
struct KeyIndexTests {
    static let keys = (0..<12).map { "urn:telex:article:\($0)" }

    /// Appends `count` random batches of keys from `keys` (some tombstones, some unkeyed records), updating
    /// `model` with the append times read back from the log.
    func appendRandom(
        _ log: TopicLog, _ count: Int, model: inout KeyIndexModel, random: inout SeededGenerator
    ) throws {
        for _ in 0..<count {
            let records: [KeyedRecord] = (0..<Int.random(in: 1...4, using: &random)).map { _ in
                switch Int.random(in: 0..<10, using: &random) {
                case 0: ("", "news.article.published")
                case 1, 2: (Self.keys.randomElement(using: &random)!, "article.deleted")
                default: (Self.keys.randomElement(using: &random)!, "news.article.published")
                }
            }
            let codec: Codec = Bool.random(using: &random) ? .none : .zlib
            let result = try log.append(makeKeyedBatch(records, codec: codec))
            let stored = try #require(try log.read(from: result.baseOffset, maxBytes: 1))
            model.appended(records, at: result.baseOffset, appendTime: header(try stored.readBytes()).appendTime)
        }
    }

    func expectMatches(_ log: TopicLog, _ model: KeyIndexModel, random: inout SeededGenerator) throws {
        let start = log.startOffset
        let end = log.readableEndOffset
        for probe in [end, start, (start + end) / 2, Int64.random(in: 0...end, using: &random), end + 10] {
            #expect(try log.latestVersions(below: probe) == model.latest(below: probe, from: start), "end \(probe)")
            for key in Self.keys {
                #expect(try log.versions(of: key, below: probe) == model.versions(of: key, below: probe, from: start),
                        "\(key) below \(probe)")
            }
        }
    }

    @Test("answers like a brute-force model over random appends, rolls and retention")
    func matchesModel() throws {
        try withTemporaryDirectorySync { directory in
            for seed in 1...4 as ClosedRange<UInt64> {
                var random = SeededGenerator(seed: seed)
                let configuration = testConfiguration(segmentBytes: 1500, retentionBytes: 4000)
                let log = try TopicLog(topic: "news.wire", directory: directory + "/seed\(seed)",
                                       configuration: configuration, logger: makeLogger())
                var model = KeyIndexModel()
                for step in 0..<8 {
                    try appendRandom(log, Int.random(in: 1...12, using: &random), model: &model, random: &random)
                    if step == 5 || Int.random(in: 0..<3, using: &random) == 0 { try log.applyRetention() }
                    try expectMatches(log, model, random: &random)
                }
                #expect(log.segmentCount > 2)
                #expect(log.startOffset > 0, "retention deleted segments")
                try log.close()
            }
        }
    }

    @Test("answers after close and reopen equal those before; sealed segments have sound .keys files")
    func reopen() throws {
        try withTemporaryDirectorySync { directory in
            var random = SeededGenerator(seed: 9)
            let configuration = testConfiguration(segmentBytes: 1500)
            var log = try openLog(directory, configuration)
            var model = KeyIndexModel()
            try appendRandom(log, 40, model: &model, random: &random)
            let ends = [log.readableEndOffset, log.readableEndOffset / 2]
            let before = try keyAnswers(log, keys: Self.keys, ends: ends)
            let bases = try segmentBases(directory)
            try log.close()
            for base in bases.dropLast() {
                #expect(FileManager.default.fileExists(atPath: segmentPath(directory, base, ".keys")))
            }
            #expect(!FileManager.default.fileExists(atPath: segmentPath(directory, bases.last!, ".keys")))
            let handler = RecordingLogHandler()
            log = try openLog(directory, configuration, handler: handler)
            #expect(try keyAnswers(log, keys: Self.keys, ends: ends) == before)
            #expect(!handler.messages.contains("rebuilding key index"), "\(handler.messages)")
            try expectMatches(log, model, random: &random)
            try log.close()
        }
    }

    @Test("deleted, damaged or stale .keys files are rebuilt from the segments and give the same answers")
    func rebuild() throws {
        try withTemporaryDirectorySync { directory in
            var random = SeededGenerator(seed: 11)
            let configuration = testConfiguration(segmentBytes: 1500)
            var log = try openLog(directory, configuration)
            var model = KeyIndexModel()
            try appendRandom(log, 40, model: &model, random: &random)
            let ends = [log.readableEndOffset, 17]
            let before = try keyAnswers(log, keys: Self.keys, ends: ends)
            try log.close()
            let bases = try segmentBases(directory)
            try #require(bases.count >= 5)
            let sound = try readFile(segmentPath(directory, bases[1], ".keys"))
            // One deleted, one with a bit flipped, one cut short, one from another segment (stale).
            try FileManager.default.removeItem(atPath: segmentPath(directory, bases[0], ".keys"))
            var flipped = sound
            flipped[flipped.count / 2] ^= 0x10
            try writeFile(segmentPath(directory, bases[1], ".keys"), flipped)
            try writeFile(segmentPath(directory, bases[2], ".keys"), Array(sound.prefix(20)))
            try writeFile(segmentPath(directory, bases[3], ".keys"), sound)
            let dataDirectory = try makeDataDirectory(directory)
            let problems = try StorageVerifier.verify(dataDirectory: dataDirectory).findings.map(\.description)
            #expect(problems.count == 3, "\(problems)")
            let named = { (index: Int, text: String) in
                problems.contains { $0.contains(Segment.fileName(bases[index], ".keys")) && $0.contains(text) }
            }
            #expect(named(1, "CRC mismatch"))
            #expect(named(2, "too short"))
            #expect(named(3, "stale"))
            let handler = RecordingLogHandler()
            log = try TopicLog(topic: "news.wire", directory: dataDirectory + "/topics/news.wire",
                               configuration: configuration, logger: makeLogger(handler))
            #expect(handler.messages.filter { $0 == "rebuilding key index" }.count == 4)
            #expect(try keyAnswers(log, keys: Self.keys, ends: ends) == before)
            try log.close()
            #expect(try StorageVerifier.verify(dataDirectory: dataDirectory).findings.isEmpty)
            #expect(try readFile(dataDirectory + "/topics/news.wire/" + Segment.fileName(bases[1], ".keys")) == sound)
        }
    }
}

/// Moves the test log in `directory` into a data directory layout (`data/topics/news.wire`), for the verifier.
func makeDataDirectory(_ directory: String) throws -> String {
    let data = directory + "/data"
    try FileManager.default.createDirectory(atPath: data + "/topics", withIntermediateDirectories: true)
    try FileManager.default.moveItem(atPath: logDirectory(directory), toPath: data + "/topics/news.wire")
    return data
}

/// `withTemporaryDirectory` for synchronous tests.
func withTemporaryDirectorySync<T>(_ body: (String) throws -> T) throws -> T {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("telex-storage-tests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: url) }
    return try body(url.path)
}
