import NIOCore
import TelexProtocol

/// What one compaction round of a topic did.
public struct CompactionReport: Sendable, Equatable {
    /// The segments rewritten, oldest first.
    public var rewrites: [SegmentRewrite] = []
    /// Segments that could not be rewritten (damaged ranges, a batch failing its checks), with why.
    public var skipped: [(baseOffset: Int64, reason: String)] = []

    public var recordsRemoved: Int { rewrites.reduce(0) { $0 + $1.removedOffsets.count } }
    public var bytesReclaimed: Int { rewrites.reduce(0) { $0 + $1.bytesReclaimed } }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.rewrites == rhs.rewrites && lhs.skipped.map(\.baseOffset) == rhs.skipped.map(\.baseOffset)
            && lhs.skipped.map(\.reason) == rhs.skipped.map(\.reason)
    }
}

/// Compaction: sealed segments rewritten keeping each key's newest record (Protocol/STORAGE.md §15.3).
extension TopicLog {
    /// Rewrites sealed segments so that, of the records below the readable end, a record is removed when a newer
    /// record with the same non-empty key exists, and a tombstone (`article.deleted`) when it is its key's newest
    /// and was appended more than `tombstoneRetentionMilliseconds` before `now`. Keyless records stay; offsets stay
    /// (a compacted topic has gaps). At most `maxSegments` segments are rewritten; segments with nothing to
    /// remove are read but not written. Blocking: reads every batch below the readable end. Call it off event loops.
    public func compact(
        now: Int64? = nil, tombstoneRetentionMilliseconds: Int64, maxSegments: Int = .max
    ) throws(TelexError) -> CompactionReport {
        let now = now ?? FileIO.nowMilliseconds()
        let end = readableEndOffset
        // Everything below `end` durable first: under interval or never fsync, a newer version only in the page
        // cache must not decide the removal of an older one that the swap makes durable (a power cut would lose both).
        try sync()
        let tombstonesBefore = now - tombstoneRetentionMilliseconds
        // From the key index (in memory), which also says which segments hold something to remove; with the index
        // off, from the stored batches, and every sealed segment is read.
        let newest: [String: Int64]
        var candidates = sealedSegmentBases(below: end)
        if configuration.indexKeys {
            newest = try latestVersions(below: end).mapValues(\.offset)
            let holding = try segmentsHoldingRemovable(of: candidates, newest: newest, tombstonesBefore: tombstonesBefore)
            candidates = candidates.filter(holding.contains)
        } else {
            newest = try newestVersions(below: end).mapValues(\.offset)
        }
        var report = CompactionReport()
        // Once a segment is skipped (damaged), it may still hold older versions of any key: a tombstone after it
        // must stay, or the version it deletes would come back as its key's newest.
        // Likewise while segments only the archive holds lie below the local log: compaction does not rewrite them,
        // so their versions would come back.
        var tombstonesRemovable = !hasArchivedOnlySegments
        for base in candidates where report.rewrites.count < maxSegments {
            do {
                let rewrite = try rewriteSegment(at: base) { version in
                    guard !version.key.isEmpty, let latest = newest[version.key] else { return true }
                    guard latest == version.offset else { return false }
                    return !(tombstonesRemovable && version.isTombstone && version.appendTime < tombstonesBefore)
                }
                if let rewrite {
                    report.rewrites.append(rewrite)
                    logger.info("compacted segment", metadata: [
                        "baseOffset": "\(base)", "recordsRemoved": "\(rewrite.removedOffsets.count)",
                        "recordsKept": "\(rewrite.recordsKept)", "bytesReclaimed": "\(rewrite.bytesReclaimed)",
                    ])
                }
            } catch {
                // A failed or closed log stops the round; a damaged segment is only skipped.
                if error.code == .shuttingDown || state.withLock({ $0.failure != nil }) { throw error }
                tombstonesRemovable = false
                report.skipped.append((base, error.message))
                logger.warning("compaction skipped segment", metadata: [
                    "baseOffset": "\(base)", "error": "\(error.message)",
                ])
            }
        }
        return report
    }

    /// Of the sealed segments at `bases` (ascending), those the key index says hold a record compaction removes (an
    /// older version, or a newest one that is a tombstone appended before `tombstonesBefore`), and those with a
    /// damaged range (records in damage are not indexed, and the round must see such a segment to skip it).
    func segmentsHoldingRemovable(
        of bases: [Int64], newest: [String: Int64], tombstonesBefore: Int64
    ) throws(TelexError) -> Set<Int64> {
        let candidates = Set(bases)
        let (snapshots, damaged) = state.withLock { state in
            (state.segments.filter { candidates.contains($0.baseOffset) }.map(\.keySnapshot),
             Set(state.segments.filter { !$0.damaged.isEmpty }.map(\.baseOffset)))
        }
        var holding = Set<Int64>()
        // One sealed table loaded at a time (through the key table cache).
        for snapshot in snapshots {
            guard let index = try keyIndex(snapshot) else { continue }
            var removable = false
            index.forEachVersion { key, version in
                guard !removable, let latest = newest[key] else { return }
                removable = version.offset != latest || (version.tombstone && version.appendTime < tombstonesBefore)
            }
            if removable { holding.insert(index.baseOffset) }
        }
        return holding.union(damaged).intersection(candidates)
    }

    /// Each non-empty key's newest record below `end`, read from the stored batches (damaged ranges skipped), for
    /// a log kept without a key index.
    func newestVersions(below end: Int64) throws(TelexError) -> [String: RecordVersion] {
        let rewriter = SegmentRewriter(limits: configuration.batchLimits)
        var newest: [String: RecordVersion] = [:]
        // The local log only: compaction rewrites local segments, and reading the archive here would download it.
        var offset = localStartOffset
        while offset < end, let slice = try read(from: offset, maxBytes: 1 << 20, skipDamaged: true) {
            for batch in try RecordBatch.split(try slice.readBytes(), context: "\(topic) offset \(slice.firstOffset)") {
                for version in try rewriter.versions(of: batch, context: "\(topic) batch")
                where version.offset < end && !version.key.isEmpty {
                    newest[version.key] = version
                }
            }
            offset = slice.nextOffset
        }
        return newest
    }
}
