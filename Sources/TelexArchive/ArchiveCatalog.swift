import Logging
import Synchronization
import TelexProtocol
import TelexStorage

/// One segment the archive holds, with what a fetch needs: the hash to check and the object keys.
public struct ArchiveEntry: Sendable, Equatable {
    public var segment: ArchivedSegment
    /// Hex SHA-256 of the `.log` object.
    public var sha256: String
    public var logKey: String
    public var compactedKey: String?

    public init(segment: ArchivedSegment, sha256: String, logKey: String, compactedKey: String?) {
        self.segment = segment
        self.sha256 = sha256
        self.logKey = logKey
        self.compactedKey = compactedKey
    }

    init(record: ArchivedSegmentRecord, topic: String, layout: ArchiveLayout) {
        segment = record.segment
        sha256 = record.sha256
        logKey = layout.segmentLog(topic: topic, baseOffset: record.baseOffset, rewrites: record.rewrites)
        compactedKey = record.compacted
            ? layout.compactionMarker(topic: topic, baseOffset: record.baseOffset, rewrites: record.rewrites) : nil
    }

    init(manifest: SegmentManifest) {
        segment = manifest.segment
        sha256 = manifest.sha256
        logKey = manifest.logKey
        compactedKey = manifest.compactedKey
    }
}

/// What the archive holds, per topic, oldest segment first: on a primary fed by its `Archiver` (and loaded from
/// the local state files at start), on a replica by `ReplicaCatalog`. Thread-safe; every call only takes a short
/// lock, so event loops may call it.
public final class ArchiveCatalog: Sendable {
    private let entries: Mutex<[String: [ArchiveEntry]]>

    public init() {
        entries = Mutex([:])
    }

    /// The catalog of a primary's data directory: every topic's `archive.state`. Blocking (reads the files).
    public static func load(
        dataDirectory: String, layout: ArchiveLayout, logger: Logger
    ) throws(TelexError) -> ArchiveCatalog {
        let catalog = ArchiveCatalog()
        for topic in try ArchiveFiles.listDirectory(dataDirectory + "/topics") {
            let records = try ArchiveState.load(path: ArchiveState.path(dataDirectory: dataDirectory, topic: topic),
                                                logger: logger)
            for record in records.values {
                catalog.record(ArchiveEntry(record: record, topic: topic, layout: layout), topic: topic)
            }
        }
        return catalog
    }

    /// Adds the segment, or replaces the entry of the same base offset. Returns false when it was there already.
    @discardableResult
    public func record(_ entry: ArchiveEntry, topic: String) -> Bool {
        entries.withLock { entries in
            var list = entries[topic, default: []]
            let base = entry.segment.baseOffset
            let index = list.partitioningIndex { $0.segment.baseOffset >= base }
            if index < list.count, list[index].segment.baseOffset == base {
                if list[index] == entry { return false }
                list[index] = entry
            } else {
                list.insert(entry, at: index)
            }
            entries[topic] = list
            return true
        }
    }

    /// Every topic with an archived segment, sorted.
    public var topics: [String] { entries.withLock { $0.keys.sorted() } }

    /// The entries of `topic`, ascending base offsets.
    public func entries(of topic: String) -> [ArchiveEntry] { entries.withLock { $0[topic] ?? [] } }

    /// The segments of `topic`, ascending base offsets.
    public func segments(of topic: String) -> [ArchivedSegment] { entries(of: topic).map(\.segment) }

    /// The entry of the segment at `baseOffset`, and the base offsets of the (up to) `following` segments after it.
    public func entry(topic: String, baseOffset: Int64, following: Int = 0) -> (ArchiveEntry, [Int64])? {
        entries.withLock { entries in
            guard let list = entries[topic] else { return nil }
            let index = list.partitioningIndex { $0.segment.baseOffset >= baseOffset }
            guard index < list.count, list[index].segment.baseOffset == baseOffset else { return nil }
            return (list[index], list[(index + 1)..<min(list.count, index + 1 + following)].map(\.segment.baseOffset))
        }
    }
}

extension Array {
    /// The first index whose element satisfies `predicate`, which must be false then true along the array.
    func partitioningIndex(where predicate: (Element) -> Bool) -> Int {
        var low = 0
        var high = count
        while low < high {
            let middle = (low + high) / 2
            if predicate(self[middle]) { high = middle } else { low = middle + 1 }
        }
        return low
    }
}
