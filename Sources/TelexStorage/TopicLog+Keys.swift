import NIOCore
import TelexProtocol

/// Key queries: the versions of article keys the log holds (Protocol/STORAGE.md §14).
///
/// Answers cover only offsets below `end`, which callers take as the readable end at the moment of their
/// snapshot, and skip records in damaged ranges. Under the lock a query only takes each segment's index by
/// reference (sealed tables are immutable; a growing segment's chunks are shared, so the next append copies at
/// most its partial last chunk); it searches them on the caller's thread, outside the lock.
extension TopicLog {
    /// Each key's newest version below `end` (none when `indexKeys` is off). O(records).
    public func latestVersions(below end: Int64) -> [String: KeyVersion] {
        guard configuration.indexKeys else { return [:] }
        var latest: [String: KeyVersion] = [:]
        for index in keyIndexes(below: end) { index.latest(below: end, into: &latest) }
        return latest
    }

    /// Every version of `key` below `end`, oldest first (none when `indexKeys` is off). A binary search of each
    /// sealed segment's hash order and a scan of the growing ones; a key with a byte outside ASCII is compared
    /// as a String with every entry.
    public func versions(of key: String, below end: Int64) -> [KeyVersion] {
        guard configuration.indexKeys else { return [] }
        let ascii = key.utf8.allSatisfy { $0 < 0x80 }
        var found: [KeyVersion] = []
        for index in keyIndexes(below: end) {
            let start = found.count
            index.versions(of: key, ascii: ascii, below: end, into: &found)
            if !ascii || index.sealed != nil { found[start...].sort { $0.offset < $1.offset } }
        }
        return found
    }

    /// Per segment, oldest first: its base offset and the versions and tombstones its key index holds.
    public var keyIndexCounts: [(baseOffset: Int64, records: Int, tombstones: Int)] {
        state.withLock { state in state.segments.map { ($0.baseOffset, $0.keyRecords, $0.keyTombstones) } }
    }

    /// The indexes of the segments holding offsets below `end`, taken under the lock: O(segments).
    private func keyIndexes(below end: Int64) -> [SegmentKeyIndex] {
        state.withLock { state in state.segments.filter { $0.baseOffset < end }.map(\.keyIndex) }
    }

    /// Indexes the records of the batch just written at `baseOffset` into `active`. Caller holds the lock; a walk
    /// of the batch's key table into the active chunk, allocating nothing per record.
    func indexKeys(
        of batch: ByteBuffer, header: RecordBatchHeader, baseOffset: Int64, appendTime: Int64, in active: Segment
    ) {
        let delta = baseOffset - active.baseOffset
        // Moved out and back (not copied): one access to the segment per batch instead of several per record.
        var chunks = KeyChunks()
        swap(&chunks, &active.keyChunks)
        var (records, tombstones) = (0, 0)
        // Validation checked the table; one that still does not parse leaves the batch readable but unindexed,
        // as recovery would.
        let limits = configuration.batchLimits
        try? RecordBatch.forEachKey(of: batch, header: header, limits: limits) { index, key, tombstone in
            guard !key.isEmpty, key.count <= Int(UInt16.max) else { return }
            chunks.add(key, offsetDelta: UInt32(delta + Int64(index)), appendTime: appendTime, tombstone: tombstone)
            records += 1
            if tombstone { tombstones += 1 }
        }
        swap(&chunks, &active.keyChunks)
        active.keyRecords += records
        active.keyTombstones += tombstones
    }

    /// Swaps `table`, built off the lock, in as the sealed table of `segment` if it is still in the log: O(1)
    /// under the lock. The replaced chunks are freed after the lock is released.
    func installKeys(_ table: SealedKeys, in segment: Segment) {
        let (records, tombstones) = (table.entries.count, table.entries.tombstones)
        let replaced = state.withLock { state -> (KeyChunks, SealedKeys?)? in
            guard state.segments.contains(where: { $0 === segment }) else { return nil }
            let old = (segment.keyChunks, segment.sealedKeys)
            segment.sealedKeys = table
            segment.keyChunks = KeyChunks()
            segment.keyRecords = records
            segment.keyTombstones = tombstones
            return old
        }
        withExtendedLifetime(replaced) {}
    }
}
