import Dispatch
import Synchronization
import TelexProtocol

/// An archived segment a log has open for reading, with the tier's file it was opened from.
struct OpenArchivedSegment {
    var entry: ArchivedSegment
    var path: String
    var segment: Segment
}

/// The archived segments a log keeps open, least recently used first, at most `capacity`.
struct ArchivedSegmentCache {
    static let capacity = 4
    private(set) var open: [OpenArchivedSegment] = []

    /// The open segment for `entry` if it was opened from `path` (the tier's current file), as a use; one opened
    /// from another file, or whose file the tier no longer has (`path` nil: evicted), is dropped into `dropped`.
    mutating func lookup(_ entry: ArchivedSegment, path: String?, dropped: inout [Segment]) -> Segment? {
        guard let index = open.firstIndex(where: { $0.entry.baseOffset == entry.baseOffset }) else { return nil }
        let found = open.remove(at: index)
        guard found.entry == entry, found.path == path else {
            dropped.append(found.segment)
            return nil
        }
        open.append(found)
        return found.segment
    }

    /// Forgets `segment`, if it is still open.
    mutating func remove(_ segment: Segment) {
        open.removeAll { $0.segment === segment }
    }

    /// Forgets every open segment (the log is closing), returning them to close.
    mutating func removeAll() -> [Segment] {
        defer { open = [] }
        return open.map(\.segment)
    }

    /// Adds an opened segment, replacing one of the same base, dropping the least recently used beyond `capacity`.
    mutating func insert(_ opened: OpenArchivedSegment, dropped: inout [Segment]) {
        open.removeAll { existing in
            guard existing.entry.baseOffset == opened.entry.baseOffset else { return false }
            dropped.append(existing.segment)
            return true
        }
        open.append(opened)
        while open.count > Self.capacity { dropped.append(open.removeFirst().segment) }
    }
}

/// Reads below the oldest local segment, served from the archive tier (Protocol/STORAGE.md §4.1).
///
/// An archived segment is opened read-only from the tier's local copy and CRC-checked whole first (the recovery
/// scan); any damage makes it unservable (`DATA_LOSS`), and nothing in the copy is cut or rewritten. Its `var`s are
/// written only before it enters the log's `archivedOpen` cache and never after, so reads use them without the
/// log's lock.
extension TopicLog {
    /// What a read below the local log found in the archive.
    enum ArchivedRead {
        case slice(LogSlice)
        /// The archived segment holding the offset is not open and opening it needs a fetch or a whole-file scan.
        case needsFetch(Int64)
        /// No batch at or after the offset in its archived segment (offsets a compaction removed, or ones the
        /// local log holds), or its file was evicted under the read: read on from there.
        case continueAt(Int64)
    }

    /// The first offset of the local segments (`startOffset` includes the archive's).
    public var localStartOffset: Int64 { state.withLock { $0.segments.first!.baseOffset } }

    /// Whether the archive holds segments below the oldest local one (which local compaction never rewrites).
    var hasArchivedOnlySegments: Bool {
        guard let first = archive?.archivedSegments(of: topic).first else { return false }
        return first.baseOffset < localStartOffset
    }

    /// Reads from `offset`, below `localStart`, from the archived segment holding it. With `fetching` (the blocking
    /// `read`) a segment not open is fetched and scanned here; without, that is `.needsFetch`.
    func readArchived(
        from offset: Int64, localStart: Int64, end: Int64, maxBytes: Int, maxBatches: Int, fetching: Bool,
        skipDamaged: Bool, continuing: ((Range<Int64>) -> Bool)?
    ) throws(TelexError) -> ArchivedRead {
        let listed = archive?.archivedSegments(of: topic) ?? []
        guard let index = listed.lastIndex(where: { $0.baseOffset <= offset }) else {
            let start = min(listed.first?.baseOffset ?? localStart, localStart)
            throw TelexError(.offsetOutOfRange, "offset \(offset) is out of range for \(topic) (log starts at \(start))",
                             topic: topic, offset: offset)
        }
        let entry = listed[index]
        // Where the next archived segment or the local log takes over; the local log wins where they overlap.
        let following = min(index + 1 < listed.count ? listed[index + 1].baseOffset : localStart, localStart)
        guard offset < entry.nextOffset else {
            // Offsets between an uncompacted segment's end and the next one were lost before it was archived (a
            // torn tail cut by recovery): DATA_LOSS like a gap between local segments, unless skipping damage.
            if entry.rewrites == 0, offset < following, !skipDamaged {
                throw gapLoss(from: entry.nextOffset, to: following, at: offset)
            }
            return .continueAt(following)
        }
        guard let segment = try openArchived(entry, fetching: fetching) else { return .needsFetch(offset) }
        let lease: FileLease
        do throws(TelexError) {
            lease = try segment.logFile.lease()
        } catch {
            // The tier evicted the file after naming it, and its descriptor was closed meanwhile: forget the
            // segment, so that the read again fetches it (a failing open then throws; it does not loop).
            guard !FileIO.exists(segment.logPath) else { throw error }
            archivedOpen.withLock { $0.remove(segment) }
            segment.closeFiles()
            return .continueAt(offset)
        }
        var headers = HeaderWindow(lease, limit: segment.size)
        if let slice = try collect(&headers, from: segment.indexedPosition(atOrBefore: offset).position,
                                   offset: offset, end: min(end, localStart), maxBytes: maxBytes,
                                   maxBatches: maxBatches, continuing: continuing) {
            return .slice(slice)
        }
        return .continueAt(following)
    }

    /// Makes the archived segment holding `offset` readable without a fetch: downloads it through the tier unless
    /// its cache has it, and opens it by a whole-file CRC scan (on a thread of its own, not the caller's). Throws
    /// `DATA_LOSS` for a damaged copy, or what the tier's fetch threw. Does nothing for an offset no archived
    /// segment holds (a read from there answers without a fetch). For `DeliveryRead.needsFetch`.
    public func fetchArchived(containing offset: Int64) async throws(TelexError) {
        guard let archive, let entry = archive.archivedSegments(of: topic).last(where: { $0.baseOffset <= offset })
        else { return }
        let cached = archive.cachedLogFile(topic: topic, baseOffset: entry.baseOffset)
        if let cached, cachedArchivedSegment(entry, path: cached) != nil { return }
        var path = cached
        // Another fetch may evict the file between the download and the open: fetch again, a few times.
        for attempt in 1...3 {
            do throws(TelexError) {
                if path == nil { path = try await archive.fetch(topic: topic, baseOffset: entry.baseOffset) }
                let file = path!
                _ = try await OwnThread.run { () throws(TelexError) in try self.openArchived(entry, path: file) }
                return
            } catch {
                if let file = path, attempt < 3, !FileIO.exists(file) {
                    path = nil
                    continue
                }
                throw error.topic == nil ? TelexError(error.code,
                    "fetching archived segment \(entry.baseOffset) of \(topic) for offset \(offset): \(error.message)",
                    topic: topic, offset: offset) : error
            }
        }
    }

    /// The archived segment `entry`, open for reading; nil when `fetching` is false and it is not open already.
    private func openArchived(_ entry: ArchivedSegment, fetching: Bool) throws(TelexError) -> Segment? {
        guard let archive else { return nil }
        let path = archive.cachedLogFile(topic: topic, baseOffset: entry.baseOffset)
        if let open = cachedArchivedSegment(entry, path: path) { return open }
        guard fetching else { return nil }
        let file: String
        if let path { file = path } else { file = try fetchBlocking(entry, from: archive) }
        return try openArchived(entry, path: file)
    }

    /// For a read replica, whose log holds no record of its own: when its only segment is empty and starts below
    /// `end` (the archive's end offset), replaces it by an empty segment at `end`, so that offsets below are read
    /// from the archive and the log's end is the archive's. Returns whether it did. Blocking (creates the new
    /// segment's files, removes the old one's): call it off event loops.
    @discardableResult
    public func adoptArchiveEnd(_ end: Int64) throws(TelexError) -> Bool {
        try directoryClosed.withLock { closed throws(TelexError) -> Bool in
            guard !closed else { return false }
            let replaced = try state.withLock { state throws(TelexError) -> Segment? in
                guard !state.closed, state.segments.count == 1, let only = state.segments.first, only.size == 0,
                    only.baseOffset < end, state.nextOffset == only.baseOffset
                else { return nil }
                let segment = try Segment(directory: directory, baseOffset: end, files: files)
                state.segments = [segment]
                state.nextOffset = end
                state.durableOffset = end
                return only
            }
            guard let replaced else { return false }
            try replaced.deleteFiles()
            try FileIO.syncDirectory(directory)
            logger.info("adopted the archive's end offset", metadata: ["endOffset": "\(end)"])
            return true
        }
    }

    /// The open segment for `entry` read from `path`, if any; a stale one (other file, evicted) is closed.
    private func cachedArchivedSegment(_ entry: ArchivedSegment, path: String?) -> Segment? {
        var dropped: [Segment] = []
        let open = archivedOpen.withLock { $0.lookup(entry, path: path, dropped: &dropped) }
        for segment in dropped { segment.closeFiles() }
        return open
    }

    /// Opens the copy of `entry` at `path` read-only, CRC-checks it whole, and keeps it open. Blocking.
    private func openArchived(_ entry: ArchivedSegment, path: String) throws(TelexError) -> Segment {
        let segment = try Self.scanArchivedCopy(entry, path: path, topic: topic, files: files,
                                                indexInterval: configuration.indexIntervalBytes,
                                                limits: configuration.batchLimits)
        var dropped: [Segment] = []
        // Not into a closed log's cache: close() has emptied it already, and nothing would close this one.
        guard !state.withLock({ $0.closed }) else {
            segment.closeFiles()
            throw TelexError(.shuttingDown, "\(topic) is closed", topic: topic, offset: entry.baseOffset)
        }
        archivedOpen.withLock {
            $0.insert(OpenArchivedSegment(entry: entry, path: path, segment: segment), dropped: &dropped)
        }
        for old in dropped { old.closeFiles() }
        return segment
    }

    /// Opens the copy of `entry` at `path` read-only and CRC-checks it whole (the recovery scan, building its
    /// in-memory index): any damage, a torn tail, or a size or end that is not the archive's is `DATA_LOSS` naming
    /// the topic and offset, and the copy is closed. Blocking.
    static func scanArchivedCopy(
        _ entry: ArchivedSegment, path: String, topic: String, files: FileDescriptorCache, indexInterval: Int,
        limits: RecordBatchLimits
    ) throws(TelexError) -> Segment {
        let compaction = entry.rewrites == 0 ? nil : CompactionMarker(
            endOffset: entry.nextOffset, lastAppendTime: entry.lastAppendTime, recordsKept: 0, recordsRemoved: 0,
            rewrites: entry.rewrites)
        let segment = try Segment(archivedLogPath: path, baseOffset: entry.baseOffset, compaction: compaction,
                                  files: files)
        func damage(_ offset: Int64, _ detail: String) -> TelexError {
            archivedDamage(entry, path: path, topic: topic, offset: offset, detail)
        }
        do throws(TelexError) {
            let scan = try segment.recover(indexInterval: indexInterval, limits: limits, following: entry.nextOffset,
                                           indexKeys: false)
            if let damaged = scan.damaged.first {
                throw damage(damaged.firstOffset,
                    "at file position \(damaged.position) (\(damaged.length) bytes hold no valid batch)")
            }
            if let reason = scan.tornReason {
                throw damage(scan.nextOffset, "at file position \(scan.end): \(reason)")
            }
            if segment.size != entry.bytes {
                throw damage(scan.nextOffset,
                    "its copy holds \(segment.size) bytes where the archive recorded \(entry.bytes)")
            }
            if compaction == nil, scan.nextOffset != entry.nextOffset {
                throw damage(scan.nextOffset,
                    "its batches end before offset \(scan.nextOffset) where the archive recorded \(entry.nextOffset)")
            }
        } catch {
            segment.closeFiles()
            throw error
        }
        return segment
    }

    private static func archivedDamage(
        _ entry: ArchivedSegment, path: String, topic: String, offset: Int64, _ detail: String
    ) -> TelexError {
        TelexError(.dataLoss,
            "archived segment \(entry.baseOffset) of \(topic) (offsets \(entry.baseOffset)-\(entry.nextOffset - 1)) is damaged at offset \(offset), \(detail), in \(path); it is not served: restore the object from a backup or delete its manifest",
            topic: topic, offset: offset)
    }

    /// The tier's `fetch`, waited for on this thread (the blocking `read`). The fetch runs as its own task, so the
    /// caller must not be a thread of the concurrency pool (or of Dispatch's global queues) the task needs.
    private func fetchBlocking(_ entry: ArchivedSegment, from archive: any ArchiveTier) throws(TelexError) -> String {
        let outcome = FetchOutcome()
        let topic = topic
        Task.detached {
            do throws(TelexError) {
                outcome.finish(.success(try await archive.fetch(topic: topic, baseOffset: entry.baseOffset)))
            } catch {
                outcome.finish(.failure(error))
            }
        }
        return try outcome.wait().get()
    }
}

/// The result of a fetch handed from its task to the thread waiting for it.
private final class FetchOutcome: Sendable {
    private let result = Mutex<Result<String, TelexError>?>(nil)
    private let done = DispatchSemaphore(value: 0)

    func finish(_ value: Result<String, TelexError>) {
        result.withLock { $0 = value }
        done.signal()
    }

    func wait() -> Result<String, TelexError> {
        done.wait()
        return result.withLock { $0! }
    }
}
