import TelexProtocol

extension Newsroom {
    /// The ERROR frames a broker sends when a client reaches one of its limits (PROTOCOL.md §9 and §13). They are
    /// not part of the example conversation: each stands for its own connection.
    static var limitVectors: [Vector] {
        [
            Vector(
                name: "error_too_many_connections",
                description:
                    "The broker already serves its maximum of connections: it sends this ERROR (request id 0) on the new connection as soon as it is accepted, then closes it.",
                message: .broker(.error(
                    code: .tooManyConnections,
                    message: "the broker already serves its maximum of 1024 connections; try again later")),
                requestID: 0),
            Vector(
                name: "error_handshake_timeout",
                description:
                    "HELLO did not arrive within the handshake timeout (nothing, or only part of it, was sent): ERROR with request id 0, then the broker closes the connection.",
                message: .broker(.error(
                    code: .handshakeTimeout,
                    message: "HELLO did not arrive within 10.0 seconds; send HELLO as the first frame right after connecting")),
                requestID: 0),
            Vector(
                name: "error_too_many_topics",
                description:
                    "Request 21, a PUBLISH to a topic that does not exist, would create a topic beyond the broker's cap: nothing was created or appended; the connection stays open.",
                message: .broker(.error(
                    code: .tooManyTopics,
                    message: "topic 'news.local.harbin' was not created: the broker already has its maximum of 100000 topics; publish to an existing topic")),
                requestID: 21),
            Vector(
                name: "error_rate_limited",
                description:
                    "Request 22, a PUBLISH that would create a topic, came after its principal used up its topic creation rate: nothing was created or appended; the connection stays open.",
                message: .broker(.error(
                    code: .rateLimited,
                    message: "topic 'news.local.qiqihar' was not created: 'desk-world-07' may create 100 topics a second; try again later")),
                requestID: 22),
            Vector(
                name: "error_too_many_subscriptions",
                description:
                    "Request 23, a SUBSCRIBE on a connection that already has the broker's maximum of subscriptions: refused; the connection and its subscriptions stay.",
                message: .broker(.error(
                    code: .tooManySubscriptions,
                    message: "SUBSCRIBE to 'news.sport' refused: this connection already has its maximum of 1000 subscriptions; unsubscribe one or subscribe with a wider pattern")),
                requestID: 23),
        ]
    }
}
