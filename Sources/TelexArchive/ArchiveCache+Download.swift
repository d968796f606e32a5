#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import Synchronization
import TelexProtocol
import TelexStorage

/// One segment's download into the cache: a slot among `maximumDownloads`, room (evictions), ranged GETs, the
/// SHA-256 check, the rename (Protocol/STORAGE.md §16.3).
extension ArchiveCache {
    /// Downloads one segment (the single flight's body): a download slot, space, then the ranges, the check, the
    /// rename. A prefetch that would have to evict a prefetched segment not read yet is skipped. `stale` is a copy
    /// of an earlier segment at the same path, removed first.
    func download(
        _ entry: ArchiveEntry, id: SegmentID, epoch: UInt64, prefetch: Bool, stale: String? = nil
    ) async -> Result<String, TelexError> {
        await acquireSlot()
        var result: Result<String, TelexError>
        do {
            if let stale { try await ArchiveFiles.offload { () throws(TelexError) in try FileIO.remove(stale) } }
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
                    path: path, bytes: entry.segment.bytes, lastUse: state.clock, unread: prefetch,
                    sha256: entry.sha256)
            case .failure:
                state.bytes -= entry.segment.bytes
            }
            metrics.cacheBytes.record(state.bytes)
            return deleted
        }
        if let deleted { try? await ArchiveFiles.offload { () throws(TelexError) in try FileIO.remove(deleted) } }
        return result
    }

    /// Local file errors carry no topic: they get the segment's topic and offsets (a subscriber sees them).
    func wrap(_ error: TelexError, _ entry: ArchiveEntry, _ id: SegmentID) -> TelexError {
        guard error.topic == nil else { return error }
        let segment = entry.segment
        return TelexError(error.code, """
            archive cache: fetching segment \(ArchiveLayout.base20(segment.baseOffset)) of topic '\(id.topic)' \
            (offsets \(segment.baseOffset)-\(segment.nextOffset - 1)): \(error.message)
            """, topic: id.topic, offset: segment.baseOffset)
    }

    func acquireSlot() async {
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
    func releaseSlot() {
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
    func evict(toFit id: SegmentID, prefetch: Bool) async throws(TelexError) {
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
        try await ArchiveFiles.offload { () throws(TelexError) in for path in paths { try FileIO.remove(path) } }
    }

    func downloadRanges(_ entry: ArchiveEntry, id: SegmentID) async throws(TelexError) -> String {
        let segment = entry.segment
        let topicDirectory = directory + "/" + id.topic
        let path = topicDirectory + "/" + ArchiveLayout.base20(id.baseOffset) + ".r\(id.rewrites).log"
        let partPath = path + ".part"
        let fd = try await ArchiveFiles.offload { () throws(TelexError) in
            try FileIO.makeDirectory(topicDirectory)
            return try FileIO.open(partPath, flags: O_WRONLY | O_CREAT | O_TRUNC)
        }
        do {
            try await Self.getRanges(entry.logKey, bytes: segment.bytes, rangeBytes: rangeBytes, from: objectStore,
                                     metrics: metrics) {
                offset, chunk throws(TelexError) in try ArchiveFiles.write(fd, chunk, at: offset, path: partPath)
            }
            FileIO.close(fd, path: partPath)
        } catch {
            FileIO.close(fd, path: partPath)
            try? await ArchiveFiles.offload { () throws(TelexError) in try FileIO.remove(partPath) }
            throw storeError(error, key: entry.logKey, topic: id.topic, offset: id.baseOffset)
        }
        let digest = try await ArchiveFiles.offload { () throws(TelexError) in
            try FileDigest(path: partPath, length: segment.bytes)
        }
        guard digest.sha256 == entry.sha256 else {
            try? await ArchiveFiles.offload { () throws(TelexError) in try FileIO.remove(partPath) }
            logger.error("archived segment does not match its manifest", metadata: [
                "topic": "\(id.topic)", "baseOffset": "\(id.baseOffset)", "key": "\(entry.logKey)",
            ])
            throw TelexError(.dataLoss, """
                archived segment \(ArchiveLayout.base20(id.baseOffset)) of topic '\(id.topic)' (offsets \
                \(segment.baseOffset)-\(segment.nextOffset - 1)) is damaged: object \(entry.logKey) in \
                \(objectStore.displayName) has sha256 \(digest.sha256), its manifest says \(entry.sha256); not served
                """, topic: id.topic, offset: segment.baseOffset)
        }
        try await ArchiveFiles.offload { () throws(TelexError) in try FileIO.rename(partPath, path) }
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

    func storeError(_ error: any Error, key: String, topic: String, offset: Int64) -> TelexError {
        if let error = error as? TelexError { return error }
        if let error = error as? ObjectStoreError, error.kind == .unavailable {
            return TelexError(.storageFailure, "archive \(objectStore.displayName) unavailable: \(error.message)",
                              topic: topic, offset: offset)
        }
        return TelexError(.storageFailure, "archive \(objectStore.displayName): reading \(key) failed: \(error)",
                          topic: topic, offset: offset)
    }
}
