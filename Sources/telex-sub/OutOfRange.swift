import ArgumentParser
import TelexCLI
import TelexClient
import TelexProtocol

/// What telex-sub does when a durable consumer's committed position is no longer in the log (`--on-out-of-range`).
enum OutOfRangePolicy: String, ExpressibleByArgument, CaseIterable, Sendable {
    /// Reset the position to the log start: read what retention kept.
    case beginning
    /// Reset the position to the log end: only new events.
    case end
    /// Stop with a message naming `telex-admin reset-consumer`.
    case fail
}

extension TelexSub {
    /// Subscribes; when the broker answers OFFSET_OUT_OF_RANGE for `consumer`, resets the consumer's positions that
    /// lie outside their logs as `policy` asks (an ADMIN request: the principal must be an admin) and subscribes again.
    static func subscribe(
        _ client: TelexClient, pattern: String, start: StartPosition, consumer: String?, untilCaughtUp: Bool,
        skipDamaged: Bool, onOutOfRange policy: OutOfRangePolicy
    ) async throws -> TelexSubscription {
        do {
            return try await client.subscribe(pattern, from: start, consumer: consumer, untilCaughtUp: untilCaughtUp,
                                              skipDamaged: skipDamaged)
        } catch let error as TelexError where error.code == .offsetOutOfRange {
            guard let consumer else { throw error }
            let advice = "telex-admin reset-consumer \(consumer) --to beginning|end --topic TOPIC"
            guard policy != .fail else {
                throw TelexError(.offsetOutOfRange,
                    "\(error.message). Consumer '\(consumer)' has a committed position that is no longer in the log: reset it with `\(advice)`, or run telex-sub with --on-out-of-range beginning|end")
            }
            let resets: [ConsumerReset]
            do {
                resets = try await resetOutOfRange(client, pattern: pattern, consumer: consumer, policy: policy)
            } catch let adminError as TelexError where adminError.code == .notAuthorized {
                throw TelexError(.notAuthorized,
                    "\(error.message). --on-out-of-range needs an admin principal to reset '\(consumer)'; ask an operator to run `\(advice)`")
            }
            guard !resets.isEmpty else { throw error }
            for reset in resets {
                printError("telex-sub: consumer '\(consumer)': \(reset.topic) position \(reset.previous) was not in the log; reset to \(reset.committed) (--on-out-of-range \(policy.rawValue))")
            }
            return try await client.subscribe(pattern, from: start, consumer: consumer, untilCaughtUp: untilCaughtUp,
                                              skipDamaged: skipDamaged)
        }
    }

    /// Resets `consumer`'s positions in topics matching `pattern` that lie below the log start or beyond its end.
    private static func resetOutOfRange(
        _ client: TelexClient, pattern: String, consumer: String, policy: OutOfRangePolicy
    ) async throws -> [ConsumerReset] {
        let topics = Dictionary(try await client.topics(matching: pattern).map { ($0.topic, $0) }, uniquingKeysWith: { $1 })
        var resets: [ConsumerReset] = []
        for position in try await client.consumerPositions(consumer: consumer) {
            guard let topic = topics[position.topic],
                position.committed < topic.startOffset || position.committed > topic.endOffset
            else { continue }
            resets += try await client.resetConsumer(
                consumer, to: policy == .beginning ? .beginning : .end, topics: position.topic)
        }
        return resets
    }
}
