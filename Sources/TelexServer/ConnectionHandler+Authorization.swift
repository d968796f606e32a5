import NIOCore
import TelexAuth
import TelexProtocol

/// Authentication at HELLO and authorization of every request against the principal's rights in force now
/// (a reloaded users file applies to open connections from their next request on).
extension ConnectionHandler {
    /// Sent through the pipeline by the server after the users file was reloaded: end the subscriptions the
    /// principal may no longer have.
    struct PermissionsChanged: Sendable {}

    /// The principal's name: `unauthenticated` before HELLO, then set at HELLO (`anonymous` when the broker has no
    /// authentication).
    var principalName: String { identity.name }

    /// Checks HELLO's credentials. On failure logs and audits it, and answers AUTHENTICATION_FAILED after the
    /// peer's backoff delay (scheduled on the loop), then closes; returns false.
    func authenticate(token: String, requestID: UInt32) -> Bool {
        let peer = context?.channel.remoteAddress?.ipAddress ?? "?"
        switch access.authenticator.authenticate(token: token, peerCommonName: peerCommonName) {
        case .accepted(let accepted):
            identity = accepted
            logger[metadataKey: "principal"] = "\(accepted.name)"
            if accepted != .anonymous { access.backoff.succeeded(peer: peer) }
            return true
        case .rejected(let principal, let reason):
            let delay = access.backoff.failed(peer: peer)
            logger.warning("authentication failed", metadata: [
                "principal": "\(principal ?? "unknown principal")", "reason": "\(reason)",
                "delayMilliseconds": "\(delay.milliseconds)",
            ])
            access.auditLog?.record(AuditRecord(
                event: .authenticationFailed, peer: context?.channel.remoteAddress?.description, principal: principal,
                reason: reason))
            let error = TelexError(.authenticationFailed, "the credentials in HELLO were not accepted")
            guard delay > .zero, let loop = context?.eventLoop else {
                closeWithError(error, requestID: requestID)
                return false
            }
            state = .rejecting
            loop.assumeIsolated().scheduleTask(in: .nanoseconds(delay.nanoseconds)) {
                guard case .rejecting = self.state else { return }
                self.closeWithError(error, requestID: requestID)
            }
            return false
        }
    }

    /// The principal's rights under the users file in force.
    var permissions: Permissions { access.permissions(of: identity) }

    /// Refuses a PUBLISH to a topic outside the principal's publish patterns.
    func authorizePublish(to topic: String) throws(TelexError) {
        guard !permissions.mayPublish(to: topic) else { return }
        throw refusal(action: "PUBLISH", topic: topic, "principal '\(principalName)' may not publish to '\(topic)'")
    }

    /// Refuses a SUBSCRIBE (or resume) whose pattern is not covered, or whose consumer name may not be used.
    func authorizeSubscribe(pattern: String, consumer: String?, resuming: Bool) throws(TelexError) {
        let rights = permissions
        let action = resuming ? "resume" : "SUBSCRIBE"
        guard rights.maySubscribe(to: pattern) else {
            throw refusal(action: action, topic: pattern, consumer: consumer,
                "principal '\(principalName)' may not subscribe to '\(pattern)'")
        }
        if let consumer, !rights.mayUse(consumer: consumer) {
            throw refusal(action: action, topic: pattern, consumer: consumer,
                "principal '\(principalName)' may not use consumer name '\(consumer)'")
        }
    }

    /// Refuses a COMMIT for a consumer name the principal may not use, or a topic it may not read.
    func authorizeCommit(consumer: String, topic: String) throws(TelexError) {
        let rights = permissions
        guard rights.mayUse(consumer: consumer) else {
            throw refusal(action: "COMMIT", topic: topic, consumer: consumer,
                "principal '\(principalName)' may not use consumer name '\(consumer)'")
        }
        guard rights.maySubscribe(to: topic) else {
            throw refusal(action: "COMMIT", topic: topic, consumer: consumer,
                "principal '\(principalName)' may not read '\(topic)'")
        }
    }

    /// Whether the principal may still read `topic` (checked before a topic born later joins a subscription).
    func mayRead(_ topic: String) -> Bool {
        permissions.maySubscribe(to: topic)
    }

    /// Ends every subscription whose pattern or consumer name the principal may no longer use.
    func permissionsChanged() {
        guard case .ready = state else { return }
        let rights = permissions
        for (id, subscription) in subscriptions {
            let pattern = subscription.listener.pattern
            var reason: String?
            if !rights.maySubscribe(to: pattern) {
                reason = "principal '\(principalName)' may no longer subscribe to '\(pattern)'"
            } else if let consumer = subscription.consumer, !rights.mayUse(consumer: consumer) {
                reason = "principal '\(principalName)' may no longer use consumer name '\(consumer)'"
            }
            guard let reason else { continue }
            endSubscription(id, error: refusal(action: "SUBSCRIBE", topic: pattern, consumer: subscription.consumer, reason))
        }
        flushOutbound()
    }

    /// Logs and audits a refused request — at most `auditedRefusalsPerSecond` a second one by one, the rest counted
    /// and reported together — and returns its NOT_AUTHORIZED error.
    func refusal(action: String, topic: String, consumer: String? = nil, _ message: String) -> TelexError {
        let (record, suppressed) = refusalThrottle.admit(at: .now)
        if suppressed > 0 { auditSuppressedRefusals(suppressed) }
        if record {
            logger.info("not authorized", metadata: ["action": "\(action)", "topic": "\(topic)"])
            access.auditLog?.record(AuditRecord(
                event: .authorizationRefused, peer: context?.channel.remoteAddress?.description, principal: principalName,
                action: action, topic: topic, consumer: consumer, reason: message))
        }
        return TelexError(.notAuthorized, message, topic: topic)
    }

    /// Reports the refusals not yet logged one by one (when the connection ends).
    func reportSuppressedRefusals() {
        let suppressed = refusalThrottle.takeSuppressed()
        if suppressed > 0 { auditSuppressedRefusals(suppressed) }
    }

    private func auditSuppressedRefusals(_ count: Int) {
        let limit = configuration.auth.auditedRefusalsPerSecond
        logger.info("not authorized, more often than logged one by one", metadata: ["refusals": "\(count)"])
        access.auditLog?.record(AuditRecord(
            event: .authorizationRefusalsSuppressed, peer: context?.channel.remoteAddress?.description,
            principal: principalName, count: count,
            reason: "\(count) more refusals, beyond \(limit) a second, were not recorded one by one"))
    }
}

extension Duration {
    fileprivate var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    fileprivate var milliseconds: Int64 { nanoseconds / 1_000_000 }
}
