import Foundation
import NIOHTTP1
import TelexAuth
import TelexProtocol
import Testing

@testable import TelexConsole

@Suite("Console sessions: the table, cookies and CSRF", .timeLimit(.minutes(1)))
struct HTTPSessionTests {
    private func session(_ id: String, at instant: ContinuousClock.Instant) -> ConsoleSession {
        ConsoleSession(id: id, identity: .principal(id, login: .certificate), csrf: "c", created: instant, lastUsed: instant)
    }

    @Test("a session expires after its idle timeout or its lifetime, whichever comes first")
    func expiry() {
        let start = ContinuousClock.now
        var table = ConsoleSessionTable(idleTimeout: .seconds(10), lifetime: .seconds(25), capacity: 10)
        table.insert(session("a", at: start), at: start)
        #expect(table.use("a", at: start + .seconds(9))?.id == "a")
        #expect(table.use("a", at: start + .seconds(18))?.id == "a", "using it restarts the idle time")
        #expect(table.use("a", at: start + .seconds(24))?.id == "a")
        #expect(table.use("a", at: start + .seconds(25)) == nil, "the lifetime is over")
        #expect(table.sessions.isEmpty, "an expired session is removed when found")

        table.insert(session("b", at: start), at: start)
        #expect(table.use("b", at: start + .seconds(10)) == nil, "idle for the whole timeout")
        #expect(table.use("missing", at: start) == nil)
    }

    @Test("a full table drops expired sessions first, then the least recently used")
    func eviction() {
        let start = ContinuousClock.now
        var table = ConsoleSessionTable(idleTimeout: .seconds(100), lifetime: .seconds(1000), capacity: 3)
        table.insert(session("a", at: start), at: start)
        table.insert(session("b", at: start + .seconds(1)), at: start + .seconds(1))
        table.insert(session("c", at: start + .seconds(2)), at: start + .seconds(2))
        _ = table.use("a", at: start + .seconds(3))
        table.insert(session("d", at: start + .seconds(4)), at: start + .seconds(4))
        #expect(Set(table.sessions.keys) == ["a", "c", "d"], "b was the least recently used")

        // Later, c and d have idled out: both go, a (used again) and e stay.
        _ = table.use("a", at: start + .seconds(90))
        table.insert(session("e", at: start + .seconds(105)), at: start + .seconds(105))
        #expect(Set(table.sessions.keys) == ["a", "e"])
        table.remove("a")
        #expect(Set(table.sessions.keys) == ["e"])
    }

    @Test("ids and CSRF tokens are 64 hex digits and differ; the cookie is read from any Cookie header")
    func tokensAndCookies() {
        let sessions = ConsoleSessions(configuration: ConsoleConfiguration(host: "127.0.0.1", port: 0))
        let first = sessions.create(identity: .sharedToken)
        let second = sessions.create(identity: .sharedToken)
        for token in [first.id, first.csrf, second.id, second.csrf] { #expect(ConsoleSessions.isToken(token), "\(token)") }
        #expect(Set([first.id, first.csrf, second.id, second.csrf]).count == 4)
        #expect(sessions.lookup(first.id)?.identity == .sharedToken)
        sessions.forget(first.id)
        #expect(sessions.lookup(first.id) == nil)

        let id = first.id
        #expect(ConsoleSessions.sessionID(cookieHeaders: ["telex_session=\(id)"]) == id)
        #expect(ConsoleSessions.sessionID(cookieHeaders: ["theme=dark; telex_session=\(id); x=y"]) == id)
        #expect(ConsoleSessions.sessionID(cookieHeaders: ["theme=dark", " telex_session=\"\(id)\""]) == id)
        #expect(ConsoleSessions.sessionID(cookieHeaders: ["telex_session=nothex"]) == nil)
        #expect(ConsoleSessions.sessionID(cookieHeaders: ["xtelex_session=\(id)"]) == nil)
        #expect(ConsoleSessions.sessionID(cookieHeaders: []) == nil)
        #expect(ConsoleSessions.setCookie(id, secure: false) == "telex_session=\(id); HttpOnly; SameSite=Strict; Path=/")
        #expect(ConsoleSessions.setCookie(id, secure: true).hasSuffix("; Secure"))
        #expect(ConsoleSessions.clearCookie(secure: false).contains("Max-Age=0"))
    }

    @Test("without authentication every request is anonymous; POSTs still need the CSRF token from /api/session")
    func anonymous() async throws {
        try await withEndpoint { _, port in
            try await TestHTTP.with(port: port) { http in
                let answer = try await http.request(.GET, "/api/session")
                #expect(answer.status == .ok)
                #expect(answer.headers.first(name: "Set-Cookie") == nil)
                let session = try answer.decode(SessionJSON.self)
                #expect(session.principal == "anonymous")
                #expect(session.admin)
                #expect(!session.authRequired)
                #expect(ConsoleSessions.isToken(session.csrf))

                let login = try await http.request(.POST, "/api/login", body: "")
                #expect(try login.decode(SessionJSON.self) == session)

                let reset = #"{"to":"beginning"}"#
                let json = ("Content-Type", "application/json")
                let refused = try await http.request(.POST, "/api/consumers/indexer/reset", headers: [json], body: reset)
                #expect(refused.status == .forbidden)
                #expect(refused.errorCode == "CSRF")
                let wrong = try await http.request(.POST, "/api/consumers/indexer/reset",
                    headers: [json, ("X-Telex-CSRF", String(repeating: "0", count: 64))], body: reset)
                #expect(wrong.errorCode == "CSRF")
                let csrf = ("X-Telex-CSRF", session.csrf)
                let done = try await http.request(.POST, "/api/consumers/indexer/reset", headers: [json, csrf], body: reset)
                #expect(done.status == .ok)
                #expect(try done.decode(ResetJSON.self).consumer == "indexer")
                let notJSON = try await http.request(.POST, "/api/consumers/indexer/reset",
                    headers: [("Content-Type", "text/plain"), csrf], body: reset)
                #expect(notJSON.status == .badRequest)
                let missing = try await http.request(.POST, "/api/consumers/indexer/reset", headers: [json, csrf],
                    body: #"{"pattern":"news.>"}"#)
                #expect(missing.status == .badRequest)
                #expect(missing.errorMessage == "reset request: field 'to' is missing")
                let logout = try await http.request(.POST, "/api/logout", headers: [csrf])
                #expect(logout.status == .noContent)
            }
        }
    }

    @Test("with authentication: login, session, CSRF, admin rule, logout and expiry")
    func loggedIn() async throws {
        let authority = FakeAuthority(
            requiresAuthentication: true,
            tokens: ["admin.s3cret": .principal("admin", login: .secret(sha256: "x")),
                     "reader.s3cret": .principal("reader", login: .secret(sha256: "y"))],
            admins: ["admin"])
        let clock = ManualClock()
        try await withEndpoint(authority: authority, clock: clock, configure: {
            $0.sessionIdleTimeout = .seconds(60)
        }) { _, port in
            try await TestHTTP.with(port: port) { http in
                let json = ("Content-Type", "application/json")
                let none = try await http.request(.GET, "/api/session")
                #expect(none.status == .unauthorized)
                #expect(none.errorCode == "UNAUTHENTICATED")
                #expect(try await http.request(.GET, "/api/topics").status == .unauthorized)
                #expect(try await http.request(.GET, "/").status == .ok, "the page itself needs no session")

                let wrong = try await http.request(.POST, "/api/login", headers: [json], body: #"{"token":"admin.nope"}"#)
                #expect(wrong.status == .unauthorized)
                #expect(wrong.errorCode == "AUTHENTICATION_FAILED")
                #expect(wrong.errorMessage == "the token was not accepted", "not whether the principal exists")
                #expect(wrong.headers.first(name: "Set-Cookie") == nil)
                let field = try await http.request(.POST, "/api/login", headers: [json], body: #"{"token":7}"#)
                #expect(field.status == .badRequest)
                #expect(field.errorMessage == "login: field 'token' must be a string")
                let notJSON = try await http.request(.POST, "/api/login", headers: [json], body: "token=x")
                #expect(notJSON.errorMessage == "login: the body is not valid JSON")

                let reader = try await http.request(.POST, "/api/login", headers: [json], body: #"{"token":"reader.s3cret"}"#)
                #expect(reader.status == .ok)
                let readerCookie = try #require(reader.cookie)
                let readerSession = try reader.decode(SessionJSON.self)
                #expect(readerSession == SessionJSON(principal: "reader", admin: false, authRequired: true, csrf: readerSession.csrf))
                let asReader = [json, ("Cookie", readerCookie), ("X-Telex-CSRF", readerSession.csrf)]
                let refused = try await http.request(.POST, "/api/consumers/c/reset", headers: asReader, body: #"{"to":"end"}"#)
                #expect(refused.status == .forbidden)
                #expect(refused.errorCode == "NOT_AUTHORIZED")

                let admin = try await http.request(.POST, "/api/login", headers: [json], body: #"{"token":"admin.s3cret"}"#)
                let cookie = try #require(admin.cookie)
                #expect(admin.headers.first(name: "Set-Cookie")?.contains("HttpOnly; SameSite=Strict; Path=/") == true)
                let session = try admin.decode(SessionJSON.self)
                #expect(session.admin)
                let withCookie = ("Cookie", cookie)
                #expect(try await http.request(.GET, "/api/session", headers: [withCookie]).decode(SessionJSON.self) == session)
                let noCSRF = try await http.request(.POST, "/api/consumers/c/reset", headers: [json, withCookie],
                    body: #"{"to":"end"}"#)
                #expect(noCSRF.status == .forbidden)
                #expect(noCSRF.errorCode == "CSRF")
                let otherCSRF = try await http.request(.POST, "/api/consumers/c/reset",
                    headers: [json, withCookie, ("X-Telex-CSRF", readerSession.csrf)], body: #"{"to":"end"}"#)
                #expect(otherCSRF.errorCode == "CSRF", "another session's token does not do")
                let reset = try await http.request(.POST, "/api/consumers/c/reset",
                    headers: [json, withCookie, ("X-Telex-CSRF", session.csrf)], body: #"{"to":"end"}"#)
                #expect(reset.status == .ok)

                // Idle past the timeout: the reader's session is gone, the admin's (used just now) too after more.
                clock.advance(by: .seconds(59))
                #expect(try await http.request(.GET, "/api/session", headers: [withCookie]).status == .ok)
                clock.advance(by: .seconds(2))
                let expired = try await http.request(.GET, "/api/session", headers: [("Cookie", readerCookie)])
                #expect(expired.status == .unauthorized)
                #expect(expired.errorMessage?.contains("expired") == true)

                let logoutWithoutCSRF = try await http.request(.POST, "/api/logout", headers: [withCookie])
                #expect(logoutWithoutCSRF.errorCode == "CSRF")
                let logout = try await http.request(.POST, "/api/logout",
                    headers: [withCookie, ("X-Telex-CSRF", session.csrf)])
                #expect(logout.status == .noContent)
                #expect(logout.headers.first(name: "Set-Cookie")?.hasPrefix("telex_session=;") == true)
                expectSecurityHeaders(logout)
                #expect(try await http.request(.GET, "/api/session", headers: [withCookie]).status == .unauthorized)
            }
        }
    }

    @Test("one identity keeps at most perIdentity sessions (its least recently used goes), others are untouched")
    func perIdentityCap() {
        let start = ContinuousClock.now
        var table = ConsoleSessionTable(idleTimeout: .seconds(100), lifetime: .seconds(1000), capacity: 100,
            perIdentity: 2)
        let flooder = Identity.principal("flooder", login: .secret(sha256: "x"))
        func add(_ id: String, _ identity: Identity, at second: Int) {
            let instant = start + .seconds(second)
            table.insert(ConsoleSession(id: id, identity: identity, csrf: "c", created: instant, lastUsed: instant),
                at: instant)
        }
        add("other", .principal("other", login: .secret(sha256: "y")), at: 0)
        add("f1", flooder, at: 1)
        add("f2", flooder, at: 2)
        _ = table.use("f1", at: start + .seconds(3))
        for second in 4..<10 { add("f\(second)", flooder, at: second) }
        #expect(Set(table.sessions.keys) == ["other", "f8", "f9"])
        #expect(ConsoleSessions.perIdentity == 100)
    }

    @Test("a live tail ends with an UNAUTHENTICATED error frame when its session is logged out")
    func tailEndsAtLogout() async throws {
        let authority = FakeAuthority(requiresAuthentication: true,
            tokens: ["reader.s3cret": .principal("reader", login: .secret(sha256: "y"))])
        let data = FakeData(topics: ["news.sport": []])
        let timing = ConsoleEndpoint.Timing(keepAlive: .milliseconds(20))
        try await withEndpoint(data: data, authority: authority, timing: timing) { _, port in
            let json = ("Content-Type", "application/json")
            let login = try await fetch(port, .POST, "/api/login", headers: [json], body: #"{"token":"reader.s3cret"}"#)
            let cookie = ("Cookie", try #require(login.cookie))
            let csrf = try login.decode(SessionJSON.self).csrf
            try await TestHTTP.with(port: port) { http in
                try await http.send(.GET, "/api/topics/news.sport/tail", headers: [cookie])
                #expect(try await http.head()?.status == .ok)
                var text = ""
                _ = try await http.frames(1, into: &text)  // a keep-alive: the tail runs
                let logout = try await fetch(port, .POST, "/api/logout", headers: [cookie, ("X-Telex-CSRF", csrf)])
                #expect(logout.status == .noContent)
                let frames = try await http.frames(100, into: &text)
                let last = try #require(frames.last)
                #expect(last.hasPrefix("event: error\ndata: "))
                let error = try JSONDecoder().decode(ErrorJSON.self, from: Data(last.dropFirst("event: error\ndata: ".count).utf8))
                #expect(error.error.code == "UNAUTHENTICATED")
                #expect(await http.isClosedByServer())
            }
            #expect(data.tails.first?.isClosed == true)
        }
    }

    @Test("a login while the peer's backoff runs is 401 at once with Retry-After in whole seconds")
    func loginBackoffRetryAfter() async throws {
        var authority = FakeAuthority(requiresAuthentication: true,
            tokens: ["reader.s3cret": .principal("reader", login: .secret(sha256: "y"))])
        authority.loginWait = .milliseconds(2500)
        try await withEndpoint(authority: authority) { _, port in
            let refused = try await fetch(port, .POST, "/api/login", headers: [("Content-Type", "application/json")],
                body: #"{"token":"reader.s3cret"}"#)
            #expect(refused.status == .unauthorized)
            #expect(refused.errorCode == "AUTHENTICATION_FAILED")
            #expect(refused.errorMessage == "too many failed logins from this address; wait 3 s")
            #expect(refused.headers.first(name: "Retry-After") == "3")
            #expect(refused.cookie == nil)
        }
    }
}
