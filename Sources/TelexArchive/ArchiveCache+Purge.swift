import NIOCore
import TelexProtocol
import TelexStorage

/// A purge reaching the segments only the archive holds (Protocol/STORAGE.md §15.4, §16.2): each is fetched
/// through the cache, rewritten without the key's records and uploaded as its next rewrite exactly as the archiver
/// uploads a rewritten local segment (confirmed `.log` and `.compacted` PUTs, the manifest last, then the state
/// line and the catalog), after which the superseded objects and the cache's stale copy are deleted.
///
/// Serialised with the archiver per topic by `ArchiveCatalog.topicLock`: both append the topic's state file, and
/// the archiver deletes a deleted topic's objects; the lock is held for the whole purge of the topic. File work
/// (the rewrite, hashing, the state file, unlinks) runs on NIO's thread pool.
extension ArchiveCache {
    public func purgeArchived(
        topic: String, key: String, below localStart: Int64
    ) async throws(TelexError) -> [SegmentRewrite] {
        guard let layout, let dataDirectory else {
            throw TelexError(.invalidRequest, """
                this broker only reads the archive \(objectStore.displayName) (a read replica): purge on the \
                primary, which rewrites the archived segments; replicas see them at their next poll
                """, topic: topic)
        }
        let target = PurgeTarget(layout: layout, dataDirectory: dataDirectory, topic: topic, key: key)
        var rewrites: [SegmentRewrite] = []
        let entries = catalog.entries(of: topic).filter { $0.segment.baseOffset < localStart }
        for (index, listed) in entries.enumerated() {
            let following = index + 1 < entries.count ? entries[index + 1].segment.baseOffset : localStart
            do throws(TelexError) {
                // The lock per segment, not for the whole purge: a purge over a long archive must not hold the
                // archiver (and with it local retention) back for its whole length.
                let rewrite = try await catalog.topicLock.withLock(topic) { () async throws(TelexError) in
                    let entry = try await reconciled(listed, target)
                    try refuseLostTail(entry, following: following, target)
                    let rewrite = try await purge(entry, target)
                    // Also after a purge that failed past its manifest: running it again finishes the deletion.
                    try await deleteSupersededObjects(of: entry.segment.baseOffset, target)
                    return rewrite
                }
                if let rewrite { rewrites.append(rewrite) }
            } catch {
                // What was erased before the failure is named in the error, so the reply and the audit record it.
                let erased = rewrites.flatMap(\.removedOffsets)
                guard !erased.isEmpty else { throw error }
                throw TelexError(error.code, """
                    \(error.message) (before it, offsets \(erased.map(String.init).joined(separator: ",")) were erased \
                    from the archive)
                    """, topic: topic, offset: error.offset)
            }
        }
        if !rewrites.isEmpty {
            logger.info("purged key from archived segments", metadata: [
                "topic": "\(topic)", "segments": "\(rewrites.count)",
                "recordsRemoved": "\(rewrites.reduce(0) { $0 + $1.removedOffsets.count })",
            ])
        }
        return rewrites
    }

    /// The segment as the bucket's manifest has it. A purge that failed after its manifest and before its state
    /// line left the catalog one rewrite behind: the manifest's rewrite is adopted (its `.log` checked), so that the
    /// next purge neither rewrites the older copy — which still holds what the first removed — over it, nor
    /// deletes its objects.
    private func reconciled(_ entry: ArchiveEntry, _ target: PurgeTarget) async throws(TelexError) -> ArchiveEntry {
        let segment = entry.segment
        let manifestKey = target.layout.manifest(topic: target.topic, baseOffset: segment.baseOffset)
        let bytes = try await storeCall("get", manifestKey, segment, target.topic) {
            try await self.objectStore.get(key: manifestKey, range: nil)
        }
        let manifest = try SegmentManifest.decode(bytes, key: manifestKey, layout: target.layout)
        guard manifest.rewrites > segment.rewrites else { return entry }
        let object = try await storeCall("head", manifest.logKey, segment, target.topic) {
            try await self.objectStore.head(key: manifest.logKey)
        }
        guard object?.size == manifest.bytes else {
            throw TelexError(.storageFailure, """
                archive purge of segment \(ArchiveLayout.base20(segment.baseOffset)) of topic '\(target.topic)': its \
                manifest \(manifestKey) names \(manifest.logKey), which \(objectStore.displayName) does not hold as \
                described; nothing done
                """, topic: target.topic, offset: segment.baseOffset)
        }
        let record = ArchivedSegmentRecord(manifest: manifest)
        let statePath = ArchiveState.path(dataDirectory: target.dataDirectory, topic: target.topic)
        try await ArchiveFiles.offload { () throws(TelexError) in try ArchiveState.append(record, path: statePath) }
        let adopted = ArchiveEntry(manifest: manifest)
        catalog.record(adopted, topic: target.topic)
        return adopted
    }

    /// An uncompacted segment that ends before the next one begins lost its tail before it was archived: a rewrite
    /// would mark the gap as compaction's, and reads would then skip it silently instead of reporting the loss.
    private func refuseLostTail(_ entry: ArchiveEntry, following: Int64, _ target: PurgeTarget) throws(TelexError) {
        let segment = entry.segment
        guard segment.rewrites == 0, segment.nextOffset < following else { return }
        throw TelexError(.dataLoss, """
            archive purge: segment \(ArchiveLayout.base20(segment.baseOffset)) of topic '\(target.topic)' ends at \
            offset \(segment.nextOffset) but the next begins at \(following) (lost offsets): not rewritten
            """, topic: target.topic, offset: segment.nextOffset)
    }

    struct PurgeTarget {
        var layout: ArchiveLayout
        var dataDirectory: String
        var topic: String
        var key: String
    }

    /// Rewrites and uploads one archived segment; nil when it holds no record of the key (nothing uploaded).
    private func purge(_ entry: ArchiveEntry, _ target: PurgeTarget) async throws(TelexError) -> SegmentRewrite? {
        let segment = entry.segment
        let topic = target.topic
        let previousMarker: ByteBuffer?
        if let compactedKey = entry.compactedKey {
            previousMarker = try await storeCall("get", compactedKey, segment, topic) {
                try await self.objectStore.get(key: compactedKey, range: nil)
            }
        } else {
            previousMarker = nil
        }
        let rewrites = segment.rewrites + 1
        let output = "\(directory)/\(topic)/\(ArchiveLayout.base20(segment.baseOffset)).r\(rewrites).purging"
        guard let rewritten = try await rewriteCopy(segment, target, previousMarker: previousMarker, into: output)
        else { return nil }
        do throws(TelexError) {
            try await upload(rewritten, from: output, replacing: entry, target)
        } catch {
            try? await ArchiveFiles.offload { () throws(TelexError) in try FileIO.remove(output) }
            throw error
        }
        try? await ArchiveFiles.offload { () throws(TelexError) in try FileIO.remove(output) }
        return rewritten.rewrite
    }

    /// The segment's cached copy rewritten into `output`; fetched again if the cache evicted it before it was
    /// opened (a few times).
    private func rewriteCopy(
        _ segment: ArchivedSegment, _ target: PurgeTarget, previousMarker: ByteBuffer?, into output: String
    ) async throws(TelexError) -> ArchivedRewrite? {
        enum Outcome: Sendable {
            case done(ArchivedRewrite?)
            case evicted
        }
        let topic = target.topic
        let key = target.key
        for _ in 1...3 {
            let path = try await fetch(topic: topic, baseOffset: segment.baseOffset)
            let outcome = try await ArchiveFiles.offload { () throws(TelexError) -> Outcome in
                do throws(TelexError) {
                    return .done(try TopicLog.rewriteArchivedCopy(
                        topic: topic, path: path, entry: segment, previousMarker: previousMarker, into: output
                    ) { $0.key != key })
                } catch {
                    if !FileIO.exists(path) { return .evicted }
                    throw error
                }
            }
            if case .done(let rewritten) = outcome { return rewritten }
        }
        throw TelexError(.storageFailure, """
            archive purge: segment \(ArchiveLayout.base20(segment.baseOffset)) of topic '\(topic)' was evicted \
            from the archive cache \(directory) before it could be read, 3 times; make the cache larger or try again
            """, topic: topic, offset: segment.baseOffset)
    }

    /// Steps 3-5 of the upload protocol for the rewritten file, then the cache's stale copy is dropped.
    private func upload(
        _ rewritten: ArchivedRewrite, from output: String, replacing entry: ArchiveEntry, _ target: PurgeTarget
    ) async throws(TelexError) {
        let segment = rewritten.segment
        let topic = target.topic
        let layout = target.layout
        let digest = try await ArchiveFiles.offload { () throws(TelexError) in
            try FileDigest(path: output, length: segment.bytes)
        }
        let logKey = layout.segmentLog(topic: topic, baseOffset: segment.baseOffset, rewrites: segment.rewrites)
        let stored = try await storeCall("put", logKey, segment, topic) {
            try await self.objectStore.putFile(key: logKey, path: output, offset: 0, length: segment.bytes)
        }
        var size = stored.size
        if stored.etag == nil {
            size = try await storeCall("head", logKey, segment, topic) {
                try await self.objectStore.head(key: logKey)
            }?.size ?? -1
        }
        if size != segment.bytes || stored.etag.map({ $0 != digest.md5 }) == true {
            metrics.error("put")
            throw TelexError(.storageFailure, """
                archive purge of segment \(ArchiveLayout.base20(segment.baseOffset)) of topic '\(topic)': \
                \(objectStore.displayName) confirmed \(logKey) with size \(size) and ETag \(stored.etag ?? "none"), \
                expected \(segment.bytes) bytes and the MD5 \(digest.md5); nothing committed
                """, topic: topic, offset: segment.baseOffset)
        }
        let compactedKey = layout.compactionMarker(
            topic: topic, baseOffset: segment.baseOffset, rewrites: segment.rewrites)
        _ = try await storeCall("put", compactedKey, segment, topic) {
            try await self.objectStore.putBytes(key: compactedKey, bytes: rewritten.marker)
        }
        // A topic deleted meanwhile (its entries forgotten, its objects deleted once this purge lets go of the
        // lock) gets no manifest.
        guard catalog.entry(topic: topic, baseOffset: segment.baseOffset)?.0 == entry else {
            throw TelexError(.storageFailure, """
                archive purge: segment \(ArchiveLayout.base20(segment.baseOffset)) of topic '\(topic)' left the \
                archive's catalog while it was purged (the topic was deleted?); nothing committed
                """, topic: topic, offset: segment.baseOffset)
        }
        let manifestKey = layout.manifest(topic: topic, baseOffset: segment.baseOffset)
        let manifest = SegmentManifest(
            topic: topic, baseOffset: segment.baseOffset, nextOffset: segment.nextOffset, bytes: segment.bytes,
            sha256: digest.sha256, md5: digest.md5, rewrites: segment.rewrites,
            firstAppendTime: rewritten.firstAppendTime, lastAppendTime: segment.lastAppendTime, logKey: logKey,
            compactedKey: compactedKey, uploadedAt: FileIO.nowMilliseconds())
        _ = try await storeCall("put", manifestKey, segment, topic) {
            try await self.objectStore.putBytes(key: manifestKey, bytes: manifest.encoded())
        }
        // Deleted during the PUT: no state line into a new topic's file, no entry back in the catalog (the archiver
        // deletes the deleted topic's objects, this manifest included).
        guard catalog.entry(topic: topic, baseOffset: segment.baseOffset)?.0 == entry else {
            throw TelexError(.storageFailure, """
                archive purge: segment \(ArchiveLayout.base20(segment.baseOffset)) of topic '\(topic)' left the \
                archive's catalog during its manifest's upload (the topic was deleted?); not recorded
                """, topic: topic, offset: segment.baseOffset)
        }
        let record = ArchivedSegmentRecord(manifest: manifest)
        let statePath = ArchiveState.path(dataDirectory: target.dataDirectory, topic: topic)
        do throws(TelexError) {
            try await ArchiveFiles.offload { () throws(TelexError) in try ArchiveState.append(record, path: statePath) }
        } catch {
            throw TelexError(error.code, """
                archive purge of segment \(ArchiveLayout.base20(segment.baseOffset)) of topic '\(topic)': its \
                manifest \(manifestKey) is written but the state line is not: \(error.message)
                """, topic: topic, offset: segment.baseOffset)
        }
        catalog.record(ArchiveEntry(manifest: manifest), topic: topic)
        await dropCachedCopy(topic: topic, baseOffset: segment.baseOffset, rewrites: entry.segment.rewrites)
        metrics.uploadedSegments.increment()
        metrics.uploadedBytes.increment(by: segment.bytes)
    }

    /// Deletes the segment's objects of rewrites other than the catalog's (those a purge or compaction replaced).
    private func deleteSupersededObjects(of baseOffset: Int64, _ target: PurgeTarget) async throws(TelexError) {
        guard let (current, _) = catalog.entry(topic: target.topic, baseOffset: baseOffset) else { return }
        let segment = current.segment
        let prefix = target.layout.rewritesPrefix(topic: target.topic, baseOffset: baseOffset)
        let objects = try await storeCall("list", prefix, segment, target.topic) {
            try await self.objectStore.list(prefix: prefix)
        }
        // Only older rewrites: a newer one would be a manifest this broker has not recorded (never deleted on a guess).
        for object in objects {
            let rest = object.key.dropFirst(prefix.count)
            guard let number = rest.split(separator: ".").first.flatMap({ UInt32($0) }), number < segment.rewrites
            else { continue }
            try await storeCall("delete", object.key, segment, target.topic) {
                try await self.objectStore.delete(key: object.key)
            }
        }
    }

    /// Forgets and unlinks the cached copy of the segment's rewrite `rewrites` (a reader holding it open keeps
    /// reading it until it lets go).
    private func dropCachedCopy(topic: String, baseOffset: Int64, rewrites: UInt32) async {
        let id = SegmentID(topic: topic, baseOffset: baseOffset, rewrites: rewrites)
        let path: String? = state.withLock { state in
            guard let cached = state.cached.removeValue(forKey: id) else { return nil }
            state.bytes -= cached.bytes
            metrics.cacheBytes.record(state.bytes)
            return cached.path
        }
        guard let path else { return }
        do {
            try await ArchiveFiles.offload { () throws(TelexError) in try FileIO.remove(path) }
        } catch {
            logger.warning("cannot remove a purged segment's cached copy", metadata: [
                "topic": "\(topic)", "path": "\(path)", "error": "\(error.message)",
            ])
        }
    }

    /// An object-store call of the purge, counted; its failure as `STORAGE_FAILURE` naming the segment, the key
    /// and the store.
    private func storeCall<T>(
        _ operation: String, _ key: String, _ segment: ArchivedSegment, _ topic: String,
        _ call: () async throws -> T
    ) async throws(TelexError) -> T {
        do {
            return try await metrics.counting(operation, call)
        } catch {
            throw TelexError(.storageFailure, """
                archive purge of segment \(ArchiveLayout.base20(segment.baseOffset)) of topic '\(topic)': \
                \(operation.uppercased()) \(key) at \(objectStore.displayName) failed: \(error)
                """, topic: topic, offset: segment.baseOffset)
        }
    }
}
