import TelexProtocol

/// Legal erasure: every record of one key physically removed from the topic's segments (Protocol/STORAGE.md §15.4).
extension TopicLog {
    /// Removes every record whose key is `key` that was appended before the call: the active segment is rolled
    /// first (when it holds anything) and the log synced, so that the key's records all sit in sealed segments;
    /// then every sealed segment holding one is rewritten without them (offsets kept, as gaps). Returns the
    /// rewrites, oldest first. Records appended during the purge are not removed. Throws on the first segment that
    /// cannot be rewritten (damaged ranges), naming it; segments rewritten before it stay rewritten.
    ///
    /// Blocking: reads every sealed segment, fsyncs. Call it off event loops.
    public func purge(key: String) throws(TelexError) -> [SegmentRewrite] {
        precondition(!key.isEmpty, "purge needs a key")
        // With the key index: nothing to do in a topic without the key (no roll, no fsync), and the active segment
        // rolls only when it holds a version.
        let indexed = configuration.indexKeys ? try versions(of: key, below: endOffset).map(\.offset) : nil
        let damagedAnywhere = state.withLock { state in state.segments.contains { !$0.damaged.isEmpty } }
        if let indexed, indexed.isEmpty, !damagedAnywhere { return [] }
        let rolled = try state.withLock { state throws(TelexError) -> Bool in
            try refuseClosedOrFailed(state)
            let active = state.segments.last!
            guard active.size > 0, indexed.map({ $0.contains { $0 >= active.baseOffset } }) ?? true else { return false }
            _ = try roll(&state)
            return true
        }
        if rolled { scheduleSync() }
        // Seals the rolled segment (and any other unsealed one): only sealed segments are rewritten.
        try sync()
        let end = endOffset
        var bases = sealedSegmentBases(below: end)
        if configuration.indexKeys {
            // Only the segments the key index names, and any with a damaged range (whose records it cannot name).
            let offsets = try versions(of: key, below: end).map(\.offset)
            let damaged = state.withLock { state in Set(state.segments.filter { !$0.damaged.isEmpty }.map(\.baseOffset)) }
            bases = bases.enumerated().filter { index, base in
                let next = index + 1 < bases.count ? bases[index + 1] : end
                return damaged.contains(base) || offsets.contains { $0 >= base && $0 < next }
            }.map(\.element)
        }
        var rewrites: [SegmentRewrite] = []
        for base in bases {
            if let rewrite = try rewriteSegment(at: base, keep: { $0.key != key }) {
                rewrites.append(rewrite)
                continue
            }
            // Nothing rewritten: the segment held no record of the key, or retention took it meanwhile — but not a
            // log that closed or failed under the purge, which must not be reported as done.
            try state.withLock { state throws(TelexError) in try refuseClosedOrFailed(state, during: true) }
        }
        if !rewrites.isEmpty {
            logger.info("purged key", metadata: [
                "segments": "\(rewrites.count)",
                "recordsRemoved": "\(rewrites.reduce(0) { $0 + $1.removedOffsets.count })",
            ])
        }
        return rewrites
    }

    /// Throws if the log is closed (SHUTTING_DOWN) or failed (STORAGE_FAILURE): a purge must never report as done
    /// what it could not do. Caller holds the lock.
    private func refuseClosedOrFailed(_ state: borrowing State, during: Bool = false) throws(TelexError) {
        let when = during ? " (it closed or failed during the purge)" : ""
        if state.closed { throw TelexError(.shuttingDown, "log \(topic) is closed\(when)", topic: topic) }
        if let failure = state.failure {
            throw TelexError(.storageFailure, "log \(topic) is failed\(when): \(failure.message)", topic: topic)
        }
    }
}
