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
    public convenience init(
        directory: String, objectStore: any ObjectStore, catalog: ArchiveCatalog, cacheBytes: Int = 512 << 20,
        segmentBytes: Int, logger: Logger, metrics: ArchiveMetrics = ArchiveMetrics()
    ) throws(TelexError) {
        try self.init(directory: directory, objectStore: objectStore, catalog: catalog, cacheBytes: cacheBytes,
                      segmentBytes: segmentBytes, rangeBytes: Self.defaultRangeBytes, prefetchCount: 2,
                      logger: logger, metrics: metrics)
    }

    /// The smallest `cacheBytes` for segments of up to `segmentBytes`: the one read and the two prefetched.
    public static func minimumCacheBytes(segmentBytes: Int, prefetchCount: Int = 2) -> Int {
        (prefetchCount + 1) * segmentBytes
    }

    init(
        directory: String, objectStore: any ObjectStore, catalog: ArchiveCatalog, cacheBytes: Int,
        segmentBytes: Int?, rangeBytes: Int, prefetchCount: Int, logger: Logger, metrics: ArchiveMetrics
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
        try ArchiveFiles.makeDirectory(directory)
        try ArchiveFiles.emptyDirectory(directory)
        self.directory = directory
        self.objectStore = objectStore
        self.catalog = catalog
        self.cacheBytes = cacheBytes
        self.rangeBytes = rangeBytes
        self.prefetchCount = prefetchCount
        self.logger = logger
        self.metrics = metrics
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
            guard var cached = state.cached[id] else { return nil }
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
        catalog.removeTopic(topic)
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
                try ArchiveFiles.unlink(path)
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
                await self.download(entry, id: id, epoch: epoch, prefetch: !prefetching)
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

    /// Downloads one segment (the single flight's body): a download slot, space, then the ranges, the check, the
    /// rename. A prefetch that would have to evict a prefetched segment not read yet is skipped.
    private func download(
        _ entry: ArchiveEntry, id: SegmentID, epoch: UInt64, prefetch: Bool
    ) async -> Result<String, TelexError> {
        await acquireSlot()
        var result: Result<String, TelexError>
        do {
            try await evict(toFit: id, prefetch: prefetch)
            result = .success(try await downloadRanges(entry, id: id))
        } catch {
            result = .failure(wrap(error, entry, id))
        }
        releaseSlot()
        let deleted: String? = state.withLock { state in
            state.inFlight[id] = nil
            var deleted: String? = nil
            if case .success(let path) = result, state.epochs[id.topic, default: 0] != epoch {
                deleted = path
                result = .failure(TelexError(.storageFailure, """
                    archive cache: topic '\(id.topic)' was deleted while segment \
                    \(ArchiveLayout.base20(id.baseOffset)) of it was being fetched
                    """, topic: id.topic, offset: id.baseOffset))
            }
            switch result {
            case .success(let path):
                state.clock += 1
                state.cached[id] = CachedSegment(
                    path: path, bytes: entry.segment.bytes, lastUse: state.clock, unread: prefetch)
            case .failure:
                state.bytes -= entry.segment.bytes
            }
            metrics.cacheBytes.record(state.bytes)
            return deleted
        }
        if let deleted { try? await ArchiveFiles.offload { () throws(TelexError) in try ArchiveFiles.unlink(deleted) } }
        return result
    }

    /// Local file errors carry no topic: they get the segment's topic and offsets (a subscriber sees them).
    private func wrap(_ error: TelexError, _ entry: ArchiveEntry, _ id: SegmentID) -> TelexError {
        guard error.topic == nil else { return error }
        let segment = entry.segment
        return TelexError(error.code, """
            archive cache: fetching segment \(ArchiveLayout.base20(segment.baseOffset)) of topic '\(id.topic)' \
            (offsets \(segment.baseOffset)-\(segment.nextOffset - 1)): \(error.message)
            """, topic: id.topic, offset: segment.baseOffset)
    }

    private func acquireSlot() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state in
                guard state.downloading < Self.maximumDownloads else {
                    state.slotWaiters.append(continuation)
                    return false
                }
                state.downloading += 1
                return true
            }
            if now { continuation.resume() }
        }
    }

    /// Hands the slot to the first waiter, or frees it.
    private func releaseSlot() {
        let next: CheckedContinuation<Void, Never>? = state.withLock { state in
            guard !state.slotWaiters.isEmpty else {
                state.downloading -= 1
                return nil
            }
            return state.slotWaiters.removeFirst()
        }
        next?.resume()
    }

    /// Downloads holding a slot and downloads waiting for one (tests).
    var downloadSlots: (active: Int, waiting: Int) {
        state.withLock { ($0.downloading, $0.slotWaiters.count) }
    }

    /// Removes least recently used copies until the cache's bytes (this download's reserved already) fit. For a
    /// prefetch, prefetched copies not read yet are kept, and when they would have to go the prefetch is dropped.
    private func evict(toFit id: SegmentID, prefetch: Bool) async throws(TelexError) {
        let victims: [CachedSegment]? = state.withLock { state in
            var candidates = state.cached.filter { !prefetch || !$0.value.unread }
                .sorted { $0.value.lastUse < $1.value.lastUse }
            var freed = 0
            var count = 0
            while state.bytes - freed > cacheBytes, count < candidates.count {
                freed += candidates[count].value.bytes
                count += 1
            }
            if prefetch && state.bytes - freed > cacheBytes { return nil }
            candidates = Array(candidates.prefix(count))
            for (key, victim) in candidates {
                state.cached[key] = nil
                state.bytes -= victim.bytes
            }
            return candidates.map(\.value)
        }
        guard let victims else {
            throw TelexError(.storageFailure, """
                archive cache: no room to prefetch segment \(ArchiveLayout.base20(id.baseOffset)) of topic \
                '\(id.topic)' without evicting prefetched segments not read yet
                """, topic: id.topic, offset: id.baseOffset)
        }
        // A reader holding one of these open keeps reading it; the next `cachedLogFile` says it must be fetched.
        let paths = victims.map(\.path)
        try await ArchiveFiles.offload { () throws(TelexError) in for path in paths { try ArchiveFiles.unlink(path) } }
    }

    private func downloadRanges(_ entry: ArchiveEntry, id: SegmentID) async throws(TelexError) -> String {
        let segment = entry.segment
        let topicDirectory = directory + "/" + id.topic
        let path = topicDirectory + "/" + ArchiveLayout.base20(id.baseOffset) + ".r\(id.rewrites).log"
        let partPath = path + ".part"
        let fd = try await ArchiveFiles.offload { () throws(TelexError) in
            try ArchiveFiles.makeDirectory(topicDirectory)
            return try ArchiveFiles.open(partPath, flags: O_WRONLY | O_CREAT | O_TRUNC)
        }
        do {
            try await Self.getRanges(entry.logKey, bytes: segment.bytes, rangeBytes: rangeBytes, from: objectStore,
                                     metrics: metrics) {
                offset, chunk throws(TelexError) in try ArchiveFiles.write(fd, chunk, at: offset, path: partPath)
            }
            close(fd)
        } catch {
            close(fd)
            try? ArchiveFiles.unlink(partPath)
            throw storeError(error, key: entry.logKey, topic: id.topic, offset: id.baseOffset)
        }
        let digest = try await ArchiveFiles.offload { () throws(TelexError) in
            try FileDigest(path: partPath, length: segment.bytes)
        }
        guard digest.sha256 == entry.sha256 else {
            try? ArchiveFiles.unlink(partPath)
            logger.error("archived segment does not match its manifest", metadata: [
                "topic": "\(id.topic)", "baseOffset": "\(id.baseOffset)", "key": "\(entry.logKey)",
            ])
            throw TelexError(.dataLoss, """
                archived segment \(ArchiveLayout.base20(id.baseOffset)) of topic '\(id.topic)' (offsets \
                \(segment.baseOffset)-\(segment.nextOffset - 1)) is damaged: object \(entry.logKey) in \
                \(objectStore.displayName) has sha256 \(digest.sha256), its manifest says \(entry.sha256); not served
                """, topic: id.topic, offset: segment.baseOffset)
        }
        try await ArchiveFiles.offload { () throws(TelexError) in try ArchiveFiles.rename(partPath, to: path) }
        metrics.fetchedBytes.increment(by: segment.bytes)
        return path
    }

    /// Reads `bytes` bytes of `key` by ranged GETs of `rangeBytes`, `rangesInFlight` at a time, handing each range
    /// to `write` (in any order) with its offset. A short range throws `invalidResponse`.
    static func getRanges(
        _ key: String, bytes: Int, rangeBytes: Int = defaultRangeBytes, from objectStore: any ObjectStore,
        metrics: ArchiveMetrics,
        write: @escaping @Sendable (Int, ByteBuffer) throws(TelexError) -> Void
    ) async throws {
        let offsets = Array(stride(from: 0, to: bytes, by: rangeBytes))
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0
            func start() {
                let offset = offsets[next]
                next += 1
                let range = offset..<min(bytes, offset + rangeBytes)
                group.addTask {
                    let chunk = try await metrics.counting("get") { try await objectStore.get(key: key, range: range) }
                    guard chunk.readableBytes == range.count else {
                        throw ObjectStoreError(.invalidResponse, """
                            GET \(key) bytes \(range.lowerBound)-\(range.upperBound - 1) returned \
                            \(chunk.readableBytes) bytes, expected \(range.count)
                            """)
                    }
                    try await ArchiveFiles.offload { () throws(TelexError) in try write(offset, chunk) }
                }
            }
            while next < offsets.count && next < rangesInFlight { start() }
            while try await group.next() != nil {
                if next < offsets.count { start() }
            }
        }
    }

    private func storeError(_ error: any Error, key: String, topic: String, offset: Int64) -> TelexError {
        if let error = error as? TelexError { return error }
        if let error = error as? ObjectStoreError, error.kind == .unavailable {
            return TelexError(.storageFailure, "archive \(objectStore.displayName) unavailable: \(error.message)",
                              topic: topic, offset: offset)
        }
        return TelexError(.storageFailure, "archive \(objectStore.displayName): reading \(key) failed: \(error)",
                          topic: topic, offset: offset)
    }
}
