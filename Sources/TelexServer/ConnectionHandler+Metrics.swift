import NIOCore
import TelexProtocol
import TelexStorage

/// What a connection records in `store.metrics`: publishes, deliveries and credit stalls. On the connection's loop.
extension ConnectionHandler {
    /// Counts an answered PUBLISH: its latency from the append, and, when stored anew, its records, batch and bytes.
    func countPublished(
        _ result: AppendResult, log: TopicLog, outcome: Result<Void, TelexError>, bytes: Int, appended: NIODeadline
    ) {
        store.metrics.publishAckDuration.recordNanoseconds((NIODeadline.now() - appended).nanoseconds)
        guard case .success = outcome, !result.duplicate else { return }
        log.metrics.publishedEvents.increment(by: Int64(result.recordCount))
        log.metrics.publishedBatches.increment()
        log.metrics.publishedBytes.increment(by: bytes)
    }

    /// Counts a slice read for a subscriber: every record of its batches, as stored.
    func countDelivered(_ slice: LogSlice, log: TopicLog) {
        log.metrics.deliveredEvents.increment(by: slice.nextOffset - slice.firstOffset)
        log.metrics.deliveredBatches.increment(by: slice.batchCount)
        log.metrics.deliveredBytes.increment(by: slice.length)
    }

    /// After a pump that delivered: counts a credit stall if it spent the subscription's credit while one of its
    /// topics has more readable batches.
    func countCreditStall(_ id: UInt32) {
        guard let subscription = subscriptions[id], subscription.machine.credit == 0 else { return }
        let waiting = subscription.logs.contains { topic, log in
            subscription.machine.position(topic).map { $0 < log.readableEndOffset } ?? false
        }
        if waiting { store.metrics.creditStalls.increment() }
    }
}
