import Synchronization
import TelexProtocol

/// Mutual exclusion per topic between the archiver's round over a topic and a purge of that topic's archived
/// segments (Protocol/STORAGE.md §16.2): both append the topic's `archive.state` (appends of two writers at once
/// could overwrite each other's line), record catalog entries and delete superseded objects. Held across awaits
/// (object-store calls), so it suspends waiters instead of blocking a thread. Not reentrant. Thread-safe.
public final class ArchiveTopicLock: Sendable {
    private struct State {
        var held: Set<String> = []
        var waiters: [String: [CheckedContinuation<Void, Never>]] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    /// Waits until `topic` is free, then holds it; the caller must `unlock(topic)` exactly once.
    public func lock(_ topic: String) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state in
                guard state.held.insert(topic).inserted else {
                    state.waiters[topic, default: []].append(continuation)
                    return false
                }
                return true
            }
            if now { continuation.resume() }
        }
    }

    /// Hands `topic` to its first waiter, or frees it.
    public func unlock(_ topic: String) {
        let next: CheckedContinuation<Void, Never>? = state.withLock { state in
            guard var waiting = state.waiters[topic], !waiting.isEmpty else {
                state.held.remove(topic)
                return nil
            }
            let first = waiting.removeFirst()
            state.waiters[topic] = waiting.isEmpty ? nil : waiting
            return first
        }
        next?.resume()
    }

    /// Runs `body` holding `topic`.
    public func withLock<T: Sendable>(
        _ topic: String, _ body: () async throws(TelexError) -> T
    ) async throws(TelexError) -> T {
        await lock(topic)
        defer { unlock(topic) }
        return try await body()
    }
}
