import Logging
import Synchronization
import TelexProtocol
import TelexServer
import TelexStorage

/// A live tail of one topic for one user (`ConsoleDataSource.tail`). A `TopicWatch` wakes a waiting `next`, which
/// reads the log from the tail's position (`StoredEvents`); nothing is queued between reads, so a tail holds at
/// most one answer's events. Calls to `next` must not overlap.
final class BrokerConsoleTail: ConsoleTail {
    private let data: BrokerConsoleData
    private let log: TopicLog
    private let user: ConsoleUser
    private let signal: TailSignal
    private let watch: TopicWatch

    init(data: BrokerConsoleData, log: TopicLog, user: ConsoleUser, position: Int64) {
        self.data = data
        self.log = log
        self.user = user
        let signal = TailSignal(position: position)
        self.signal = signal
        watch = data.server.watch(topic: log.topic, onReadable: { signal.notify() },
                                  onDeleted: { signal.notify(deleted: true) })
    }

    deinit { watch.cancel() }

    func next(maxEvents: Int, timeout: Duration) async throws(TelexError) -> [EventJSON] {
        let deadline = ContinuousClock.now + timeout
        let limit = max(1, min(maxEvents, data.configuration.maxTailMessageEvents))
        while true {
            guard let (position, deleted) = signal.beginRead() else { return [] }
            do {
                try check(deleted: deleted)
            } catch {
                data.logger.debug("console tail ended", metadata: [
                    "topic": "\(log.topic)", "principal": "\(user.identity.name)", "reason": "\(error.message)",
                ])
                throw error
            }
            let log = self.log
            let end = log.readableEndOffset
            if position < end {
                let (records, next) = try await StoredEvents.records(
                    of: log, from: position, end: end, limit: limit, maxBytes: data.configuration.maxTailMessageBytes)
                signal.advance(from: position, to: next)
                if !records.isEmpty { return records.map(\.eventJSON) }
                // Offsets compaction removed: read on at once rather than wait for a notification.
                if next > position && next < end { continue }
            }
            guard ContinuousClock.now < deadline, await signal.wait(until: deadline) else { return [] }
        }
    }

    func close() {
        signal.close()
        watch.cancel()
    }

    /// Ends the tail when the topic was deleted (or deleted and created again), the broker stopped, or the user lost
    /// the right to read it.
    private func check(deleted: Bool) throws(TelexError) {
        let topic = log.topic
        try data.authorizeRead(topic, for: user)
        guard !deleted, try data.store().log(topic) === log else {
            throw TelexError(.topicNotFound, "topic '\(topic)' was deleted", topic: topic)
        }
    }
}

/// The state a tail's watch and its reader share: its position, and whether the topic changed since the last read.
final class TailSignal: Sendable {
    private struct State {
        var position: Int64
        /// The topic gained batches (or was deleted) since the last read began.
        var notified = false
        var deleted = false
        var closed = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state: Mutex<State>

    init(position: Int64) {
        state = Mutex(State(position: position))
    }

    /// Called by the watch, from any thread.
    func notify(deleted: Bool = false) {
        let waiter = state.withLock { state in
            state.notified = true
            if deleted { state.deleted = true }
            return state.waiter.take()
        }
        waiter?.resume()
    }

    func close() {
        let waiter = state.withLock { state in
            state.closed = true
            return state.waiter.take()
        }
        waiter?.resume()
    }

    /// The position to read from and whether the topic was deleted, forgetting earlier notifications (the read sees
    /// what they announced); nil once closed.
    func beginRead() -> (position: Int64, deleted: Bool)? {
        state.withLock { state in
            guard !state.closed else { return nil }
            state.notified = false
            return (state.position, state.deleted)
        }
    }

    func advance(from position: Int64, to next: Int64) {
        state.withLock { state in
            if state.position == position { state.position = next }
        }
    }

    /// Waits for a notification since the last `beginRead`, or `close`, until `deadline`; false when the deadline
    /// came first.
    func wait(until deadline: ContinuousClock.Instant) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await self.waitForNotification()
                return true
            }
            group.addTask {
                try? await Task.sleep(until: deadline)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    private func waitForNotification() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    // Under the lock: a cancellation after this check finds the waiter installed and resumes it.
                    if state.notified || state.closed || Task.isCancelled { return true }
                    state.waiter?.resume()
                    state.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiter.take() }?.resume()
        }
    }
}
