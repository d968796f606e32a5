import Foundation
import Synchronization
import TelexProtocol
import TelexStorage

/// An `ArchiveTier` over two directories: `archive/<topic>/` holds copies of sealed segment files (what the object
/// store would) and `cache/<topic>/` the copies `fetch` makes. Only segments `archive(_:)` listed are archived.
final class FakeArchiveTier: ArchiveTier {
    let archiveDirectory: String
    let cacheDirectory: String
    private let listed = Mutex<[String: [ArchivedSegment]]>([:])

    init(directory: String) throws {
        archiveDirectory = directory + "/archive"
        cacheDirectory = directory + "/cache"
        for path in [archiveDirectory, cacheDirectory] {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
    }

    /// Copies every sealed segment of `log` into the archive and lists it.
    func archive(_ log: TopicLog) throws {
        try FileManager.default.createDirectory(atPath: archiveDirectory + "/" + log.topic,
                                                withIntermediateDirectories: true)
        var segments: [ArchivedSegment] = []
        for file in log.sealedSegmentFiles() {
            let copy = archivedPath(topic: log.topic, baseOffset: file.baseOffset)
            try? FileManager.default.removeItem(atPath: copy)
            try FileManager.default.copyItem(atPath: file.logPath, toPath: copy)
            segments.append(ArchivedSegment(baseOffset: file.baseOffset, nextOffset: file.nextOffset, bytes: file.bytes,
                                            rewrites: file.rewrites, lastAppendTime: file.lastAppendTime))
        }
        listed.withLock { $0[log.topic] = segments }
    }

    func archivedPath(topic: String, baseOffset: Int64) -> String {
        archiveDirectory + "/" + topic + "/\(baseOffset).log"
    }

    func cachedPath(topic: String, baseOffset: Int64) -> String {
        cacheDirectory + "/" + topic + "/\(baseOffset).log"
    }

    func archivedSegments(of topic: String) -> [ArchivedSegment] { listed.withLock { $0[topic] ?? [] } }

    func cachedLogFile(topic: String, baseOffset: Int64) -> String? {
        let path = cachedPath(topic: topic, baseOffset: baseOffset)
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }

    func fetch(topic: String, baseOffset: Int64) async throws(TelexError) -> String {
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

/// The primary's address a test replica names, changed by the test.
final class PrimaryAddress: Sendable {
    let value = Mutex<String?>(nil)
}
