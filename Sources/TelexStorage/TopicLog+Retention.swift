#if canImport(Glibc)
import Glibc
#endif
import TelexProtocol

/// Retention: idle segments rolled so they can expire, and old segments deleted (Protocol/STORAGE.md §7).
extension TopicLog {
    /// Rolls a non-empty active segment that no append rolled although its first batch is `segmentAgeMilliseconds`
    /// old or its newest is past the retention age, so that retention can delete it (an idle topic's data would
    /// otherwise stay forever). Returns whether it rolled. Blocking (opens the new segment's files).
    @discardableResult
    func rollIfIdle(now: Int64) throws(TelexError) -> Bool {
        let rolled = try state.withLock { state throws(TelexError) -> Bool in
            let active = state.segments.last!
            guard !state.closed, state.failure == nil, active.size > 0 else { return false }
            let aged = now - (active.firstAppendTime ?? now) >= configuration.segmentAgeMilliseconds
            let expired = configuration.retentionMilliseconds.map { (active.lastAppendTime ?? now) < now - $0 } ?? false
            guard aged || expired else { return false }
            _ = try roll(&state)
            return true
        }
        if rolled { scheduleSync() }
        return rolled
    }

    /// Deletes whole old segments past the retention age or size; the active segment is never deleted, but an
    /// idle one old enough is rolled first (`rollIfIdle`).
    ///
    /// With an archive, a segment is deleted only if the archive lists it with the same base offset, bytes and
    /// rewrites (the oldest one not listed stops the pass, whatever the sizes), and `localRetentionBytes` bounds
    /// the local segments' size too: what is deleted stays readable from the archive (§7).
    ///
    /// Segments leave the log under its lock; their files are unlinked and the directory fsynced after it is
    /// released. Readers holding a slice of a deleted segment can still read it. Blocking: call it off event loops.
    @discardableResult
    public func applyRetention(now: Int64? = nil) throws(TelexError) -> Int {
        let now = now ?? FileIO.nowMilliseconds()
        try rollIfIdle(now: now)
        // Asked before taking the lock (the tier is called under no lock of the log's).
        let archived = archive.map { archive in
            Set(archive.archivedSegments(of: topic).map { ArchivedIdentity($0.baseOffset, $0.bytes, $0.rewrites) })
        }
        let removed = state.withLock { state -> [(segment: Segment, reason: String)] in
            var total = state.segments.reduce(0) { $0 + $1.size }
            var removed: [(Segment, String)] = []
            while state.segments.count > 1 {
                let oldest = state.segments[0]
                let tooOld = configuration.retentionMilliseconds.map { (oldest.lastAppendTime ?? now) < now - $0 } ?? false
                let tooBig = configuration.retentionBytes.map { total > $0 } ?? false
                let tooBigLocally = archived != nil && configuration.localRetentionBytes.map { total > $0 } ?? false
                guard tooOld || tooBig || tooBigLocally else { break }
                // Not archived as it is, or with known damage (served around locally; the archived copy, which has
                // the same damage, could not be served at all): kept.
                if let archived, !archived.contains(
                    ArchivedIdentity(oldest.baseOffset, oldest.size, oldest.compaction?.rewrites ?? 0))
                    || !oldest.damaged.isEmpty
                {
                    break
                }
                state.segments.removeFirst()
                total -= oldest.size
                removed.append((oldest, tooOld ? "age" : tooBig ? "size" : "local size"))
            }
            return removed
        }
        guard !removed.isEmpty else { return 0 }
        let logStartOffset = startOffset
        // Not once the log is closed: its directory may since hold a new topic of the same name, whose files
        // have these names (deleteLog removes the old files itself).
        try directoryClosed.withLock { closed throws(TelexError) in
            guard !closed else { return }
            for (segment, reason) in removed {
                try segment.deleteFiles()
                logger.info("retention deleted segment", metadata: [
                    "segment": "\(segment.logPath)", "reason": "\(reason)", "archived": "\(archive != nil)",
                    "logStartOffset": "\(logStartOffset)",
                ])
            }
            try FileIO.syncDirectory(directory)
        }
        metrics.retentionDeletedSegments.increment(by: removed.count)
        return removed.count
    }
}

/// What local retention compares to trust the archive with a segment: the same file as uploaded.
private struct ArchivedIdentity: Hashable {
    var baseOffset: Int64
    var bytes: Int
    var rewrites: UInt32

    init(_ baseOffset: Int64, _ bytes: Int, _ rewrites: UInt32) {
        self.baseOffset = baseOffset
        self.bytes = bytes
        self.rewrites = rewrites
    }
}
