#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import Synchronization
import TelexProtocol

/// What one rewrite of a sealed segment did.
public struct SegmentRewrite: Sendable, Equatable {
    public var topic: String
    public var baseOffset: Int64
    /// The offsets removed, ascending.
    public var removedOffsets: [Int64]
    public var recordsKept: Int64
    /// Bytes of the `.log` before and after.
    public var bytesBefore: Int
    public var bytesAfter: Int

    public var bytesReclaimed: Int { bytesBefore - bytesAfter }
}

/// The crash-safe rewrite of a sealed segment, shared by compaction and purge (Protocol/STORAGE.md §15).
extension Segment {
    /// After a scan or tail walk of a compacted segment: its end is its marker's end offset (the offsets after its
    /// last batch were removed, not lost) and its newest append time is the original segment's (for retention).
    func applyCompactionEnd() {
        guard let compaction else { return }
        if compaction.valid { nextOffset = max(nextOffset, compaction.endOffset) }
        if let last = compaction.lastAppendTime { lastAppendTime = max(lastAppendTime ?? last, last) }
    }
}

extension TopicLog {
    static let cleaningSuffix = ".log.cleaning"
    /// Held for the whole of each rewrite: two rewrites of one segment (a compaction round and a purge) would write
    /// the same `.log.cleaning`. One rewrite at a time in the process is enough (they are background work).
    static let rewriteLock = Mutex(())

    /// Deletes what an interrupted rewrite left: `*.log.cleaning` (never renamed, so the old `.log` stands) and a
    /// marker's temporary file. Called as the log opens, before the segments are listed.
    static func removeRewriteLeftovers(directory: String) throws(TelexError) {
        var removed = false
        for name in try FileIO.listDirectory(directory)
        where name.hasSuffix(cleaningSuffix) || name.hasSuffix(CompactionMarker.suffix + ".tmp") {
            try FileIO.remove(directory + "/" + name)
            removed = true
        }
        if removed { try FileIO.syncDirectory(directory) }
    }

    /// The sealed segments (not the active one, not one still waiting for its sealing fsyncs) whose offsets are all
    /// below `end`, oldest first, by base offset.
    func sealedSegmentBases(below end: Int64) -> [Int64] {
        state.withLock { state in
            state.segments.dropLast().filter { segment in
                !state.unsealed.contains { $0 === segment } && segment.nextOffset <= end
            }.map(\.baseOffset)
        }
    }

    /// Rewrites the sealed segment at `baseOffset` keeping the records `keep` accepts, at their offsets; nil if
    /// `keep` accepts every record (nothing is written) or the segment is no longer a sealed segment of the log.
    ///
    /// Every batch is read and CRC-checked; a segment with damaged ranges, a batch that fails its checks, or a
    /// gap before the next segment is not rewritten (`STORAGE_FAILURE` naming it). The swap: the new `.log` is
    /// written as `.log.cleaning` and fdatasynced; the `.compacted` marker is written (atomically); the segment's
    /// index files are removed and the directory fsynced; `.log.cleaning` is renamed over `.log` and the directory
    /// fsynced; a new `Segment` is scanned from the new file, its indexes written and fsynced, and it replaces the
    /// old one under the lock. A crash anywhere leaves the old or the new `.log`, both readable with every kept
    /// record at its offset. Readers holding a slice of the old file go on reading it. Blocking: call it off event
    /// loops.
    func rewriteSegment(
        at baseOffset: Int64, keep: (RecordVersion) -> Bool
    ) throws(TelexError) -> SegmentRewrite? {
        try Self.rewriteLock.withLock { _ throws(TelexError) in try rewriteSegmentAlone(at: baseOffset, keep: keep) }
    }

    private func rewriteSegmentAlone(
        at baseOffset: Int64, keep: (RecordVersion) -> Bool
    ) throws(TelexError) -> SegmentRewrite? {
        guard let source = try rewriteSource(at: baseOffset) else { return nil }
        let segment = source.segment
        var rewriter = SegmentRewriter(limits: configuration.batchLimits)
        let (plan, removed, kept) = try Self.planRewrite(of: source, topic: topic, rewriter: rewriter, keep: keep)
        guard !removed.isEmpty else { return nil }
        let cleaning = String(segment.logPath.dropLast(4)) + Self.cleaningSuffix
        let bytesAfter = try writeCleaning(cleaning, from: source, plan: plan, rewriter: &rewriter)
        let previous = segment.compaction.flatMap { $0.valid ? $0 : nil }
        let marker = CompactionMarker(
            endOffset: source.following,
            lastAppendTime: [source.lastAppendTime, previous?.lastAppendTime].compactMap { $0 }.max(),
            recordsKept: kept, recordsRemoved: Int64(removed.count) + (previous?.recordsRemoved ?? 0),
            rewrites: (previous?.rewrites ?? 0) + 1)
        guard try swap(segment, cleaning: cleaning, marker: marker, lease: source.lease)
        else { return nil }
        return SegmentRewrite(topic: topic, baseOffset: baseOffset, removedOffsets: removed, recordsKept: kept,
                              bytesBefore: source.size, bytesAfter: bytesAfter)
    }

    /// A sealed segment to rewrite, as taken under the lock.
    struct RewriteSource {
        var segment: Segment
        /// A lease on the old `.log`, held until the swap is done, so that the old segment object never opens the
        /// new file at its path.
        var lease: FileLease
        var size: Int
        var following: Int64
        var lastAppendTime: Int64?
    }

    private func rewriteSource(at baseOffset: Int64) throws(TelexError) -> RewriteSource? {
        let source = try state.withLock { state throws(TelexError) -> RewriteSource? in
            guard !state.closed, state.failure == nil,
                let index = state.segments.firstIndex(where: { $0.baseOffset == baseOffset }),
                index < state.segments.count - 1
            else { return nil }
            let segment = state.segments[index]
            guard !state.unsealed.contains(where: { $0 === segment }) else { return nil }
            guard segment.damaged.isEmpty else {
                throw TelexError(.storageFailure,
                    "\(segment.logPath) of \(topic) has damaged ranges: not rewritten", topic: topic,
                    offset: segment.damaged[0].firstOffset)
            }
            let following = state.segments[index + 1].baseOffset
            guard segment.nextOffset == following else {
                throw TelexError(.storageFailure,
                    "\(segment.logPath) of \(topic) ends at offset \(segment.nextOffset) but the next segment starts at \(following) (lost offsets): not rewritten",
                    topic: topic, offset: segment.nextOffset)
            }
            return RewriteSource(segment: segment, lease: try segment.logFile.lease(), size: segment.size,
                                 following: following, lastAppendTime: segment.lastAppendTime)
        }
        return source
    }

    /// The first pass of a rewrite: which records of each batch `keep` accepts, decided without writing (so that a
    /// segment with nothing to remove costs no write), the offsets removed and the count of records kept.
    static func planRewrite(
        of source: RewriteSource, topic: String, rewriter: SegmentRewriter, keep: (RecordVersion) -> Bool
    ) throws(TelexError) -> (plan: [[Bool]], removed: [Int64], kept: Int64) {
        var plan: [[Bool]] = []
        var removed: [Int64] = []
        var kept: Int64 = 0
        try forEachBatch(of: source, topic: topic) { batch, header throws(TelexError) in
            let versions = try rewriter.versions(
                of: batch, context: "\(source.segment.logPath) offset \(header.baseOffset)")
            let flags = versions.map(keep)
            for (version, flag) in zip(versions, flags) {
                if flag { kept += 1 } else { removed.append(version.offset) }
            }
            plan.append(flags)
        }
        return (plan, removed, kept)
    }

    /// Calls `body` with every batch of the source segment, whole, in file order; throws if the batches do not
    /// chain (offsets ascending, each header plausible) to exactly the end of the file.
    static func forEachBatch(
        of source: RewriteSource, topic: String, _ body: (ByteBuffer, RecordBatchHeader) throws(TelexError) -> Void
    ) throws(TelexError) {
        var headers = HeaderWindow(source.lease, limit: source.size, allowsGaps: true)
        var position = 0
        var expected = source.segment.baseOffset
        while let header = try headers.chainedHeader(skippingDamageAt: &position, expected: &expected) {
            var batch = ByteBuffer()
            let count = try source.lease.withDescriptor { fd throws(TelexError) in
                try FileIO.read(fd, at: position, length: header.totalSize, into: &batch, path: source.segment.logPath)
            }
            guard count == header.totalSize else { break }
            try body(batch, header)
            position += header.totalSize
        }
        guard position == source.size else {
            throw TelexError(.storageFailure,
                "\(source.segment.logPath) of \(topic): no batch continuing the offset chain at byte \(position) of \(source.size): not rewritten",
                topic: topic, offset: expected)
        }
    }

    /// Writes the kept records of the source to `path` and fdatasyncs it; returns its size. Removes it on failure.
    private func writeCleaning(
        _ path: String, from source: RewriteSource, plan: [[Bool]], rewriter: inout SegmentRewriter
    ) throws(TelexError) -> Int {
        // Created only while the log is open: `deleteLog` lists the directory once `close()` has set
        // `directoryClosed`, so it finds (and removes) a file made before that, and none is made after.
        let opened = try directoryClosed.withLock { closed throws(TelexError) -> CInt? in
            closed ? nil : try FileIO.open(path, flags: O_WRONLY | O_CREAT | O_TRUNC)
        }
        guard let fd = opened else {
            throw TelexError(.shuttingDown, "log \(topic) closed before \(source.segment.logPath) was rewritten",
                             topic: topic)
        }
        return try Self.writeRewritten(fd, path: path, from: source, topic: topic, plan: plan, rewriter: &rewriter)
    }

    /// Writes the kept records of the source (`plan`, from `planRewrite`) through `fd`, which it closes, to `path`
    /// and fdatasyncs it; returns its size. Removes `path` on failure.
    static func writeRewritten(
        _ fd: CInt, path: String, from source: RewriteSource, topic: String, plan: [[Bool]],
        rewriter: inout SegmentRewriter
    ) throws(TelexError) -> Int {
        var written = 0
        do throws(TelexError) {
            var output = ByteBuffer()
            var index = 0
            try forEachBatch(of: source, topic: topic) { batch, header throws(TelexError) in
                try rewriter.rewrite(batch, keep: plan[index], into: &output,
                                     context: "\(source.segment.logPath) offset \(header.baseOffset)")
                index += 1
                if output.readableBytes >= 1 << 20 {
                    try FileIO.write(fd, parts: [output], at: written, path: path)
                    written += output.readableBytes
                    output.clear()
                }
            }
            try FileIO.write(fd, parts: [output], at: written, path: path)
            written += output.readableBytes
            try FileIO.sync(fd, path: path)
        } catch {
            FileIO.close(fd, path: path)
            try? FileIO.remove(path)
            throw error
        }
        FileIO.close(fd, path: path)
        return written
    }

    /// Puts the rewritten file in place of `segment`'s `.log` (see `rewriteSegment`); false if the segment left
    /// the log (retention) or the log closed before the rename, when nothing is changed.
    private func swap(
        _ segment: Segment, cleaning: String, marker: CompactionMarker, lease: FileLease
    ) throws(TelexError) -> Bool {
        // Retention and close take `directoryClosed` before unlinking a segment's files: holding it, the segment
        // cannot be unlinked between the check and the rename (which would bring a deleted segment back).
        let replacement = try directoryClosed.withLock { closed throws(TelexError) -> Segment? in
            guard !closed, state.withLock({ $0.segments.contains { $0 === segment } }) else {
                try? FileIO.remove(cleaning)
                return nil
            }
            do throws(TelexError) {
                try FileIO.replaceAtomically(
                    CompactionMarker.path(directory: directory, baseOffset: segment.baseOffset), in: directory,
                    with: marker.encoded())
                try FileIO.remove(segment.indexFile.path)
                try FileIO.remove(segment.timeIndexFile.path)
                try FileIO.remove(segment.keysPath)
                try FileIO.syncDirectory(directory)
                try FileIO.rename(cleaning, segment.logPath)
            } catch {
                // The old `.log` stands; a marker on it is harmless and the indexes are rebuilt by the next open.
                try? FileIO.remove(cleaning)
                throw error
            }
            do throws(TelexError) {
                try FileIO.syncDirectory(directory)
                let replacement = try Segment(directory: directory, baseOffset: segment.baseOffset, files: files)
                let scan = try replacement.recover(indexInterval: configuration.indexIntervalBytes,
                                                   limits: configuration.batchLimits, following: marker.endOffset,
                                                   indexKeys: configuration.indexKeys)
                guard scan.damaged.isEmpty, scan.tornReason == nil else {
                    throw TelexError(.storageFailure,
                        "\(segment.logPath) of \(topic) does not read back after its rewrite (\(scan.tornReason ?? "damaged ranges"))",
                        topic: topic)
                }
                try replacement.rewriteIndexes()
                try replacement.sync()
                if configuration.indexKeys {
                    // The new segment's own key index, from its scan: the removed records are in no segment's index
                    // any more, so history and latest replay no longer name them.
                    let keys = replacement.sealKeysAfterScan()
                    replacement.keyRecords = keys.entries.count
                    replacement.keyTombstones = keys.entries.tombstones
                    do throws(TelexError) {
                        try replacement.writeKeys(KeyTableFile(
                            baseOffset: replacement.baseOffset, nextOffset: replacement.nextOffset,
                            logSize: Int64(replacement.size), keys: keys))
                    } catch {
                        // Derived data (§14.2): never fails the log; the next open rebuilds it.
                        logger.warning("could not write the key index; the next open rebuilds it",
                                       metadata: ["path": "\(replacement.keysPath)", "error": "\(error)"])
                    }
                }
                try FileIO.syncDirectory(directory)
                // Retention may have taken the segment out of the log meanwhile; it unlinks the files once this
                // closure releases `directoryClosed`.
                return state.withLock { state -> Segment? in
                    guard let index = state.segments.firstIndex(where: { $0 === segment }) else { return nil }
                    state.segments[index] = replacement
                    return replacement
                }
            } catch {
                // The new file is in place but the old segment object describes the old one: stop serving until a
                // restart rebuilds the segment from its (consistent) files.
                let failure = TelexError(.storageFailure,
                    "log \(topic) failed while replacing \(segment.logPath) by its rewrite: \(error.message); restart the broker",
                    topic: topic)
                state.withLock { $0.failure = $0.failure ?? failure }
                throw failure
            }
        }
        // Only now may the old segment object let its descriptor go (see `RewriteSource.lease`).
        withExtendedLifetime(lease) {}
        segment.closeFiles()
        return replacement != nil
    }
}
