/// Who a connection is, once HELLO was accepted.
public enum Identity: Sendable, Hashable {
    /// No authentication configured: every right, as before principals existed.
    case anonymous
    /// The holder of the shared `--auth-token`: every right.
    case sharedToken
    /// A principal of the users file, by name; its rights are looked up on every request.
    case principal(String)

    /// The name used in logs, audit records and per-principal limits.
    public var name: String {
        switch self {
        case .anonymous: "anonymous"
        case .sharedToken: "auth-token"
        case .principal(let name): name
        }
    }
}

/// The result of checking HELLO's credentials.
public enum AuthenticationOutcome: Sendable, Equatable {
    case accepted(Identity)
    /// `principal` is the name the client claimed, if any (never the secret).
    case rejected(principal: String?, reason: String)
}

/// Checks credentials against the principals of the users file and the shared token, and answers what an identity
/// may do. A value: the server swaps in a new one when the users file is reloaded.
public struct Authenticator: Sendable {
    /// The users file's principals by name; nil when no users file is configured.
    public let principals: [String: Principal]?
    /// SHA-256 of the shared `--auth-token`, if one is configured.
    private let sharedTokenHash: [UInt8]?
    /// Digests to compare against when the principal is unknown or has no secret, so that the time taken does not
    /// tell whether a name exists.
    private static let decoyHash = Secrets.hash("telex-decoy-secret")

    public init(users: UsersFile?, sharedToken: String?) {
        principals = users.map { Dictionary($0.principals.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first }) }
        sharedTokenHash = sharedToken.map(Secrets.hash)
    }

    /// Whether any authentication is configured.
    public var requiresAuthentication: Bool { principals != nil || sharedTokenHash != nil }

    /// Checks HELLO's token, or the verified client certificate's subject CN when the token is empty.
    ///
    /// A nonempty token is always checked, against the shared token and then as `NAME.SECRET`; an empty token
    /// with a CN that names a principal logs in as that principal. Secrets are compared by their SHA-256 digests
    /// in constant time.
    public func authenticate(token: String, peerCommonName: String?) -> AuthenticationOutcome {
        guard requiresAuthentication else { return .accepted(.anonymous) }
        if token.isEmpty {
            if let peerCommonName, principals?[peerCommonName] != nil { return .accepted(.principal(peerCommonName)) }
            let reason = peerCommonName == nil
                ? "HELLO carries no token" : "the client certificate's CN '\(peerCommonName!)' names no principal"
            return .rejected(principal: peerCommonName, reason: reason)
        }
        let presented = Secrets.hash(token)
        if let sharedTokenHash, Secrets.constantTimeEquals(presented, sharedTokenHash) {
            return .accepted(.sharedToken)
        }
        guard let principals else { return .rejected(principal: nil, reason: "the token does not match --auth-token") }
        guard let (name, secret) = Secrets.split(token: token) else {
            return .rejected(principal: nil, reason: "the token is not NAME.SECRET")
        }
        let stored = principals[name]?.secretSHA256.flatMap { Secrets.bytes(hex: $0) }
        let matches = Secrets.constantTimeEquals(Secrets.hash(secret), stored ?? Self.decoyHash)
        guard let principal = principals[name] else { return .rejected(principal: name, reason: "no such principal") }
        guard principal.secretSHA256 != nil else {
            return .rejected(principal: name, reason: "the principal logs in by client certificate only")
        }
        return matches ? .accepted(.principal(name)) : .rejected(principal: name, reason: "wrong secret")
    }

    /// What `identity` may do now: every right for anonymous and shared-token connections, the principal's current
    /// permissions otherwise, and none for a principal no longer in the users file.
    public func permissions(of identity: Identity) -> Permissions {
        switch identity {
        case .anonymous, .sharedToken: .all
        case .principal(let name): principals?[name]?.permissions ?? .none
        }
    }
}
