import TelexProtocol

/// A sealed segment the archive holds (Protocol/STORAGE.md §16): what a log needs to route a read below its oldest
/// local segment, and what local retention needs to know the segment is safe in the object store.
public struct ArchivedSegment: Sendable, Equatable {
    /// The segment's base offset (its name).
    public var baseOffset: Int64
    /// The offset after its last record (for a compacted segment: its marker's end offset).
    public var nextOffset: Int64
    /// Bytes of its `.log` as uploaded.
    public var bytes: Int
    /// How many times compaction or a purge had rewritten it when it was uploaded (0: never).
    public var rewrites: UInt32
    /// Append time of its newest batch (ms since the epoch), nil when it holds no batch.
    public var lastAppendTime: Int64?

    public init(baseOffset: Int64, nextOffset: Int64, bytes: Int, rewrites: UInt32, lastAppendTime: Int64?) {
        self.baseOffset = baseOffset
        self.nextOffset = nextOffset
        self.bytes = bytes
        self.rewrites = rewrites
        self.lastAppendTime = lastAppendTime
    }
}

/// The object-storage tier below a broker's local segments, implemented by `TelexArchive`. A `TopicLog` given one
/// serves offsets below its oldest local segment from it, and (with `localRetentionBytes`) deletes local segments
/// only once the archive confirmed them.
///
/// Called under no lock of the log's; implementations must be cheap for `archivedSegments` and `cachedLogFile`
/// (both are called on event loops) and do their I/O in `fetch`.
public protocol ArchiveTier: Sendable {
    /// Segments of `topic` confirmed in the object store, oldest first (ascending base offsets). Empty when none.
    func archivedSegments(of topic: String) -> [ArchivedSegment]
    /// The path of a complete, checksum-verified local copy of the segment's `.log`, or nil when it must be
    /// fetched first. Counts as a use for the cache's eviction order, and may start prefetching the segment after
    /// it. The file may be unlinked later (cache eviction): a reader holding it open keeps reading it.
    func cachedLogFile(topic: String, baseOffset: Int64) -> String?
    /// Downloads the segment into the local cache (once, however many readers ask at the same time) and returns
    /// the path of its `.log`. Throws `DATA_LOSS` naming the topic and offsets when the object does not match its
    /// recorded checksum, `STORAGE_FAILURE` naming the store when it cannot be read.
    func fetch(topic: String, baseOffset: Int64) async throws(TelexError) -> String
    /// `TopicStore.deleteLog` deleted the topic: its archived segments no longer belong to any log of that name
    /// (the archive forgets them, and the archiver deletes their objects). Blocking; default: nothing.
    func topicDeleted(_ topic: String)
    /// Removes every record whose key is `key` from the archived segments of `topic` below `localStart` (those only
    /// the archive holds; `TopicLog.purge(key:)` rewrites the local ones, and the archiver uploads those): each
    /// segment holding one is rewritten and uploaded as its next rewrite, replacing the old objects. Returns the
    /// rewrites, oldest first. Throws naming the topic, segment and store when one cannot be done; segments done
    /// before it stay done. Default: nothing (a tier that holds nothing to purge).
    func purgeArchived(topic: String, key: String, below localStart: Int64) async throws(TelexError) -> [SegmentRewrite]
}

extension ArchiveTier {
    public func topicDeleted(_ topic: String) {}

    public func purgeArchived(
        topic: String, key: String, below localStart: Int64
    ) async throws(TelexError) -> [SegmentRewrite] { [] }
}

/// A sealed local segment, as the archiver sees it (`TopicLog.sealedSegmentFiles()`).
public struct SealedSegmentFile: Sendable, Equatable {
    public var topic: String
    public var baseOffset: Int64
    /// The offset after its last record (for a compacted segment: its marker's end offset).
    public var nextOffset: Int64
    /// Bytes of its `.log` when listed. Compaction may replace the file afterwards (with a new `rewrites`).
    public var bytes: Int
    public var firstAppendTime: Int64?
    public var lastAppendTime: Int64?
    /// The `.log` file.
    public var logPath: String
    /// The `.compacted` marker file when the segment was rewritten (Protocol/STORAGE.md §15.2), else nil.
    public var compactionMarkerPath: String?
    /// How many times compaction or a purge rewrote it (0: never).
    public var rewrites: UInt32
}

extension TopicLog {
    /// Every sealed segment still in the log, oldest first: rolled away from, and its `.log`, indexes and
    /// directory entry fsynced (so the bytes are final, until a compaction or purge replaces the file).
    public func sealedSegmentFiles() -> [SealedSegmentFile] {
        state.withLock { state in
            state.segments.dropLast().filter { segment in !state.unsealed.contains { $0 === segment } }.map { segment in
                SealedSegmentFile(
                    topic: topic, baseOffset: segment.baseOffset,
                    nextOffset: segment.compaction?.endOffset ?? segment.nextOffset, bytes: segment.size,
                    firstAppendTime: segment.firstAppendTime, lastAppendTime: segment.lastAppendTime,
                    logPath: segment.logPath,
                    compactionMarkerPath: segment.compaction.map { _ in
                        CompactionMarker.path(directory: directory, baseOffset: segment.baseOffset)
                    },
                    rewrites: segment.compaction?.rewrites ?? 0)
            }
        }
    }
}
