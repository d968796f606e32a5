import TelexProtocol

extension TelexClient {
    /// Subscribes to a topic or pattern (`news.*`, `news.>`). With a `consumer` name, committed positions
    /// override `start` for topics that have one. With `untilCaughtUp`, the sequence ends once everything stored
    /// at subscribe time has been delivered (the index-rebuild mode). With `skipDamaged`, records the broker finds
    /// damaged on its disk are stepped over (each gap is reported in `DeliveredRecord.skippedBefore`); without it
    /// iteration ends with a DATA_LOSS error naming the topic and the lost offsets.
    ///
    /// The subscription lives until its iteration ends, `cancel()` is called, or it is deinitialized; prefer
    /// `withSubscription`, which ends it when the closure returns.
    public func subscribe(
        _ pattern: String, from start: StartPosition = .end, consumer: String? = nil, untilCaughtUp: Bool = false,
        skipDamaged: Bool = false
    ) async throws -> TelexSubscription {
        try TopicName.validatePattern(pattern)
        let subscription = TelexSubscription(client: self, pattern: pattern, start: start, consumer: consumer,
                                             untilCaughtUp: untilCaughtUp, skipDamaged: skipDamaged,
                                             credit: configuration.subscriptionCredit)
        try await subscription.open(resume: [:])
        return subscription
    }

    /// Subscribes, runs `body` with the subscription, and ends the subscription on the broker when `body`
    /// returns or throws (or its task is cancelled).
    /// ```swift
    /// try await client.withSubscription("news.>", from: .beginning) { records in
    ///     for try await delivered in records { index(delivered.record) }
    /// }
    /// ```
    public func withSubscription<Result>(
        _ pattern: String, from start: StartPosition = .end, consumer: String? = nil, untilCaughtUp: Bool = false,
        skipDamaged: Bool = false, isolation: isolated (any Actor)? = #isolation,
        _ body: (TelexSubscription) async throws -> Result
    ) async throws -> Result {
        let subscription = try await subscribe(pattern, from: start, consumer: consumer, untilCaughtUp: untilCaughtUp,
                                               skipDamaged: skipDamaged)
        do {
            let result = try await body(subscription)
            await subscription.cancel()
            return result
        } catch {
            subscription.endLocally()
            throw error
        }
    }
}
