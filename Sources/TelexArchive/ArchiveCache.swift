#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import Synchronization
import TelexProtocol
import TelexStorage

/// The local copies of archived segments that reads below the local log are served from (Protocol/STORAGE.md
/// §16.3): `DIR/<topic>/<base20>.r<rewrites>.log`, at most `cacheBytes` in total, least recently used evicted
/// first. Each copy is downloaded by ranged GETs into a `.part` file, checked against the manifest's SHA-256 and
/// only then renamed into place, so a path it hands out is always a complete, verified copy.
///
/// Thread-safe. `archivedSegments` and `cachedLogFile` only take a short lock (event loops call them); downloads
/// and evictions run in their own tasks, their file I/O on NIO's thread pool. At most `maximumDownloads` segments
/// download at once across the cache; later fetches wait for a slot.
public final class ArchiveCache: ArchiveTier {
    public let directory: String
    /// The bound on the bytes of cached segments (a segment bigger than it is still fetched, alone).
    public let cacheBytes: Int
    let objectStore: any ObjectStore
    let catalog: ArchiveCatalog
    let logger: Logger
    let metrics: ArchiveMetrics
    /// Bytes per ranged GET (8 MiB unless a test asks for less), and how many of one fetch are in flight at once.
    let rangeBytes: Int
    static let defaultRangeBytes = 8 << 20
    static let rangesInFlight = 2
    /// Segments downloading at once across the cache (each with `rangesInFlight` GETs).
    static let maximumDownloads = 4
    /// Segments after a hit or a fetch that are prefetched (2 unless a test asks otherwise).
    let prefetchCount: Int
    /// The archive's object keys and the primary's data directory (whose `topics/<t>/archive.state` a purge
    /// appends to); nil on a replica, which only reads the archive: `purgeArchived` then refuses.
    let layout: ArchiveLayout?
    let dataDirectory: String?

    struct SegmentID: Hashable {
        var topic: String
        var baseOffset: Int64
        var rewrites: UInt32
    }

    struct CachedSegment {
        var path: String
        var bytes: Int
        var lastUse: UInt64
        /// Downloaded by a prefetch and not read since: another prefetch never evicts it (the reader is coming).
        var unread: Bool
        /// The manifest's SHA-256 it was checked against: a catalog entry with another (a topic deleted and created
        /// again, seen by a replica) is another segment at the same path.
        var sha256: String
    }

    struct State {
        var cached: [SegmentID: CachedSegment] = [:]
        var inFlight: [SegmentID: Task<Result<String, TelexError>, Never>] = [:]
        var prefetches: [UInt64: Task<Void, Never>] = [:]
        /// Bytes of cached segments plus those being downloaded.
        var bytes = 0
        var clock: UInt64 = 0
        /// Fetches that joined a download another fetch had started (tests).
        var joined = 0
        /// Bumped when a topic is deleted: a download started before lands in no cache.
        var epochs: [String: UInt64] = [:]
        /// Downloads holding a slot, and those waiting for one.
        var downloading = 0
        var slotWaiters: [CheckedContinuation<Void, Never>] = []
    }

    let state = Mutex(State())

    enum Lookup {
        case cached(String)
        case downloading(Task<Result<String, TelexError>, Never>)
    }

    /// Opens the cache at `directory`, creating it, and empties it (it is only a cache: nothing in it is trusted
    /// across restarts). Blocking: call it at startup, off event loops.
    ///
    /// `segmentBytes` is the largest segment the archive holds (the primary's `--segment-bytes`): the cache must
    /// hold the segment being read and the `prefetchCount` (2) after it, else prefetches evict what the reader is
    /// about to read. A smaller `cacheBytes` throws `INVALID_REQUEST` naming both and `minimumCacheBytes`.
    ///
    /// A primary passes its `layout` and `dataDirectory`, so that an ADMIN purge reaches the segments only the
    /// archive holds (`purgeArchived`); a replica passes neither.
    public convenience init(
        directory: String, objectStore: any ObjectStore, catalog: ArchiveCatalog, cacheBytes: Int = 512 << 20,
        segmentBytes: Int, logger: Logger, metrics: ArchiveMetrics = ArchiveMetrics(), layout: ArchiveLayout? = nil,
        dataDirectory: String? = nil
    ) throws(TelexError) {
        try self.init(directory: directory, objectStore: objectStore, catalog: catalog, cacheBytes: cacheBytes,
                      segmentBytes: segmentBytes, rangeBytes: Self.defaultRangeBytes, prefetchCount: 2,
                      logger: logger, metrics: metrics, layout: layout, dataDirectory: dataDirectory)
    }

    /// The smallest `cacheBytes` for segments of up to `segmentBytes`: the one read and the two prefetched.
    public static func minimumCacheBytes(segmentBytes: Int, prefetchCount: Int = 2) -> Int {
        (prefetchCount + 1) * segmentBytes
    }

    init(
        directory: String, objectStore: any ObjectStore, catalog: ArchiveCatalog, cacheBytes: Int,
        segmentBytes: Int?, rangeBytes: Int, prefetchCount: Int, logger: Logger, metrics: ArchiveMetrics,
        layout: ArchiveLayout? = nil, dataDirectory: String? = nil
    ) throws(TelexError) {
        if let segmentBytes {
            let minimum = Self.minimumCacheBytes(segmentBytes: segmentBytes, prefetchCount: prefetchCount)
            guard cacheBytes >= minimum else {
                throw TelexError(.invalidRequest, """
                    archive cache of \(cacheBytes) bytes is too small for segments of \(segmentBytes) bytes: it must \
                    hold \(prefetchCount + 1) segments (the one read and \(prefetchCount) prefetched), at least \
                    \(minimum) bytes
                    """)
            }
        }
        try FileIO.makeDirectory(directory)
        try ArchiveFiles.emptyDirectory(directory)
        self.directory = directory
        self.objectStore = objectStore
        self.catalog = catalog
        self.cacheBytes = cacheBytes
        self.rangeBytes = rangeBytes
        self.prefetchCount = prefetchCount
        self.logger = logger
        self.metrics = metrics
        self.layout = layout
        self.dataDirectory = dataDirectory
        metrics.cacheBytes.record(0)
    }

    public func archivedSegments(of topic: String) -> [ArchivedSegment] {
        catalog.segments(of: topic)
    }

    public func cachedLogFile(topic: String, baseOffset: Int64) -> String? {
        guard
            let (entry, following) = catalog.entry(
                topic: topic, baseOffset: baseOffset, following: prefetchCount)
        else { return nil }
        let id = SegmentID(topic: topic, baseOffset: baseOffset, rewrites: entry.segment.rewrites)
        let path: String? = state.withLock { state in
            guard var cached = state.cached[id], cached.sha256 == entry.sha256 else { return nil }
            state.clock += 1
            cached.lastUse = state.clock
            cached.unread = false
            state.cached[id] = cached
            return cached.path
        }
        if path != nil { prefetch(topic: topic, bases: following) }
        return path
    }

    /// Forgets `topic` (deleted: a topic created again with its name is another log): its catalog entries and its
    /// cached copies; a download of it in flight ends without caching. Blocking (unlinks the copies): call it off
    /// event loops, as `TopicStore.deleteLog`.
    public func topicDeleted(_ topic: String) {
        catalog.markDeleted(topic)
        let paths: [String] = state.withLock { state in
            state.epochs[topic, default: 0] += 1
            let ids = state.cached.keys.filter { $0.topic == topic }
            var paths: [String] = []
            for id in ids {
                guard let cached = state.cached.removeValue(forKey: id) else { continue }
                state.bytes -= cached.bytes
                paths.append(cached.path)
            }
            metrics.cacheBytes.record(state.bytes)
            return paths
        }
        for path in paths {
            do {
                try FileIO.remove(path)
            } catch {
                logger.warning("cannot remove a cached segment of a deleted topic", metadata: [
                    "topic": "\(topic)", "error": "\(error.message)",
                ])
            }
        }
    }

    /// Downloads the segment (once, however many ask at the same time), then prefetches the two after it: a reader
    /// that needed segment k needs k+1 next.
    public func fetch(topic: String, baseOffset: Int64) async throws(TelexError) -> String {
        try await fetch(topic: topic, baseOffset: baseOffset, prefetching: true)
    }

    private func fetch(topic: String, baseOffset: Int64, prefetching: Bool) async throws(TelexError) -> String {
        guard
            let (entry, following) = catalog.entry(
                topic: topic, baseOffset: baseOffset, following: prefetching ? prefetchCount : 0)
        else {
            // The caller routed a read by a catalog that no longer has the segment (a deleted topic, a race).
            throw TelexError(.storageFailure, """
                archive cache: topic '\(topic)' has no archived segment at base offset \(baseOffset) in the catalog
                """, topic: topic, offset: baseOffset)
        }
        let id = SegmentID(topic: topic, baseOffset: baseOffset, rewrites: entry.segment.rewrites)
        let found: Lookup = state.withLock { state in
            var stale: String? = nil
            if let cached = state.cached[id], cached.sha256 != entry.sha256 {
                state.cached[id] = nil
                state.bytes -= cached.bytes
                stale = cached.path
            }
            if var cached = state.cached[id] {
                state.clock += 1
                cached.lastUse = state.clock
                if prefetching { cached.unread = false }
                state.cached[id] = cached
                return .cached(cached.path)
            }
            if let running = state.inFlight[id] {
                state.joined += 1
                return .downloading(running)
            }
            state.bytes += entry.segment.bytes
            let epoch = state.epochs[topic, default: 0]
            // Detached: the download must not run on the caller's executor (an event loop's).
            let download = Task.detached {
                await self.download(entry, id: id, epoch: epoch, prefetch: !prefetching, stale: stale)
            }
            state.inFlight[id] = download
            return .downloading(download)
        }
        let path: String
        switch found {
        case .cached(let cached): path = cached
        case .downloading(let task):
            path = try await task.value.get()
            if prefetching {
                state.withLock { state in state.cached[id]?.unread = false }
            }
        }
        if prefetching { prefetch(topic: topic, bases: following) }
        return path
    }

    /// Starts fetching `bases` of `topic` one after the other in the background, those neither cached nor in flight.
    private func prefetch(topic: String, bases: [Int64]) {
        state.withLock { state in
            // Over budget already (a big segment, downloads in flight): a prefetch would only evict.
            guard state.bytes <= cacheBytes else { return }
            let wanted = bases.filter { base in
                !state.cached.keys.contains { $0.topic == topic && $0.baseOffset == base }
                    && !state.inFlight.keys.contains { $0.topic == topic && $0.baseOffset == base }
            }
            guard !wanted.isEmpty else { return }
            state.clock += 1
            let number = state.clock
            state.prefetches[number] = Task.detached {
                for base in wanted {
                    if self.state.withLock({ $0.bytes > self.cacheBytes }) { break }
                    do {
                        _ = try await self.fetch(topic: topic, baseOffset: base, prefetching: false)
                    } catch {
                        self.logger.debug("prefetch failed", metadata: ["topic": "\(topic)", "error": "\(error)"])
                    }
                }
                _ = self.state.withLock { $0.prefetches.removeValue(forKey: number) }
            }
        }
    }

    /// Waits until every prefetch and download started so far has ended (tests).
    func settle() async {
        while true {
            let tasks = state.withLock { state in (Array(state.prefetches.values), Array(state.inFlight.values)) }
            if tasks.0.isEmpty && tasks.1.isEmpty { return }
            for task in tasks.0 { await task.value }
            for task in tasks.1 { _ = await task.value }
        }
    }

    /// The base offsets of `topic` with a complete cached copy, ascending (tests and diagnostics; no use counted).
    public func cachedBaseOffsets(of topic: String) -> [Int64] {
        state.withLock { $0.cached.keys.filter { $0.topic == topic }.map(\.baseOffset).sorted() }
    }
}
