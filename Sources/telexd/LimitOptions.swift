import ArgumentParser
import TelexServer

/// The broker's limits against abusive or broken clients; each flag also reads a `TELEX_*` variable (flags win).
struct LimitOptions: ParsableArguments {
    @Option(name: .customLong("max-connections"),
            help: "Open connections at once; more get TOO_MANY_CONNECTIONS. Env TELEX_MAX_CONNECTIONS. Default 1024.")
    var maxConnections: Int?
    @Option(name: .customLong("handshake-timeout"),
            help: "Seconds a connection has to send HELLO (fractions allowed). Env TELEX_HANDSHAKE_TIMEOUT. Default 10.")
    var handshakeTimeout: Double?
    @Option(name: .customLong("max-topics"),
            help: "Topics in all; PUBLISH creating more gets TOO_MANY_TOPICS. Env TELEX_MAX_TOPICS. Default 100000.")
    var maxTopics: Int?
    @Option(name: .customLong("topic-creation-rate"),
            help: """
                Topics one principal may create per second, with bursts of 10 seconds' worth; beyond it RATE_LIMITED. \
                Env TELEX_TOPIC_CREATION_RATE. Default 100.
                """)
    var topicCreationRate: Double?
    @Option(name: .customLong("max-unacked-bytes"),
            help: "Unanswered PUBLISH bytes per connection before the broker stops reading it. Env TELEX_MAX_UNACKED_BYTES. Default 33554432.")
    var maxUnackedBytes: Int?
    @Option(name: .customLong("max-subscriptions"),
            help: "Subscriptions per connection; more get TOO_MANY_SUBSCRIPTIONS. Env TELEX_MAX_SUBSCRIPTIONS. Default 1000.")
    var maxSubscriptions: Int?

    /// The limits the flags and `environment` ask for, on top of the defaults.
    func serverLimits(environment: [String: String]) throws -> ServerLimits {
        func setting<T>(_ flag: T?, _ name: String, _ parse: (String) -> T?) throws -> T? {
            try environmentSetting(flag, name, environment, parse)
        }
        func atLeast<T: Comparable>(_ value: T?, _ minimum: T, _ flag: String) throws -> T? {
            guard let value else { return nil }
            guard value >= minimum else { throw ValidationError("--\(flag) must be at least \(minimum), not \(value)") }
            return value
        }
        var limits = ServerLimits()
        if let value = try atLeast(setting(maxConnections, "TELEX_MAX_CONNECTIONS", { Int($0) }), 1, "max-connections") {
            limits.maxConnections = value
        }
        if let seconds = try atLeast(setting(handshakeTimeout, "TELEX_HANDSHAKE_TIMEOUT", { Double($0) }), 0.001,
                                     "handshake-timeout") {
            limits.handshakeTimeout = .milliseconds(Int64(seconds * 1000))
        }
        if let value = try atLeast(setting(maxTopics, "TELEX_MAX_TOPICS", { Int($0) }), 0, "max-topics") {
            limits.maxTopics = value
        }
        if let rate = try atLeast(setting(topicCreationRate, "TELEX_TOPIC_CREATION_RATE", { Double($0) }), 0.001,
                                  "topic-creation-rate") {
            limits.topicCreationRate = rate
            limits.topicCreationBurst = max(1, Int(rate * 10))
        }
        if let value = try atLeast(setting(maxUnackedBytes, "TELEX_MAX_UNACKED_BYTES", { Int($0) }), 1, "max-unacked-bytes") {
            limits.maxUnackedBytes = value
        }
        if let value = try atLeast(setting(maxSubscriptions, "TELEX_MAX_SUBSCRIPTIONS", { Int($0) }), 1, "max-subscriptions") {
            limits.maxSubscriptions = value
        }
        return limits
    }
}
