import TelexProtocol

/// What a principal may do: publish to topics, subscribe to patterns, and use durable consumer names.
public struct Permissions: Sendable, Equatable {
    /// Topic patterns the principal may publish to: a topic is allowed if one of them matches it.
    public var publish: [String]
    /// Patterns the principal may read: a SUBSCRIBE pattern is allowed if one of them covers it.
    public var subscribe: [String]
    /// Durable consumer names the principal may use: exact names, or a prefix ending in `*` (`*` alone: any).
    public var consumers: [String]

    public init(publish: [String], subscribe: [String], consumers: [String]) {
        self.publish = publish
        self.subscribe = subscribe
        self.consumers = consumers
    }

    /// Every right: what an anonymous client has on a broker without authentication, and the `--auth-token` holder.
    public static let all = Permissions(publish: [">"], subscribe: [">"], consumers: ["*"])

    /// No right at all: what a connection keeps once its principal was removed from the users file.
    public static let none = Permissions(publish: [], subscribe: [], consumers: [])

    /// Whether a PUBLISH to `topic` (a valid topic name) is allowed.
    public func mayPublish(to topic: String) -> Bool {
        publish.contains { TopicName.matches(pattern: $0, topic: topic) }
    }

    /// Whether a subscription with `pattern` (or a topic name) is allowed: one subscribe permission covers it.
    public func maySubscribe(to pattern: String) -> Bool {
        subscribe.contains { PatternCoverage.covers(permission: $0, pattern: pattern) }
    }

    /// Whether the durable consumer name `consumer` may be used (to subscribe, resume or commit).
    public func mayUse(consumer: String) -> Bool {
        consumers.contains { grant in
            grant.hasSuffix("*") ? consumer.hasPrefix(grant.dropLast()) : grant == consumer
        }
    }

    /// Checks that every pattern and consumer entry is well formed; the error names the bad entry.
    public func validate(principal: String) throws(UsersFileError) {
        for pattern in publish + subscribe {
            do {
                try TopicName.validatePattern(pattern)
            } catch {
                throw UsersFileError("principal '\(principal)': bad pattern '\(pattern)': \(error.message)")
            }
        }
        for consumer in consumers {
            let name = consumer.hasSuffix("*") ? consumer.dropLast() : Substring(consumer)
            let valid = name.utf8.count <= 128 && !name.hasPrefix(".")
                && name.unicodeScalars.allSatisfy { Principal.isNameCharacter($0) && $0 != "@" }
                && (!name.isEmpty || consumer == "*")
            guard valid else {
                throw UsersFileError(
                    "principal '\(principal)': bad consumer '\(consumer)' (use a name of A-Z a-z 0-9 _ - . or a prefix ending in '*')")
            }
        }
    }
}
