import TelexProtocol

/// Key queries: the versions of article keys the log holds (Protocol/STORAGE.md §14).
///
/// Answers cover only offsets below `end`, which callers take as the readable end at the moment of their
/// snapshot, and skip records in damaged ranges. Sealed segments' indexes never change, so they are copied
/// under the lock (copy-on-write: no work) and searched outside it; the active segment's is searched under it.
extension TopicLog {
    /// Each key's newest version below `end` (none when `indexKeys` is off).
    public func latestVersions(below end: Int64) -> [String: KeyVersion] {
        guard configuration.indexKeys else { return [:] }
        let (sealed, fromActive) = state.withLock { state -> ([(SegmentKeys, [DamagedRange])], [String: KeyVersion]) in
            let active = state.segments.last!
            var latest: [String: KeyVersion] = [:]
            if active.baseOffset < end { active.keys.collectLatest(below: end, damaged: active.damaged, into: &latest) }
            let sealed = state.segments.dropLast().filter { $0.baseOffset < end }.map { ($0.keys, $0.damaged) }
            return (sealed, latest)
        }
        var latest = fromActive
        for (keys, damaged) in sealed.reversed() { keys.collectLatest(below: end, damaged: damaged, into: &latest) }
        return latest
    }

    /// Every version of `key` below `end`, oldest first (none when `indexKeys` is off).
    public func versions(of key: String, below end: Int64) -> [KeyVersion] {
        guard configuration.indexKeys else { return [] }
        let found = state.withLock { state -> [([KeyVersion], [DamagedRange])] in
            state.segments.filter { $0.baseOffset < end }.compactMap { segment in
                segment.keys.versions[key].map { ($0, segment.damaged) }
            }
        }
        return found.flatMap { versions, damaged in
            versions.filter { $0.offset < end && !SegmentKeys.isDamaged($0.offset, damaged) }
        }
    }

    /// Per segment, oldest first: its base offset and the versions and tombstones its key index holds.
    public var keyIndexCounts: [(baseOffset: Int64, records: Int, tombstones: Int)] {
        state.withLock { state in state.segments.map { ($0.baseOffset, $0.keys.records, $0.keys.tombstones) } }
    }
}
