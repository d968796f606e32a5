import NIOConcurrencyHelpers
import TelexAuth

/// One logged-in browser: the identity its login proved (never the token) and the CSRF token its POSTs must carry.
struct ConsoleSession: Sendable, Equatable {
    /// 64 lowercase hex digits (32 random bytes): the `telex_session` cookie's value.
    let id: String
    let identity: Identity
    /// 64 lowercase hex digits (32 random bytes), sent back in `X-Telex-CSRF`.
    let csrf: String
    let created: ContinuousClock.Instant
    var lastUsed: ContinuousClock.Instant
}

/// The session table as a value: no clock, no lock, no randomness of its own, so its rules (idle timeout, lifetime,
/// least-recently-used eviction) are tested with explicit instants.
struct ConsoleSessionTable: Sendable {
    let idleTimeout: Duration
    let lifetime: Duration
    let capacity: Int
    /// Most sessions of one identity; its least recently used goes first (one principal cannot push everyone's
    /// sessions out of the table).
    let perIdentity: Int
    private(set) var sessions: [String: ConsoleSession] = [:]

    init(idleTimeout: Duration, lifetime: Duration, capacity: Int, perIdentity: Int = ConsoleSessions.perIdentity) {
        self.idleTimeout = idleTimeout
        self.lifetime = lifetime
        self.capacity = max(1, capacity)
        self.perIdentity = max(1, perIdentity)
    }

    /// Whether `session` may still be used at `now`.
    func isLive(_ session: ConsoleSession, at now: ContinuousClock.Instant) -> Bool {
        now - session.lastUsed < idleTimeout && now - session.created < lifetime
    }

    /// Adds `session`. When its identity has `perIdentity` sessions, its least recently used goes. When the table is
    /// full, expired sessions go first, then the least recently used. Linear in the table's size (at most
    /// `capacity`, 10 000 by default), once per login.
    mutating func insert(_ session: ConsoleSession, at now: ContinuousClock.Instant) {
        let same = sessions.values.filter { $0.identity == session.identity }
        if same.count >= perIdentity {
            for old in same.sorted(by: { $0.lastUsed < $1.lastUsed }).prefix(same.count - perIdentity + 1) {
                sessions[old.id] = nil
            }
        }
        if sessions.count >= capacity {
            sessions = sessions.filter { isLive($0.value, at: now) }
        }
        while sessions.count >= capacity,
            let oldest = sessions.values.min(by: { $0.lastUsed < $1.lastUsed })
        {
            sessions[oldest.id] = nil
        }
        sessions[session.id] = session
    }

    /// The live session `id` names, marked as used at `now`; an expired one is removed and not returned.
    mutating func use(_ id: String, at now: ContinuousClock.Instant) -> ConsoleSession? {
        guard var session = sessions[id] else { return nil }
        guard isLive(session, at: now) else {
            sessions[id] = nil
            return nil
        }
        session.lastUsed = now
        sessions[id] = session
        return session
    }

    /// Whether `id` names a live session at `now`, without marking it used.
    func isLive(_ id: String, at now: ContinuousClock.Instant) -> Bool {
        sessions[id].map { isLive($0, at: now) } ?? false
    }

    mutating func remove(_ id: String) {
        sessions[id] = nil
    }
}

/// The console's sessions, in memory (a restart logs everyone out). Thread-safe: one lock around the table, held
/// only for dictionary work.
final class ConsoleSessions: Sendable {
    /// The cookie that carries the session id.
    static let cookieName = "telex_session"
    /// Most sessions of one identity at once (`ConsoleSessionTable.perIdentity`).
    static let perIdentity = 100

    private let table: NIOLockedValueBox<ConsoleSessionTable>
    private let now: @Sendable () -> ContinuousClock.Instant

    init(
        idleTimeout: Duration, lifetime: Duration, capacity: Int,
        now: @escaping @Sendable () -> ContinuousClock.Instant = { ContinuousClock.now }
    ) {
        table = NIOLockedValueBox(ConsoleSessionTable(idleTimeout: idleTimeout, lifetime: lifetime, capacity: capacity))
        self.now = now
    }

    convenience init(configuration: ConsoleConfiguration) {
        self.init(
            idleTimeout: configuration.sessionIdleTimeout, lifetime: configuration.sessionLifetime,
            capacity: configuration.maxSessions)
    }

    /// A new session for `identity`, with fresh random id and CSRF token.
    func create(identity: Identity) -> ConsoleSession {
        let instant = now()
        let session = ConsoleSession(
            id: Secrets.makeSecret(), identity: identity, csrf: Secrets.makeSecret(), created: instant, lastUsed: instant)
        table.withLockedValue { $0.insert(session, at: instant) }
        return session
    }

    /// The live session `id` names (its idle time starts again), or nil when there is none or it expired.
    func lookup(_ id: String) -> ConsoleSession? {
        let instant = now()
        return table.withLockedValue { $0.use(id, at: instant) }
    }

    /// Whether `id` names a live session, without counting this as its use (a live tail asks on every turn).
    func isLive(_ id: String) -> Bool {
        let instant = now()
        return table.withLockedValue { $0.isLive(id, at: instant) }
    }

    func forget(_ id: String) {
        table.withLockedValue { $0.remove(id) }
    }

    /// The `telex_session` value of a request's `Cookie` headers (the first one; nil when absent or not 64 hex
    /// digits, so a malformed cookie is simply no session).
    static func sessionID(cookieHeaders: [String]) -> String? {
        for header in cookieHeaders {
            for pair in header.split(separator: ";") {
                let trimmed = pair.drop(while: { $0 == " " || $0 == "\t" })
                guard let equals = trimmed.firstIndex(of: "=") else { continue }
                guard trimmed[..<equals].trimmingSpaces == cookieName else { continue }
                var value = trimmed[trimmed.index(after: equals)...].trimmingSpaces
                if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") {
                    value = String(value.dropFirst().dropLast())
                }
                return isToken(value) ? value : nil
            }
        }
        return nil
    }

    /// Whether `text` looks like a session id or CSRF token: 64 lowercase hex digits.
    static func isToken(_ text: String) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    /// The `Set-Cookie` value that stores `id` in the browser (`Secure` over TLS).
    static func setCookie(_ id: String, secure: Bool) -> String {
        "\(cookieName)=\(id); HttpOnly; SameSite=Strict; Path=/" + (secure ? "; Secure" : "")
    }

    /// The `Set-Cookie` value that removes the session cookie.
    static func clearCookie(secure: Bool) -> String {
        "\(cookieName)=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0" + (secure ? "; Secure" : "")
    }
}

extension Substring {
    fileprivate var trimmingSpaces: String {
        String(drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
    }
}
