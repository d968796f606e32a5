import NIOConcurrencyHelpers
import NIOCore
import TelexProtocol

/// Enforces the topic cap and the per-principal topic creation rate for every connection of one broker.
///
/// Thread-safe: connections on any loop reserve a topic before creating it, and the count of topics plus
/// reservations never passes `maxTopics`, however many connections create at once. A reservation stays counted
/// when its topic was created and is released otherwise. The rate is a token bucket per principal name.
final class TopicCreationLimiter: Sendable {
    private let limits: ServerLimits
    private let state: NIOLockedValueBox<State>
    /// Reads a monotonic clock, in nanoseconds; tests pass their own.
    private let now: @Sendable () -> Int64

    /// Buckets above this many principals are pruned of those that are full again (they carry no information).
    static let bucketsBeforePruning = 4096

    private struct State {
        /// Existing topics plus creations in progress.
        var topics: Int
        var buckets: [String: Bucket] = [:]
    }

    private struct Bucket {
        var tokens: Double
        var updatedAt: Int64
    }

    /// One reserved topic creation; `release(_:)` it if no topic was created.
    struct Reservation {
        let principal: String
    }

    init(
        limits: ServerLimits, existingTopics: Int,
        now: @escaping @Sendable () -> Int64 = { Int64(NIODeadline.now().uptimeNanoseconds) }
    ) {
        self.limits = limits
        self.now = now
        state = NIOLockedValueBox(State(topics: existingTopics))
    }

    /// Reserves the creation of `topic` by `principal`: TOO_MANY_TOPICS at the cap, RATE_LIMITED when the
    /// principal's bucket is empty. Nothing is reserved or spent when it throws.
    func reserve(_ topic: String, principal: String) throws(TelexError) -> Reservation {
        let time = now()
        let limits = self.limits
        let refusal: TelexError? = state.withLockedValue { state in
            guard state.topics < limits.maxTopics else {
                return TelexError(.tooManyTopics,
                    "topic '\(topic)' was not created: the broker already has its maximum of \(limits.maxTopics) topics; publish to an existing topic",
                    topic: topic)
            }
            var bucket = Self.refilled(state.buckets[principal], at: time, limits: limits)
            guard bucket.tokens >= 1 else {
                state.buckets[principal] = bucket
                return TelexError(.rateLimited,
                    "topic '\(topic)' was not created: '\(principal)' may create \(Self.describe(limits.topicCreationRate)) topics a second; try again later",
                    topic: topic)
            }
            bucket.tokens -= 1
            state.buckets[principal] = bucket
            state.topics += 1
            if state.buckets.count > Self.bucketsBeforePruning {
                state.buckets = state.buckets.filter {
                    Self.refilled($0.value, at: time, limits: limits).tokens < Double(limits.topicCreationBurst)
                }
            }
            return nil
        }
        if let refusal { throw refusal }
        return Reservation(principal: principal)
    }

    /// Gives a reservation back, with its token, when no topic was created (it failed, or another connection
    /// created the same topic first).
    func release(_ reservation: Reservation) {
        let limits = self.limits
        state.withLockedValue { state in
            state.topics -= 1
            if var bucket = state.buckets[reservation.principal] {
                bucket.tokens = min(bucket.tokens + 1, Double(limits.topicCreationBurst))
                state.buckets[reservation.principal] = bucket
            }
        }
    }

    /// A topic was deleted: its place under the cap is free again.
    func topicDeleted() {
        state.withLockedValue { $0.topics -= 1 }
    }

    /// Topics existing or being created.
    var topicCount: Int { state.withLockedValue { $0.topics } }

    private static func refilled(_ bucket: Bucket?, at time: Int64, limits: ServerLimits) -> Bucket {
        let burst = Double(limits.topicCreationBurst)
        guard var bucket else { return Bucket(tokens: burst, updatedAt: time) }
        let elapsed = Double(max(0, time - bucket.updatedAt)) / 1e9
        bucket.tokens = min(burst, bucket.tokens + elapsed * limits.topicCreationRate)
        bucket.updatedAt = time
        return bucket
    }

    private static func describe(_ rate: Double) -> String {
        rate == rate.rounded() && rate < 1e15 ? String(Int64(rate)) : String(rate)
    }
}
