/// Who a connection is: nobody until HELLO was accepted, then who HELLO proved it to be.
public enum Identity: Sendable, Hashable {
    /// HELLO has not been accepted (yet): no right at all.
    case unauthenticated
    /// No authentication configured: every right, as before principals existed.
    case anonymous
    /// The holder of the shared `--auth-token`: every right.
    case sharedToken
    /// A principal of the users file, by name, and how it logged in; its rights are looked up on every request,
    /// and are none once the users file no longer accepts that login (see `Authenticator.permissions(of:)`).
    case principal(String, login: Login)

    /// The built-in identities' names, which no principal may take (`Principal.validateName`).
    public static let reservedNames: Set<String> = ["unauthenticated", "anonymous", "auth-token"]

    /// The name used in logs, audit records and per-principal limits.
    public var name: String {
        switch self {
        case .unauthenticated: "unauthenticated"
        case .anonymous: "anonymous"
        case .sharedToken: "auth-token"
        case .principal(let name, _): name
        }
    }
}

/// How a principal proved who it is at HELLO.
public enum Login: Sendable, Hashable {
    /// A token whose secret's SHA-256 (64 lowercase hex digits) was the principal's `secretSHA256` at login.
    case secret(sha256: String)
    /// The verified client certificate's subject CN (mutual TLS).
    case certificate
}

/// The result of checking HELLO's credentials.
public enum AuthenticationOutcome: Sendable, Equatable {
    case accepted(Identity)
    /// `principal` is the name the client claimed, only when it is an existing principal's (never the secret, nor
    /// any part of a token that names no principal).
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
            if let peerCommonName, principals?[peerCommonName] != nil {
                return .accepted(.principal(peerCommonName, login: .certificate))
            }
            let reason = peerCommonName == nil
                ? "HELLO carries no token" : "the client certificate's CN '\(peerCommonName!)' names no principal"
            return .rejected(principal: nil, reason: reason)
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
        // The claimed name is only reported when it is a principal's: the text before the last dot of a mistyped
        // shared token, or of a token meant for another system, may be secret.
        guard let principal = principals[name] else { return .rejected(principal: nil, reason: "unknown principal") }
        guard let secretSHA256 = principal.secretSHA256 else {
            return .rejected(principal: name, reason: "the principal logs in by client certificate only")
        }
        return matches
            ? .accepted(.principal(name, login: .secret(sha256: secretSHA256.lowercased())))
            : .rejected(principal: name, reason: "wrong secret")
    }

    /// What `identity` may do now: none before HELLO was accepted, every right for anonymous and shared-token
    /// connections, and otherwise the principal's current permissions — or none, when the principal is no longer in
    /// the users file or no longer accepts the way the connection logged in (its secret was replaced: a connection
    /// opened with the old token counts as removed).
    public func permissions(of identity: Identity) -> Permissions {
        switch identity {
        case .unauthenticated:
            return .none
        case .anonymous, .sharedToken:
            return .all
        case .principal(let name, let login):
            guard let principal = principals?[name], principal.accepts(login) else { return .none }
            return principal.permissions
        }
    }
}

extension Principal {
    /// Whether a connection that logged in by `login` still counts as this principal: by certificate, always; by a
    /// secret, only while the principal's `secretSHA256` is the one it logged in with.
    func accepts(_ login: Login) -> Bool {
        switch login {
        case .certificate: true
        case .secret(let sha256): secretSHA256?.lowercased() == sha256
        }
    }
}
