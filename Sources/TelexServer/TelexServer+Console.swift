import Foundation
import NIOConcurrencyHelpers
import TelexAuth
import TelexProtocol
import TelexStorage

/// What the web console (TelexConsole) needs from the running broker: the same principals, admin rule, login backoff
/// and audit log as the protocol, ADMIN info, "new data" notifications, and the consumer reset of ADMIN
/// reset-consumer. Each answers for the server as it runs now; before `start()` and after `shutdown()` they refuse.
extension TelexServer {
    /// Whether logins are needed: a users file or a shared token is configured. Read from the configuration, so that
    /// it holds already while the broker recovers its topics at startup (a console without logins shows no login
    /// form it cannot pass).
    public var requiresAuthentication: Bool { configuration.auth.usersFile != nil || configuration.authToken != nil }

    /// Checks a console login token as HELLO checks one (the shared token or `NAME.SECRET`). A failure is audited as
    /// `authentication_failed` for `peer` and answered only after the protocol's login backoff for that peer; a
    /// success clears the peer's backoff. While the delay of `peer`'s last failure runs, or another login of `peer`
    /// is being checked, it is answered `.waiting` at once without checking the token (`LoginBackoff.claim`, one
    /// locked step): parallel connections get no more guesses than one. Before `start()` has finished (topic
    /// recovery) and after `shutdown()` it is `.notServing`, unchecked, unaudited and without a backoff claim.
    public func consoleLogin(token: String, peer: String) async -> ConsoleLoginOutcome {
        guard let access = running?.access else { return .notServing }
        if let wait = access.backoff.claim(peer: peer) { return .waiting(wait) }
        // No suspension between the claim and `failed`/`succeeded`, which end it.
        let outcome = access.authenticator.authenticate(token: token, peerCommonName: nil)
        switch outcome {
        case .accepted(let identity):
            access.backoff.succeeded(peer: peer)
            return .accepted(identity)
        case .rejected(let principal, let reason):
            let delay = access.backoff.failed(peer: peer)
            access.auditLog?.record(AuditRecord(
                event: .authenticationFailed, peer: peer, principal: principal, action: "console login", reason: reason))
            logger.info("console login refused", metadata: [
                "peer": "\(peer)", "principal": "\(principal ?? "?")", "reason": "\(reason)",
            ])
            try? await Task.sleep(for: delay)
            return .rejected(principal: principal, reason: reason)
        }
    }

    /// What is left of the login backoff delay `peer`'s last failed login earned; nil when it may try again now.
    public func consoleLoginWait(peer: String) -> Duration? {
        running?.access.backoff.remainingWait(peer: peer)
    }

    /// The refusal of a login while its peer's backoff runs: the wait in whole seconds, rounded up.
    public static func consoleLoginWaitReason(_ wait: Duration) -> String {
        "too many failed logins from this address; wait \(wholeSeconds(wait)) s"
    }

    /// `wait` rounded up to whole seconds, at least 1 (also the `Retry-After` value).
    public static func wholeSeconds(_ wait: Duration) -> Int64 {
        let (seconds, attoseconds) = wait.components
        return max(1, seconds + (attoseconds > 0 ? 1 : 0))
    }

    /// Refuses unless `identity` is an admin principal now, with an `authorization_refused` audit record naming
    /// `peer`, the console and `consumer`: the first check of a console reset, before any other.
    public func requireConsoleAdmin(_ identity: Identity, resetting consumer: String, peer: String) throws(TelexError) {
        guard let running else { throw TelexError(.shuttingDown, "the broker is not serving") }
        guard running.access.isAdmin(identity) else {
            running.access.auditLog?.record(AuditRecord(
                event: .authorizationRefused, peer: peer, principal: identity.name, action: "console reset-consumer",
                consumer: consumer, reason: "not an admin principal"))
            throw TelexError(.notAuthorized,
                "principal '\(identity.name)' may not reset consumer '\(consumer)': it is not an admin principal")
        }
    }

    /// What `identity` may do under the users file in force now (none once the broker stopped).
    public func permissions(of identity: Identity) -> Permissions {
        running?.access.permissions(of: identity) ?? .none
    }

    /// Whether `identity` is an admin principal now (ADMIN's rule: anonymous and the shared token are).
    public func isAdmin(_ identity: Identity) -> Bool {
        running?.access.isAdmin(identity) ?? false
    }

    /// ADMIN info: name, version, uptime, fsync policy, data directory and its size, topics and connections. Blocking
    /// (it sums the data directory's files): call off the event loop. Nil unless serving.
    public func brokerInfo() -> BrokerInfo? {
        guard let running, let context = adminContextBox.withLockedValue({ $0 }) else { return nil }
        return ConnectionHandler.brokerInfo(
            store: running.store, context: context, configuration: configuration,
            address: ConnectionHandler.addressText(running.serverChannel.localAddress))
    }

    /// Calls `onReadable` (from any thread) whenever `topic` gains readable batches, and `onDeleted` if it is deleted,
    /// until the returned watch is cancelled. Nothing passes through it but the notification: read the log after it.
    public func watch(
        topic: String, onReadable: @escaping @Sendable () -> Void, onDeleted: @escaping @Sendable () -> Void = {}
    ) -> TopicWatch {
        let watch = TopicWatch(topic: topic, hub: hub, onReadable: onReadable, onDeleted: onDeleted)
        hub.register(watch, topics: [topic])
        return watch
    }

    /// ADMIN reset-consumer for the console: refused unless `identity` is an admin principal, and while the consumer
    /// is subscribed unless `force`; audited as an `admin` record naming `peer` and the console. Runs the commit on
    /// the server's thread pool.
    public func resetConsumer(
        _ consumer: String, pattern: String, to: StartPosition, force: Bool, identity: Identity, peer: String
    ) async throws(TelexError) -> [ConsumerReset] {
        try requireConsoleAdmin(identity, resetting: consumer, peer: peer)
        guard let running else { throw TelexError(.shuttingDown, "the broker is not serving") }
        try ConnectionHandler.validateReset(
            consumer, pattern: pattern, to: to, force: force, active: hub.subscriptions(ofConsumer: consumer),
            forceName: "\"force\": true")
        let store = running.store
        let topics = ConnectionHandler.resetTopics(store: store, consumer: consumer, pattern: pattern)
        let resets: [ConsumerReset]
        do {
            resets = try await threadPool.runIfActive {
                try ConnectionHandler.reset(store: store, consumer: consumer, topics: topics, to: to)
            }
        } catch let error as TelexError {
            throw error
        } catch {
            throw TelexError(.storageFailure, "reset of consumer '\(consumer)' stopped: \(error)")
        }
        let summary = "console: reset " + resets.map { "\($0.topic) \($0.previous) -> \($0.committed)" }
            .joined(separator: ", ")
        running.access.auditLog?.record(AuditRecord(
            event: .admin, peer: peer, principal: identity.name, action: "reset-consumer",
            topic: pattern.isEmpty ? nil : pattern, consumer: consumer, reason: summary))
        logger.info("console reset-consumer", metadata: [
            "consumer": "\(consumer)", "principal": "\(identity.name)", "resets": "\(summary)",
        ])
        return resets
    }

    /// How many subscriptions of durable consumer `consumer` are open now, on every connection.
    public func subscriptionCount(ofConsumer consumer: String) -> Int {
        hub.subscriptions(ofConsumer: consumer)
    }
}

/// The answer to a console login (`TelexServer.consoleLogin`).
public enum ConsoleLoginOutcome: Sendable, Equatable {
    case accepted(Identity)
    /// `principal` as in `AuthenticationOutcome.rejected`; `reason` is for the log, not the browser.
    case rejected(principal: String?, reason: String)
    /// Refused unchecked: `peer`'s login backoff runs, or another of its logins is being checked; try after this.
    case waiting(Duration)
    /// Refused unchecked: the broker is starting (recovering its topics) or stopping; the token may be right.
    case notServing
}

/// A console's interest in one topic (`TelexServer.watch`): notified like a subscription, reading nothing itself.
public final class TopicWatch: TopicListener, Sendable {
    public let topic: String
    private let hub: TopicHub
    private let onReadable: @Sendable () -> Void
    private let onDeleted: @Sendable () -> Void
    private let cancelled = NIOLockedValueBox(false)

    init(topic: String, hub: TopicHub, onReadable: @escaping @Sendable () -> Void,
         onDeleted: @escaping @Sendable () -> Void) {
        self.topic = topic
        self.hub = hub
        self.onReadable = onReadable
        self.onDeleted = onDeleted
    }

    /// Stops the notifications; safe to call more than once.
    public func cancel() {
        guard !cancelled.withLockedValue({ let was = $0; $0 = true; return was }) else { return }
        hub.unregister(self)
    }

    var pattern: String { topic }
    var consumer: String? { nil }
    func topicReadable(_ topic: String) { onReadable() }
    func topicCreated(_ topic: String) {}
    func topicDeleted(_ topic: String) { onDeleted() }
}
