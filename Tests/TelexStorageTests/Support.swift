import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

#if canImport(Glibc)
    import Glibc
#endif

/// Runs `body` with a new empty directory under the system temporary directory, removed afterwards.
func withTemporaryDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("telex-storage-tests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: url) }
    return try await body(url.path)
}

/// A deterministic pseudo-random source (SplitMix64), so failures reproduce.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE5_E9B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Builds one published batch of `records` article-like events; `seed` varies keys, values and sizes.
func makeBatch(
    records: Int = 3, seed: Int = 0, codec: Codec = .none, producerID: Int64 = 0, sequence: Int32 = -1,
    timestamp: Int64 = 1_700_000_000_000, deflate: DeflateImplementation = .libdeflate
) -> ByteBuffer {
    var builder = RecordBatchBuilder()
    for index in 0..<records {
        let words = String(repeating: "word\(seed % 7) ", count: 1 + (seed + index) % 5)
        let value = "{\"uri\":\"urn:telex:article:\(seed)-\(index)\",\"headline\":\"\(words)\",\"version\":\(index)}"
        builder.append(
            timestamp: timestamp + Int64(index), key: ByteBuffer(string: "urn:telex:article:\(seed)-\(index)"),
            headers: [RecordHeader(name: "ce-type", value: "news.article.published")], value: ByteBuffer(string: value))
    }
    return builder.build(
        codec: codec, compressor: BatchCompressor(implementation: deflate), producerID: producerID,
        producerSequence: sequence)
}

/// Collects log messages, so tests can check what recovery reported without printing it.
final class RecordingLogHandler: LogHandler, @unchecked Sendable {
    private let lock = NIOLock()
    private var recorded: [(level: Logger.Level, message: String)] = []
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        lock.withLock { recorded.append((event.level, event.message.description)) }
    }

    var messages: [String] { lock.withLock { recorded.map(\.message) } }

    /// Messages logged at error level or above.
    var errorMessages: [String] { lock.withLock { recorded.filter { $0.level >= .error }.map(\.message) } }

    func clear() { lock.withLock { recorded.removeAll() } }
}

/// A logger that writes into `handler` (a fresh one by default).
func makeLogger(_ handler: RecordingLogHandler = RecordingLogHandler()) -> Logger {
    Logger(label: "telex.storage.tests") { _ in handler }
}

/// A test configuration: no fsync unless asked, so tests stay fast.
func testConfiguration(
    segmentBytes: Int = 1 << 20, segmentAgeMilliseconds: Int64 = 3_600_000, indexIntervalBytes: Int = 4096,
    retentionMilliseconds: Int64? = nil, retentionBytes: Int? = nil, fsync: FsyncPolicy = .never
) -> LogConfiguration {
    LogConfiguration(
        segmentBytes: segmentBytes, segmentAgeMilliseconds: segmentAgeMilliseconds,
        indexIntervalBytes: indexIntervalBytes, retentionMilliseconds: retentionMilliseconds,
        retentionBytes: retentionBytes, fsync: fsync)
}

func openLog(
    _ directory: String, _ configuration: LogConfiguration, handler: RecordingLogHandler = RecordingLogHandler()
) throws -> TopicLog {
    try TopicLog(
        topic: "news.wire", directory: directory + "/log", configuration: configuration,
        logger: makeLogger(handler))
}

/// Every stored batch from the log start to its readable end, read slice by slice with small limits (stepping
/// over damaged ranges with `skipDamaged`).
func readAllBatches(_ log: TopicLog, maxBytes: Int = 1, skipDamaged: Bool = false) throws -> [ByteBuffer] {
    var batches: [ByteBuffer] = []
    var offset = log.startOffset
    while let slice = try log.read(from: offset, maxBytes: maxBytes, skipDamaged: skipDamaged) {
        #expect(slice.firstOffset <= offset)
        let bytes = try slice.readBytes()
        #expect(bytes.readableBytes == slice.length)
        let split = try RecordBatch.split(bytes)
        #expect(split.count == slice.batchCount)
        batches += split
        offset = slice.nextOffset
    }
    return batches
}

func header(_ batch: ByteBuffer) -> RecordBatchHeader {
    RecordBatchHeader.peek(batch, at: batch.readerIndex)!
}

func bytes(_ buffer: ByteBuffer) -> [UInt8] {
    buffer.getBytes(at: buffer.readerIndex, length: buffer.readableBytes)!
}

/// Whether `stored` is `published` with only the base offset (bytes 0-7) and append time (bytes 12-19) changed.
func sameExceptStampedFields(_ stored: ByteBuffer, _ published: ByteBuffer) -> Bool {
    let stored = bytes(stored)
    let published = bytes(published)
    guard stored.count == published.count else { return false }
    return stored.indices.allSatisfy { (0..<8).contains($0) || (12..<20).contains($0) || stored[$0] == published[$0] }
}

func logDirectory(_ directory: String) -> String { directory + "/log" }

func segmentPath(_ directory: String, _ baseOffset: Int64, _ suffix: String) -> String {
    logDirectory(directory) + "/" + Segment.fileName(baseOffset, suffix)
}

/// Base offsets of the segment files in the log directory, from their names.
func segmentBases(_ directory: String) throws -> [Int64] {
    try FileManager.default.contentsOfDirectory(atPath: logDirectory(directory))
        .filter { $0.hasSuffix(".log") }
        .map { Int64($0.dropLast(4))! }
        .sorted()
}

func readFile(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

func writeFile(_ path: String, _ contents: [UInt8]) throws {
    try Data(contents).write(to: URL(fileURLWithPath: path))
}

func fileSize(_ path: String) throws -> Int {
    (try FileManager.default.attributesOfItem(atPath: path)[.size] as! NSNumber).intValue
}

/// Cuts a file with truncate(2), as a crash mid-write leaves it.
func truncateFile(_ path: String, to length: Int) {
    let status = truncate(path, off_t(length))
    #expect(status == 0, "truncate \(path): errno \(errno)")
}

/// Snapshot of every file in a directory, to restore between destructive trials.
struct DirectorySnapshot {
    let directory: String
    let files: [String: [UInt8]]

    init(_ directory: String) throws {
        self.directory = directory
        var files: [String: [UInt8]] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: directory) {
            files[name] = try readFile(directory + "/" + name)
        }
        self.files = files
    }

    func restore() throws {
        for name in try FileManager.default.contentsOfDirectory(atPath: directory) where files[name] == nil {
            try FileManager.default.removeItem(atPath: directory + "/" + name)
        }
        for (name, contents) in files { try writeFile(directory + "/" + name, contents) }
    }
}

/// Waits until the wall clock has passed `milliseconds`, so the next append gets a later append time.
func waitForClock(after milliseconds: Int64) {
    while FileIO.nowMilliseconds() <= milliseconds { usleep(200) }
}

/// Appends `batches`, giving each a strictly later append time than the one before.
func appendWithDistinctTimes(_ log: TopicLog, _ batches: [ByteBuffer]) throws -> [(
    result: AppendResult, appendTime: Int64
)] {
    var appended: [(AppendResult, Int64)] = []
    for batch in batches {
        if let last = appended.last { waitForClock(after: last.1) }
        let result = try log.append(batch)
        let stored = try #require(try log.read(from: result.baseOffset, maxBytes: 1))
        appended.append((result, header(try stored.readBytes()).appendTime))
    }
    return appended
}

/// The offset `offset(atOrAfter:)` must give, worked out from the append times of every batch.
func expectedOffset(atOrAfter timestamp: Int64, batches: [(baseOffset: Int64, appendTime: Int64)], end: Int64) -> Int64
{
    batches.first { $0.appendTime >= timestamp }?.baseOffset ?? end
}

/// (baseOffset, appendTime) of every stored batch.
func appendTimes(_ log: TopicLog) throws -> [(baseOffset: Int64, appendTime: Int64)] {
    try readAllBatches(log).map { (header($0).baseOffset, header($0).appendTime) }
}
