import Synchronization

/// Slows down peers that fail to authenticate repeatedly: the answer to each failure after the first is delayed,
/// doubling up to a cap. Keyed by peer address (without port); bounded in size. Thread-safe.
public final class LoginBackoff: Sendable {
    /// Delay after the second consecutive failure; doubles with each further one.
    public let baseDelay: Duration
    /// Largest delay.
    public let maxDelay: Duration
    /// A peer's failures are forgotten after this long without one.
    public let forgetAfter: Duration
    /// Most peers remembered; beyond it the stalest entry is dropped.
    public let capacity: Int

    private struct Entry {
        var failures: Int
        var lastFailure: ContinuousClock.Instant
    }

    private struct State {
        var peers: [String: Entry] = [:]
        /// Peers whose claimed attempt is being checked now, and since when (`claim`).
        var checking: [String: ContinuousClock.Instant] = [:]
    }

    private let state = Mutex(State())

    public init(
        baseDelay: Duration = .milliseconds(250), maxDelay: Duration = .seconds(5), forgetAfter: Duration = .seconds(600),
        capacity: Int = 10_000
    ) {
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.forgetAfter = forgetAfter
        self.capacity = capacity
    }

    /// Records a failure by `peer` and returns how long to wait before answering it.
    public func failed(peer: String, now: ContinuousClock.Instant = .now) -> Duration {
        let failures = state.withLock { state -> Int in
            state.checking[peer] = nil
            var entry = state.peers[peer] ?? Entry(failures: 0, lastFailure: now)
            if now - entry.lastFailure > forgetAfter { entry.failures = 0 }
            entry.failures += 1
            entry.lastFailure = now
            if state.peers[peer] == nil, state.peers.count >= capacity {
                state.peers = state.peers.filter { now - $0.value.lastFailure <= forgetAfter }
                if state.peers.count >= capacity,
                    let stalest = state.peers.min(by: { $0.value.lastFailure < $1.value.lastFailure })
                {
                    state.peers[stalest.key] = nil
                }
            }
            state.peers[peer] = entry
            return entry.failures
        }
        return delay(afterFailures: failures)
    }

    private func delay(afterFailures failures: Int) -> Duration {
        guard failures > 1 else { return .zero }
        let doublings = min(failures - 2, 30)
        return min(baseDelay * (1 << doublings), maxDelay)
    }

    /// How much longer `peer` must wait before its next attempt may be checked: what is left of the delay its last
    /// failure earned, nil once that has elapsed (or without failures). Parallel connections share it, so a peer
    /// gets one guess per delay however many it opens (the console refuses at once while it runs).
    public func remainingWait(peer: String, now: ContinuousClock.Instant = .now) -> Duration? {
        state.withLock { remainingWait(peer: peer, now: now, in: $0) }
    }

    private func remainingWait(peer: String, now: ContinuousClock.Instant, in state: State) -> Duration? {
        guard let entry = state.peers[peer], now - entry.lastFailure <= forgetAfter else { return nil }
        let left = entry.lastFailure + delay(afterFailures: entry.failures) - now
        return left > .zero ? left : nil
    }

    /// Claims `peer`'s next attempt, in one step with the check: nil when it may be checked now — it is then marked
    /// in progress until `failed` or `succeeded` — else how long to wait: what is left of its last failure's delay,
    /// or, while another claimed attempt of `peer` is being checked, the delay a failure of that one would earn
    /// (at least `baseDelay`). So parallel requests arriving as a delay ends get one guess between them. A claim
    /// never answered is dropped after `maxDelay`.
    public func claim(peer: String, now: ContinuousClock.Instant = .now) -> Duration? {
        state.withLock { state -> Duration? in
            if let wait = remainingWait(peer: peer, now: now, in: state) { return wait }
            if let since = state.checking[peer], now - since < maxDelay {
                let failures = state.peers[peer].map { now - $0.lastFailure <= forgetAfter ? $0.failures : 0 } ?? 0
                return max(delay(afterFailures: failures + 1), baseDelay)
            }
            state.checking[peer] = now
            return nil
        }
    }

    /// Forgets `peer`'s failures after it authenticated.
    public func succeeded(peer: String) {
        state.withLock { state in
            state.peers[peer] = nil
            state.checking[peer] = nil
        }
    }

    /// How many peers are remembered.
    public var count: Int { state.withLock { $0.peers.count } }
}
