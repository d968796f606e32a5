import Logging
import NIOConcurrencyHelpers
import TelexAuth

/// The broker's principals, shared by every connection: the current `Authenticator` (swapped by `reload()`), the
/// backoff of failing peers, and the audit log. Thread-safe.
final class AccessControl: Sendable {
    private let current: NIOLockedValueBox<Authenticator>
    private let configuration: ServerConfiguration
    private let logger: Logger
    /// Slows down peers whose HELLOs fail repeatedly.
    let backoff: LoginBackoff
    /// The audit log, if one is configured.
    let auditLog: AuditLog?

    /// Reads the users file (blocking: call off the event loop) and opens the audit log.
    init(configuration: ServerConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        let users = try configuration.auth.usersFile.map { path throws(UsersFileError) in try UsersFile.load(path: path) }
        current = NIOLockedValueBox(Authenticator(users: users, sharedToken: configuration.authToken))
        backoff = LoginBackoff(baseDelay: configuration.auth.failureDelay, maxDelay: configuration.auth.maxFailureDelay)
        auditLog = try configuration.auth.auditLogFile.map { try AuditLog(path: $0, logger: logger) }
    }

    /// The authenticator in force.
    var authenticator: Authenticator { current.withLockedValue { $0 } }

    /// What `identity` may do under the users file in force now.
    func permissions(of identity: Identity) -> Permissions {
        current.withLockedValue { $0.permissions(of: identity) }
    }

    /// Whether `identity` is an operator: every connection without authentication or with the shared token, and a
    /// principal marked `admin` in the users file in force (and still accepting the way it logged in).
    func isAdmin(_ identity: Identity) -> Bool {
        switch identity {
        case .anonymous, .sharedToken:
            return true
        case .unauthenticated:
            return false
        case .principal(let name, let login):
            guard let principal = authenticator.principals?[name], principal.admin else { return false }
            switch login {
            case .certificate: return true
            case .secret(let sha256): return principal.secretSHA256?.lowercased() == sha256
            }
        }
    }

    /// Re-reads the users file (blocking: call off the event loop). On an error the principals in force stay.
    /// Returns the number of principals now in force; without a users file, does nothing and returns nil.
    @discardableResult
    func reload() throws(UsersFileError) -> Int? {
        guard let path = configuration.auth.usersFile else { return nil }
        let users: UsersFile
        do {
            users = try UsersFile.load(path: path)
        } catch {
            logger.error("users file not reloaded; the previous principals stay in force", metadata: ["error": "\(error)"])
            auditLog?.record(AuditRecord(event: .usersReloadFailed, reason: error.message))
            throw error
        }
        current.withLockedValue { $0 = Authenticator(users: users, sharedToken: configuration.authToken) }
        logger.info("users file reloaded", metadata: ["path": "\(path)", "principals": "\(users.principals.count)"])
        auditLog?.record(AuditRecord(event: .usersReloaded, reason: "\(users.principals.count) principals from \(path)"))
        return users.principals.count
    }
}
