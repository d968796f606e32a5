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

    private let peers = Mutex<[String: Entry]>([:])

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
        let failures = peers.withLock { peers -> Int in
            var entry = peers[peer] ?? Entry(failures: 0, lastFailure: now)
            if now - entry.lastFailure > forgetAfter { entry.failures = 0 }
            entry.failures += 1
            entry.lastFailure = now
            if peers[peer] == nil, peers.count >= capacity {
                peers = peers.filter { now - $0.value.lastFailure <= forgetAfter }
                if peers.count >= capacity, let stalest = peers.min(by: { $0.value.lastFailure < $1.value.lastFailure }) {
                    peers[stalest.key] = nil
                }
            }
            peers[peer] = entry
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
        peers.withLock { peers -> Duration? in
            guard let entry = peers[peer], now - entry.lastFailure <= forgetAfter else { return nil }
            let left = entry.lastFailure + delay(afterFailures: entry.failures) - now
            return left > .zero ? left : nil
        }
    }

    /// Forgets `peer`'s failures after it authenticated.
    public func succeeded(peer: String) {
        _ = peers.withLock { $0.removeValue(forKey: peer) }
    }

    /// How many peers are remembered.
    public var count: Int { peers.withLock { $0.count } }
}
