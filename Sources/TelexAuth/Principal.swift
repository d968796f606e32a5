/// One entry of the users file: who a client is, how it proves it, and what it may do.
public struct Principal: Codable, Sendable, Equatable {
    /// Unique name: 1 to 128 of `A-Z a-z 0-9 _ - . @`, not starting with `.`, and none of `anonymous`,
    /// `auth-token`, `unauthenticated` (the built-in identities). The first part of the token, and the
    /// subject CN of the principal's client certificate under mutual TLS.
    public var name: String
    /// SHA-256 of the secret, 64 lowercase hex digits; nil for a principal that logs in by certificate only.
    public var secretSHA256: String?
    /// Topic patterns it may publish to.
    public var publish: [String]
    /// Patterns it may subscribe to (a SUBSCRIBE pattern must be covered by one of them).
    public var subscribe: [String]
    /// Durable consumer names it may use: exact names or a prefix ending in `*`.
    public var consumers: [String]
    /// An operator: shown in listings and audit records. Grants no topic or consumer right by itself.
    public var admin: Bool

    public init(
        name: String, secretSHA256: String?, publish: [String] = [], subscribe: [String] = [],
        consumers: [String] = [], admin: Bool = false
    ) {
        self.name = name
        self.secretSHA256 = secretSHA256
        self.publish = publish
        self.subscribe = subscribe
        self.consumers = consumers
        self.admin = admin
    }

    enum CodingKeys: String, CodingKey {
        case name, secretSHA256, publish, subscribe, consumers, admin
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decode(String.self, forKey: .name)
        secretSHA256 = try container.decodeIfPresent(String.self, forKey: .secretSHA256)
        publish = try container.decodeIfPresent([String].self, forKey: .publish) ?? []
        subscribe = try container.decodeIfPresent([String].self, forKey: .subscribe) ?? []
        consumers = try container.decodeIfPresent([String].self, forKey: .consumers) ?? []
        admin = try container.decodeIfPresent(Bool.self, forKey: .admin) ?? false
    }

    /// The principal's rights.
    public var permissions: Permissions {
        Permissions(publish: publish, subscribe: subscribe, consumers: consumers)
    }

    /// Checks the name, the hash and every permission; the error names what is wrong.
    public func validate() throws(UsersFileError) {
        try Self.validateName(name)
        if let secretSHA256, Secrets.bytes(hex: secretSHA256)?.count != 32 {
            throw UsersFileError("principal '\(name)': secretSHA256 is not 64 hex digits")
        }
        try permissions.validate(principal: name)
    }

    /// Checks a principal name; the built-in identities' names (`Identity.reservedNames`) are refused.
    public static func validateName(_ name: String) throws(UsersFileError) {
        guard !name.isEmpty, name.utf8.count <= 128, !name.hasPrefix("."),
            name.unicodeScalars.allSatisfy(isNameCharacter)
        else {
            throw UsersFileError(
                "principal name '\(name)' is not valid (1 to 128 of A-Z a-z 0-9 _ - . @, not starting with '.')")
        }
        guard !Identity.reservedNames.contains(name) else {
            throw UsersFileError(
                "principal name '\(name)' is reserved for a built-in identity (reserved: "
                    + Identity.reservedNames.sorted().joined(separator: ", ") + "); choose another name")
        }
    }

    static func isNameCharacter(_ scalar: Unicode.Scalar) -> Bool {
        (scalar >= "a" && scalar <= "z") || (scalar >= "A" && scalar <= "Z") || (scalar >= "0" && scalar <= "9")
            || scalar == "_" || scalar == "-" || scalar == "." || scalar == "@"
    }
}

/// A users file that cannot be read, parsed or changed as asked; the message says which entry and why.
public struct UsersFileError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
