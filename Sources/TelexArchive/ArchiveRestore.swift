#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import TelexProtocol
import TelexStorage

/// `telexd restore s3://B/P --data-dir DIR`: a data directory rebuilt from the archive (Protocol/STORAGE.md §16.3).
public enum ArchiveRestore {
    /// What was restored of one topic.
    public struct TopicSummary: Sendable, Equatable, CustomStringConvertible {
        public var topic: String
        public var segments: Int
        public var bytes: Int
        /// The first restored segment's base offset, and the offset after the last one (the restored log's end).
        public var startOffset: Int64
        public var endOffset: Int64

        public var description: String {
            "\(topic): \(segments) segments, \(bytes) bytes, offsets \(startOffset)-\(endOffset - 1)"
        }
    }

    /// Every topic restored, sorted, and how many consumer-offsets files.
    public struct Summary: Sendable, Equatable {
        public var topics: [TopicSummary]
        public var consumers: Int
    }

    /// Downloads every archived segment into `dataDirectory` (missing, or without topics and consumer offsets), each `.log` checked
    /// against its manifest's SHA-256, plus an empty segment at each topic's end (so the restored ones stay
    /// sealed), each topic's `archive.state` (they are archived already) and `consumers/*.offsets`.
    ///
    /// Blocking file I/O in the caller's task: run it from a command-line tool, not on an event loop. A failure
    /// leaves a partial directory: remove it and run again.
    public static func restore(
        from objectStore: any ObjectStore, layout: ArchiveLayout, into dataDirectory: String, logger: Logger,
        metrics: ArchiveMetrics = ArchiveMetrics()
    ) async throws(TelexError) -> Summary {
        let topicsDirectory = dataDirectory + "/topics"
        if let existing = try ArchiveFiles.listDirectory(topicsDirectory).first {
            throw TelexError(.invalidRequest, """
                \(dataDirectory) already has topics (\(existing)); restore only into an empty or missing directory
                """)
        }
        // Restored offsets next to another broker's consumer positions would be meaningless (and overwritten).
        if let existing = try ArchiveFiles.listDirectory(dataDirectory + "/consumers").first {
            throw TelexError(.invalidRequest, """
                \(dataDirectory) already has consumer offsets (consumers/\(existing)); restore only into an empty or \
                missing directory
                """)
        }
        try FileIO.makeDirectory(topicsDirectory)
        _ = try StorageFormat.prepare(dataDirectory)
        let objects = try await call(objectStore, "listing \(layout.topicsPrefix)") {
            try await objectStore.list(prefix: layout.topicsPrefix)
        }
        var manifests: [String: [SegmentManifest]] = [:]
        for object in objects where layout.manifestSegment(object.key) != nil {
            let bytes = try await call(objectStore, "reading \(object.key)") {
                try await objectStore.get(key: object.key, range: nil)
            }
            let manifest = try SegmentManifest.decode(bytes, key: object.key, layout: layout)
            manifests[manifest.topic, default: []].append(manifest)
        }
        var summary = Summary(topics: [], consumers: 0)
        for (topic, list) in manifests.sorted(by: { $0.key < $1.key }) {
            try TopicName.validate(topic)
            let segments = list.sorted { $0.baseOffset < $1.baseOffset }
            let directory = topicsDirectory + "/" + topic
            try FileIO.makeDirectory(directory)
            for manifest in segments {
                try await restoreSegment(manifest, into: directory, from: objectStore, metrics: metrics)
                try ArchiveState.append(ArchivedSegmentRecord(manifest: manifest),
                                        path: ArchiveState.path(dataDirectory: dataDirectory, topic: topic))
            }
            let end = segments.last!.nextOffset
            try ArchiveFiles.writeFile(directory + "/" + ArchiveLayout.base20(end) + ".log", ByteBuffer())
            try FileIO.syncDirectory(directory)
            let topicSummary = TopicSummary(
                topic: topic, segments: segments.count, bytes: segments.reduce(0) { $0 + $1.bytes },
                startOffset: segments.first!.baseOffset, endOffset: end)
            logger.info("restored topic", metadata: ["summary": "\(topicSummary)"])
            summary.topics.append(topicSummary)
        }
        try FileIO.syncDirectory(topicsDirectory)
        let consumersDirectory = dataDirectory + "/consumers"
        try FileIO.makeDirectory(consumersDirectory)
        let consumerObjects = try await call(objectStore, "listing \(layout.consumersPrefix)") {
            try await objectStore.list(prefix: layout.consumersPrefix)
        }
        for object in consumerObjects where object.key.hasSuffix(".offsets") {
            let name = String(object.key.dropFirst(layout.consumersPrefix.count))
            let consumer = String(name.dropLast(".offsets".count))
            guard !name.contains("/"), (try? ConsumerOffsets.validateName(consumer)) != nil else { continue }
            let bytes = try await call(objectStore, "reading \(object.key)") {
                try await objectStore.get(key: object.key, range: nil)
            }
            try ArchiveFiles.writeFile(consumersDirectory + "/" + name, bytes)
            summary.consumers += 1
        }
        try FileIO.syncDirectory(consumersDirectory)
        return summary
    }

    /// One segment's `.log` (checked) and `.compacted`, each written to a `.part` file and renamed.
    private static func restoreSegment(
        _ manifest: SegmentManifest, into directory: String, from objectStore: any ObjectStore, metrics: ArchiveMetrics
    ) async throws(TelexError) {
        let base = ArchiveLayout.base20(manifest.baseOffset)
        if let compactedKey = manifest.compactedKey {
            let marker = try await call(objectStore, "reading \(compactedKey)") {
                try await objectStore.get(key: compactedKey, range: nil)
            }
            let markerPath = directory + "/" + base + ".compacted"
            try ArchiveFiles.writeFile(markerPath + ".part", marker)
            try FileIO.rename(markerPath + ".part", markerPath)
        }
        let path = directory + "/" + base + ".log"
        let partPath = path + ".part"
        let fd = try FileIO.open(partPath, flags: O_WRONLY | O_CREAT | O_TRUNC)
        defer { FileIO.close(fd, path: partPath) }
        try await call(objectStore, "reading \(manifest.logKey)") {
            try await ArchiveCache.getRanges(
                manifest.logKey, bytes: manifest.bytes, from: objectStore, metrics: metrics
            ) {
                offset, chunk throws(TelexError) in try ArchiveFiles.write(fd, chunk, at: offset, path: partPath)
            }
        }
        try FileIO.sync(fd, path: partPath)
        let digest = try FileDigest(path: partPath, length: manifest.bytes)
        guard digest.sha256 == manifest.sha256 else {
            try? FileIO.remove(partPath)
            throw TelexError(.dataLoss, """
                archived segment \(base) of topic '\(manifest.topic)' (offsets \(manifest.baseOffset)-\
                \(manifest.nextOffset - 1)) is damaged: \(manifest.logKey) has sha256 \(digest.sha256), its manifest \
                says \(manifest.sha256); nothing restored from it
                """, topic: manifest.topic, offset: manifest.baseOffset)
        }
        try FileIO.rename(partPath, path)
        metrics.fetchedBytes.increment(by: manifest.bytes)
    }

    /// Runs a store call, turning its failure into a `storageFailure` naming the store and what was being done.
    private static func call<T>(
        _ objectStore: any ObjectStore, _ doing: String, _ body: () async throws -> T
    ) async throws(TelexError) -> T {
        do {
            return try await body()
        } catch let error as TelexError {
            throw error
        } catch {
            throw TelexError(.storageFailure, "archive \(objectStore.displayName): \(doing) failed: \(error)")
        }
    }
}
