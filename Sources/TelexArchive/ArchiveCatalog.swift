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
    /// One topic's entries and, built alongside, the segments `archivedSegments(of:)` hands out: every read below a
    /// local log asks for them, so they are shared (copy on write), never rebuilt per call.
    struct TopicEntries {
        var entries: [ArchiveEntry] = []
        var segments: [ArchivedSegment] = []
    }

    private let entries: Mutex<[String: TopicEntries]>
    /// Held by the archiver's round over a topic and by a purge of its archived segments, so that they never
    /// change a topic's state file, entries or objects at the same time.
    public let topicLock = ArchiveTopicLock()

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
            for record in records.values.sorted(by: { $0.baseOffset < $1.baseOffset }) {
                catalog.record(ArchiveEntry(record: record, topic: topic, layout: layout), topic: topic)
            }
        }
        return catalog
    }

    /// Adds the segment, or replaces the entry of the same base offset. Returns false when it was there already.
    ///
    /// Mutates the topic's arrays in place: appending the newest segment (the usual case, and every one of a
    /// load in offset order) is amortised O(1) after the O(log n) search; only an array a reader still shares is
    /// copied.
    @discardableResult
    public func record(_ entry: ArchiveEntry, topic: String) -> Bool {
        entries.withLock { entries in
            let base = entry.segment.baseOffset
            return Self.update(&entries[topic, default: TopicEntries()], with: entry, base: base)
        }
    }

    private static func update(_ topic: inout TopicEntries, with entry: ArchiveEntry, base: Int64) -> Bool {
        let index = topic.entries.last.map { $0.segment.baseOffset < base } == true
            ? topic.entries.count : topic.entries.partitioningIndex { $0.segment.baseOffset >= base }
        if index < topic.entries.count, topic.entries[index].segment.baseOffset == base {
            if topic.entries[index] == entry { return false }
            topic.entries[index] = entry
            topic.segments[index] = entry.segment
        } else if index == topic.entries.count {
            topic.entries.append(entry)
            topic.segments.append(entry.segment)
        } else {
            topic.entries.insert(entry, at: index)
            topic.segments.insert(entry.segment, at: index)
        }
        return true
    }

    /// Forgets the segment of `topic` at `baseOffset` (its manifest is gone from the bucket).
    public func remove(topic: String, baseOffset: Int64) {
        entries.withLock { entries in
            guard let index = entries[topic]?.entries.partitioningIndex(where: { $0.segment.baseOffset >= baseOffset }),
                index < entries[topic]!.entries.count, entries[topic]!.entries[index].segment.baseOffset == baseOffset
            else { return }
            entries[topic]!.entries.remove(at: index)
            entries[topic]!.segments.remove(at: index)
            if entries[topic]!.entries.isEmpty { entries[topic] = nil }
        }
    }

    /// Forgets every segment of `topic` (the topic was deleted: a new topic of that name is another log).
    public func removeTopic(_ topic: String) {
        _ = entries.withLock { $0.removeValue(forKey: topic) }
    }

    /// Topics deleted through the broker whose objects the archiver has yet to delete from the bucket.
    private let deleted = Mutex<Set<String>>([])

    /// Forgets `topic` and asks the archiver to delete its objects (an explicit deletion, `TopicStore.deleteLog`).
    public func markDeleted(_ topic: String) {
        removeTopic(topic)
        _ = deleted.withLock { $0.insert(topic) }
    }

    /// The topics `markDeleted` since the last call; the caller marks again those it could not finish.
    public func takeDeleted() -> Set<String> {
        deleted.withLock { deleted in defer { deleted = [] }; return deleted }
    }

    /// Every topic with an archived segment, sorted.
    public var topics: [String] { entries.withLock { $0.keys.sorted() } }

    /// The entries of `topic`, ascending base offsets.
    public func entries(of topic: String) -> [ArchiveEntry] { entries.withLock { $0[topic]?.entries ?? [] } }

    /// The segments of `topic`, ascending base offsets (shared, not copied).
    public func segments(of topic: String) -> [ArchivedSegment] { entries.withLock { $0[topic]?.segments ?? [] } }

    /// The entry of the segment at `baseOffset`, and the base offsets of the (up to) `following` segments after it.
    public func entry(topic: String, baseOffset: Int64, following: Int = 0) -> (ArchiveEntry, [Int64])? {
        entries.withLock { entries in
            guard let list = entries[topic]?.entries else { return nil }
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
