import NIOCore
import TelexProtocol

/// A segment's key index as a query takes it under the log's lock: the summary of its sealed table (the table is
/// loaded outside the lock, `TopicLog.keyIndex(_:)`), or the chunks of one still growing; and the segment's state
/// the table must match.
struct SegmentKeySnapshot: Sendable {
    var segment: Segment
    var baseOffset: Int64
    var nextOffset: Int64
    var size: Int
    var summary: SealedKeySummary?
    var growing: KeyChunks
    var damaged: [DamagedRange]
}

/// Key queries: the versions of article keys the log holds (Protocol/STORAGE.md §14).
///
/// Answers cover only offsets below `end`, which callers take as the readable end at the moment of their
/// snapshot, and skip records in damaged ranges. Under the lock a query only takes each segment's index by
/// reference (a sealed segment's summary; a growing segment's chunks are shared, so the next append copies at
/// most its partial last chunk); it loads sealed tables (`.keys`, through `keyTables`) and searches on the
/// caller's thread, outside the lock: blocking file reads, never on an event loop.
extension TopicLog {
    /// Each key's newest version below `end` (none when `indexKeys` is off). O(records); loads every sealed
    /// segment's table in turn, so only the cached ones and one more are in memory at a time. Throws when a
    /// segment's table can be neither loaded nor rebuilt: an answer without it would be wrong, not smaller.
    public func latestVersions(below end: Int64) throws(TelexError) -> [String: KeyVersion] {
        guard configuration.indexKeys else { return [:] }
        var latest: [String: KeyVersion] = [:]
        for snapshot in keySnapshots(below: end) {
            try keyIndex(snapshot)?.latest(below: end, into: &latest)
        }
        return latest
    }

    /// Every version of `key` below `end`, oldest first (none when `indexKeys` is off). Of the sealed segments,
    /// only those whose summary may hold the key are loaded and binary-searched; the growing ones are scanned. A
    /// key with a byte outside ASCII is compared as a String with every entry of every segment. Throws when a
    /// segment that may hold the key has a table that can be neither loaded nor rebuilt (purge must not miss it).
    public func versions(of key: String, below end: Int64) throws(TelexError) -> [KeyVersion] {
        guard configuration.indexKeys else { return [] }
        let ascii = key.utf8.allSatisfy { $0 < 0x80 }
        var utf8 = key
        let hash = utf8.withUTF8 { SealedKeys.hash(UnsafeRawBufferPointer($0)) }
        var found: [KeyVersion] = []
        for snapshot in keySnapshots(below: end) {
            if ascii, let summary = snapshot.summary, !summary.mayContain(hash) { continue }
            guard let index = try keyIndex(snapshot) else { continue }
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

    /// Bytes of sealed key tables held in memory for queries (at most `LogConfiguration.keyTableCacheBytes`).
    public var keyTableCacheBytes: Int { keyTables.bytes }

    /// Bytes the key index keeps in memory besides the cache, counted from its arrays' capacities (not the
    /// allocator's overhead): the sealed segments' summaries and the growing segments' chunks, with their records.
    var keyIndexResidentBytes: (sealed: Int, sealedRecords: Int, growing: Int, growingRecords: Int) {
        state.withLock { state in
            state.segments.reduce(into: (0, 0, 0, 0)) { total, segment in
                if let summary = segment.keySummary {
                    total.0 += summary.hashes.capacity * MemoryLayout<UInt32>.stride
                    total.1 += summary.records
                } else {
                    let chunks = segment.keyChunks
                    total.2 += chunks.full.reduce(0) { $0 + $1.residentBytes }
                        + chunks.last.entries.capacity * MemoryLayout<KeyEntry>.stride
                        + chunks.last.keyBytes.capacity + chunks.last.appendTimes.capacity * MemoryLayout<Int64>.stride
                    total.3 += chunks.count
                }
            }
        }
    }

    /// The indexes of the segments holding offsets below `end`, taken under the lock: O(segments).
    func keySnapshots(below end: Int64) -> [SegmentKeySnapshot] {
        state.withLock { state in state.segments.filter { $0.baseOffset < end }.map(\.keySnapshot) }
    }

    /// The searchable index of `snapshot`: its growing chunks, or its sealed table from the cache, else from its
    /// `.keys` (then cached), else — the file missing, damaged or stale — rebuilt from its `.log`, cached and
    /// written again. Nil when the segment left the log meanwhile (retention) and nothing replaced it; throws when
    /// the segment is still there but its `.log` cannot be read to rebuild the table. Blocking.
    func keyIndex(_ snapshot: SegmentKeySnapshot) throws(TelexError) -> SegmentKeyIndex? {
        guard let summary = snapshot.summary else {
            return SegmentKeyIndex(baseOffset: snapshot.baseOffset, sealed: nil, growing: snapshot.growing,
                                   damaged: snapshot.damaged)
        }
        let index = { (table: SealedKeys) in
            SegmentKeyIndex(baseOffset: snapshot.baseOffset, sealed: table, growing: KeyChunks(),
                            damaged: snapshot.damaged)
        }
        if let table = keyTables.table(summary.id) { return index(table) }
        let segment = snapshot.segment
        switch segment.storedKeys(nextOffset: snapshot.nextOffset, size: snapshot.size) {
        case .success(let table):
            keyTables.insert(table, for: summary.id)
            return index(table)
        case .failure(let error):
            // Compaction or a purge may have rewritten the segment since the snapshot (its `.keys` is then the
            // new segment's, or not yet written): answer from the segment now in its place.
            let now = state.withLock { state in
                state.segments.first { $0.baseOffset == snapshot.baseOffset }.map { ($0 === segment, $0.keySnapshot) }
            }
            guard let (same, current) = now else { return nil }
            if !same { return try keyIndex(current) }
            logger.warning("rebuilding key index", metadata: [
                "segment": "\(segment.logPath)", "reason": "\(error.message)",
            ])
            do throws(TelexError) {
                let table = try segment.scanKeys(nextOffset: snapshot.nextOffset, size: snapshot.size,
                                                 limits: configuration.batchLimits)
                keyTables.insert(table, for: summary.id)
                rewriteKeys(table, of: segment, nextOffset: snapshot.nextOffset, size: snapshot.size)
                return index(table)
            } catch {
                logger.error("could not rebuild the key index; key queries of this topic fail until it can be read",
                             metadata: ["segment": "\(segment.logPath)", "error": "\(error)"])
                throw TelexError(.storageFailure,
                    "the key index of \(segment.logPath) can be neither loaded nor rebuilt: \(error.message)", topic: topic)
            }
        }
    }

    /// Writes a rebuilt `.keys` of `segment` if it is still in the log (under `directoryClosed`, as a sealing
    /// round does, so retention cannot have unlinked the segment). A failure is logged: the next load rebuilds it.
    private func rewriteKeys(_ table: SealedKeys, of segment: Segment, nextOffset: Int64, size: Int) {
        directoryClosed.withLock { closed in
            guard !closed, state.withLock({ $0.segments.contains { $0 === segment } }) else { return }
            do throws(TelexError) {
                try segment.writeKeys(KeyTableFile(baseOffset: segment.baseOffset, nextOffset: nextOffset,
                                                   logSize: Int64(size), keys: table))
            } catch {
                logger.warning("could not write the key index; the next load rebuilds it",
                               metadata: ["path": "\(segment.keysPath)", "error": "\(error)"])
            }
        }
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

    /// Swaps the summary of `table`, built off the lock, in as the sealed index of `segment` if it is still in
    /// the log: O(1) under the lock. The replaced chunks are freed after the lock is released; the table is not
    /// kept (the sealing round writes it to `.keys`, queries load it from there).
    func installKeys(_ table: SealedKeys, in segment: Segment) {
        let summary = SealedKeySummary(table)
        let replaced = state.withLock { state -> KeyChunks? in
            guard state.segments.contains(where: { $0 === segment }) else { return nil }
            let old = segment.keyChunks
            segment.keySummary = summary
            segment.keyChunks = KeyChunks()
            segment.keyRecords = summary.records
            segment.keyTombstones = summary.tombstones
            return old
        }
        withExtendedLifetime(replaced) {}
    }
}
