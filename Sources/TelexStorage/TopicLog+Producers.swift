import Logging
import TelexProtocol

/// Producer memory across restarts: written to `producers.snapshot` at each roll and on close, and rebuilt on
/// open from the snapshot plus the batch headers after it (Protocol/STORAGE.md §8).
extension TopicLog {
    /// Rebuilds producer memory while opening: loads the snapshot, then reads the batch headers of the segments
    /// after its offset. A snapshot that is missing, damaged or newer than the log (its tail was cut; then it is
    /// deleted) is ignored with a warning, and every segment is read instead.
    static func restoreProducerState(_ state: inout State, directory: String, logger: Logger) throws(TelexError) {
        var from = state.segments.first!.baseOffset
        do {
            if let snapshot = try ProducerSnapshot.load(directory: directory) {
                if snapshot.offset <= state.nextOffset {
                    state.producers = snapshot.producers
                    from = snapshot.offset
                } else {
                    logger.warning(
                        "ignoring producer snapshot newer than the log; reading every segment instead",
                        metadata: [
                            "snapshotOffset": "\(snapshot.offset)", "logEndOffset": "\(state.nextOffset)",
                        ])
                    // Once the log grows past its offset again it would look valid while describing cut batches.
                    try FileIO.remove(directory + "/" + ProducerSnapshot.fileName)
                    try FileIO.syncDirectory(directory)
                }
            }
        } catch {
            logger.warning(
                "ignoring unreadable producer snapshot; reading every segment instead",
                metadata: [
                    "error": "\(error.message)"
                ])
        }
        for segment in state.segments where segment.nextOffset > from {
            var headers = HeaderWindow(try segment.logFile.lease(), limit: segment.size, damaged: segment.damaged,
                                       allowsGaps: segment.compaction != nil)
            var position = 0
            var expected = segment.baseOffset
            // Stops at a header that does not continue the offset chain (bytes of a sealed segment not CRC-checked
            // yet may be damaged): a made-up producer must never be remembered.
            while let header = try headers.chainedHeader(skippingDamageAt: &position, expected: &expected) {
                if header.producerID != 0, header.baseOffset >= from {
                    state.rememberProducer(
                        header.producerID, sequence: header.producerSequence,
                        baseOffset: header.baseOffset, recordCount: header.recordCount,
                        appendTime: header.appendTime)
                }
                position += header.totalSize
            }
        }
    }

    /// Queues a snapshot of the producer memory as of the log's next offset on the sync queue (a roll calls it
    /// under the lock; copying the memory is copy-on-write, the encoding and writing happen on the queue).
    func queueProducerSnapshot(_ state: inout State) {
        guard !state.producers.isEmpty else { return }
        // Written by the sync round that seals the segment rolled away from, not now: a snapshot must never
        // describe batches a crash could still take away, or a retry of one would be answered as a duplicate with
        // an offset whose batch is gone.
        state.pendingProducerSnapshot = ProducerSnapshot(offset: state.nextOffset, producers: state.producers)
    }

    /// Writes the snapshot queued by a roll once every segment below its offset is sealed (`sealed` is the base
    /// of the segment that was active when the sealing round started). Blocking: on the sync queue.
    func writeProducerSnapshot(sealedBelow sealed: Int64) {
        let snapshot = state.withLock { state -> ProducerSnapshot? in
            guard let pending = state.pendingProducerSnapshot, pending.offset <= sealed else { return nil }
            state.pendingProducerSnapshot = nil
            return pending
        }
        if let snapshot { writeProducerSnapshot(snapshot) }
    }

    /// Writes a snapshot as of now (none if no producer), after every queued one. Blocking: for `close()`.
    func writeProducerSnapshotNow() {
        let snapshot = state.withLock { state in
            state.producers.isEmpty ? nil : ProducerSnapshot(offset: state.nextOffset, producers: state.producers)
        }
        syncQueue.sync { if let snapshot { writeProducerSnapshot(snapshot) } }
    }

    /// A failed write only costs a longer scan on the next open (the old snapshot, if any, stays whole).
    private func writeProducerSnapshot(_ snapshot: ProducerSnapshot) {
        do {
            try snapshot.write(directory: directory)
        } catch {
            logger.warning("could not write the producer snapshot", metadata: ["error": "\(error.message)"])
        }
    }
}
