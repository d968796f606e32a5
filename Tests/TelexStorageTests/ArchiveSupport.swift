import Foundation
import NIOCore
import Synchronization
import TelexProtocol
import Testing

@testable import TelexStorage

/// An `ArchiveTier` over two directories: `archive/<topic>/<base20>.log` holds copies of sealed segment files
/// (what the object store would), `cache/<topic>/…` the local copies `fetch` makes. Only segments `archive(_:)`
/// listed are in the archive; a test may leave some out, flip bytes in a copy, or delete a cached file.
final class FakeArchiveTier: ArchiveTier {
    let archiveDirectory: String
    let cacheDirectory: String
    private let listed = Mutex<[String: [ArchivedSegment]]>([:])
    private let fetches = Mutex(0)

    init(directory: String) throws {
        archiveDirectory = directory + "/archive"
        cacheDirectory = directory + "/cache"
        for path in [archiveDirectory, cacheDirectory] {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
    }

    /// Copies the sealed segments of `log` (all, or those `including` accepts) into the archive and lists them.
    func archive(_ log: TopicLog, including: (SealedSegmentFile) -> Bool = { _ in true }) throws {
        let directory = archiveDirectory + "/" + log.topic
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var added: [ArchivedSegment] = []
        for file in log.sealedSegmentFiles() where including(file) {
            let copy = directory + "/" + Segment.fileName(file.baseOffset, ".log")
            try? FileManager.default.removeItem(atPath: copy)
            try FileManager.default.copyItem(atPath: file.logPath, toPath: copy)
            added.append(ArchivedSegment(baseOffset: file.baseOffset, nextOffset: file.nextOffset, bytes: file.bytes,
                                         rewrites: file.rewrites, lastAppendTime: file.lastAppendTime))
        }
        list(added, topic: log.topic)
    }

    /// Lists `segments` of `topic` as archived (the files must be in the archive directory already).
    func list(_ segments: [ArchivedSegment], topic: String) {
        listed.withLock { listed in
            var all = listed[topic, default: []].filter { old in !segments.contains { $0.baseOffset == old.baseOffset } }
            all += segments
            listed[topic] = all.sorted { $0.baseOffset < $1.baseOffset }
        }
    }

    /// Takes a segment out of the listing (a replica that could not read its manifest).
    func unlist(topic: String, baseOffset: Int64) {
        listed.withLock { $0[topic]?.removeAll { $0.baseOffset == baseOffset } }
    }

    /// The archive's copy of a segment.
    func archivedPath(topic: String, baseOffset: Int64) -> String {
        archiveDirectory + "/" + topic + "/" + Segment.fileName(baseOffset, ".log")
    }

    /// Where `fetch` puts its copy.
    func cachedPath(topic: String, baseOffset: Int64) -> String {
        cacheDirectory + "/" + topic + "/" + Segment.fileName(baseOffset, ".log")
    }

    var fetchCount: Int { fetches.withLock { $0 } }

    func archivedSegments(of topic: String) -> [ArchivedSegment] { listed.withLock { $0[topic] ?? [] } }

    func cachedLogFile(topic: String, baseOffset: Int64) -> String? {
        let path = cachedPath(topic: topic, baseOffset: baseOffset)
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }

    func fetch(topic: String, baseOffset: Int64) async throws(TelexError) -> String {
        fetches.withLock { $0 += 1 }
        let path = cachedPath(topic: topic, baseOffset: baseOffset)
        do {
            try FileManager.default.createDirectory(atPath: cacheDirectory + "/" + topic,
                                                    withIntermediateDirectories: true)
            try? FileManager.default.removeItem(atPath: path)
            try FileManager.default.copyItem(atPath: archivedPath(topic: topic, baseOffset: baseOffset), toPath: path)
        } catch {
            throw TelexError(.storageFailure, "fake archive could not fetch \(topic) \(baseOffset): \(error)")
        }
        return path
    }
}

/// Runs blocking `body` on a thread of its own (not one of the concurrency pool's or Dispatch's, which a blocking
/// archived read needs for its fetch task) and returns its result.
func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// The offsets held by the batches of `slice`, in order.
func offsets(in slice: LogSlice) throws -> [Int64] {
    try RecordBatch.split(slice.readBytes()).flatMap { batch -> [Int64] in
        let header = RecordBatchHeader.peek(batch, at: 0)!
        return Array(header.baseOffset..<header.nextOffset)
    }
}

/// Every offset from `start` to the readable end through `readForDelivery`, answering `needsFetch` with a fetch;
/// the offsets each slice starts at, too, and how many fetches were asked for.
func deliverAll(_ log: TopicLog, from start: Int64 = 0, maxBytes: Int = 1, skipDamaged: Bool = false) async throws
    -> (offsets: [Int64], fetchesAsked: Int)
{
    var offset = start
    var delivered: [Int64] = []
    var fetchesAsked = 0
    while true {
        switch try log.readForDelivery(from: offset, maxBytes: maxBytes, skipDamaged: skipDamaged) {
        case .end: return (delivered, fetchesAsked)
        case .needsCheck(let at): try await onOwnThread { try log.checkSegment(containing: at) }
        case .needsFetch(let at):
            fetchesAsked += 1
            try await log.fetchArchived(containing: at)
        case .slice(let slice):
            // Offsets before the one asked for are ones a batch holds before it (delivered already).
            delivered += try offsets(in: slice).filter { $0 >= offset }
            offset = slice.nextOffset
        }
    }
}

/// A log of `batches` batches of 2 records with segments of 3 batches, its sealed segments in `archive` and,
/// with `localRetentionBytes`, deleted locally by retention.
func makeArchivedLog(
    _ directory: String, archive: FakeArchiveTier, batches: Int = 20, localRetentionBytes: Int? = 0,
    including: (SealedSegmentFile) -> Bool = { _ in true }
) throws -> TopicLog {
    var configuration = testConfiguration(segmentBytes: makeBatch(records: 2, seed: 0).readableBytes * 3)
    configuration.localRetentionBytes = localRetentionBytes
    let log = try TopicLog(topic: "news.wire", directory: directory + "/log", configuration: configuration,
                           logger: makeLogger(), archive: archive)
    for seed in 0..<batches { _ = try log.append(makeBatch(records: 2, seed: seed)) }
    try log.sync()
    try archive.archive(log, including: including)
    return log
}
