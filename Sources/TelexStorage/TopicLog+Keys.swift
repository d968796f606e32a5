import TelexProtocol

/// Key queries: the versions of article keys the log holds (Protocol/STORAGE.md §14).
///
/// Answers cover only offsets below `end`, which callers take as the readable end at the moment of their
/// snapshot, and skip records in damaged ranges. The log's key map is copied under the lock (copy-on-write: no
/// work until the next append, which then copies the map's table) and searched outside it.
extension TopicLog {
    /// Each key's newest version below `end` (none when `indexKeys` is off).
    public func latestVersions(below end: Int64) -> [String: KeyVersion] {
        guard configuration.indexKeys else { return [:] }
        let (keys, damaged) = state.withLock { state in (state.keys, state.segments.flatMap(\.damaged)) }
        return keys.latest(below: end, damaged: damaged)
    }

    /// Every version of `key` below `end`, oldest first (none when `indexKeys` is off).
    public func versions(of key: String, below end: Int64) -> [KeyVersion] {
        guard configuration.indexKeys else { return [] }
        let (found, damaged) = state.withLock { state in
            (state.keys.versions[key] ?? [], state.segments.flatMap(\.damaged))
        }
        return found.filter { $0.offset < end && !SegmentKeys.isDamaged($0.offset, damaged) }
    }

    /// Per segment, oldest first: its base offset and the versions and tombstones its key index holds.
    public var keyIndexCounts: [(baseOffset: Int64, records: Int, tombstones: Int)] {
        state.withLock { state in state.segments.map { ($0.baseOffset, $0.keyRecords, $0.keyTombstones) } }
    }
}
