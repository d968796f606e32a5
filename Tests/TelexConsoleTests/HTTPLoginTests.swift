import Foundation
import Logging
import NIOHTTP1
import TelexAuth
import TelexProtocol
import TelexServer
import Testing

@testable import TelexConsole

/// A real broker on 127.0.0.1:0 with a users file holding an admin and a reader, an audit log, and its console
/// (public init) over the broker's data source, or a fake one; both stopped afterwards. Returns `body`'s result and
/// the audit log's lines (read after the broker stopped).
private func withBrokerConsole<T: Sendable>(
    realData: Bool = false, failureDelay: Duration = .milliseconds(1),
    _ body: (_ port: Int, _ adminToken: String, _ readerToken: String, _ server: TelexServer) async throws -> T
) async throws -> (result: T, audit: [String]) {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("telex-console-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let usersFile = directory + "/users.json"
    let adminToken = try UsersAdministration.add(
        file: usersFile, name: "night-editor", publish: ["news.>"], subscribe: ["news.>"], admin: true)
    let readerToken = try UsersAdministration.add(
        file: usersFile, name: "search-indexer", publish: [], subscribe: ["news.sport.>"], consumers: ["indexer"])
    var configuration = ServerConfiguration(port: 0, dataDirectory: directory + "/data", eventLoopThreads: 1)
    configuration.auth.usersFile = usersFile
    configuration.auth.auditLogFile = directory + "/audit.log"
    configuration.auth.failureDelay = failureDelay
    configuration.auth.maxFailureDelay = failureDelay * 2
    var logger = Logger(label: "telex.test.console")
    logger.logLevel = .critical
    let server = TelexServer(configuration: configuration, logger: logger)
    try await server.start()
    let bound = AsyncStream<Int>.makeStream()
    let consoleConfiguration = ConsoleConfiguration(host: "127.0.0.1", port: 0)
    let data: any ConsoleDataSource = realData
        ? BrokerConsoleData(server: server, configuration: consoleConfiguration, logger: logger) : FakeData()
    let endpoint = ConsoleEndpoint(
        configuration: consoleConfiguration, tls: nil, server: server, data: data,
        logger: logger, onBound: { bound.continuation.yield($0) })
    let running = Task { try await endpoint.run() }
    do {
        var ports = bound.stream.makeAsyncIterator()
        guard let port = await ports.next() else { throw TelexError(.internalError, "the console did not bind") }
        let result = try await body(port, adminToken, readerToken, server)
        running.cancel()
        try await running.value
        try await server.shutdown()
        let audit = (try? String(contentsOfFile: directory + "/audit.log", encoding: .utf8)) ?? ""
        return (result, audit.split(separator: "\n").map(String.init))
    } catch {
        running.cancel()
        _ = try? await running.value
        try? await server.shutdown()
        throw error
    }
}

@Suite("Console login against a real broker", .timeLimit(.minutes(1)))
struct HTTPLoginTests {
    let json = ("Content-Type", "application/json")

    @Test("a wrong token is 401 saying only that it was not accepted; a right one a session; refusals are audited")
    func login() async throws {
        let (_, audit) = try await withBrokerConsole(realData: true) { port, adminToken, readerToken, _ in
            try await TestHTTP.with(port: port) { http in
                let none = try await http.request(.GET, "/api/session")
                #expect(none.status == .unauthorized)
                #expect(none.errorCode == "UNAUTHENTICATED")

                let name = String(adminToken.prefix(while: { $0 != "." }))
                let wrong = try await http.request(.POST, "/api/login", headers: [json],
                    body: #"{"token":"\#(name).not-the-secret"}"#)
                #expect(wrong.status == .unauthorized)
                #expect(wrong.errorCode == "AUTHENTICATION_FAILED")
                #expect(wrong.errorMessage == "the token was not accepted", "not whether the principal exists")
                #expect(wrong.errorMessage?.contains("not-the-secret") == false, "the secret is not echoed")
                #expect(wrong.headers.first(name: "Set-Cookie") == nil)
                expectSecurityHeaders(wrong)

                let admin = try await http.request(.POST, "/api/login", headers: [json], body: #"{"token":"\#(adminToken)"}"#)
                #expect(admin.status == .ok)
                let cookie = try #require(admin.cookie)
                #expect(cookie.hasPrefix("telex_session="))
                #expect(ConsoleSessions.isToken(String(cookie.dropFirst("telex_session=".count))))
                let setCookie = admin.headers.first(name: "Set-Cookie") ?? ""
                #expect(setCookie.contains("HttpOnly") && setCookie.contains("SameSite=Strict") && setCookie.contains("Path=/"))
                #expect(!setCookie.contains("Secure"), "no Secure flag over plain HTTP")
                let session = try admin.decode(SessionJSON.self)
                #expect(session.principal == "night-editor")
                #expect(session.admin)
                #expect(session.authRequired)
                #expect(!admin.text.contains(adminToken), "the token is never sent back")
                let again = try await http.request(.GET, "/api/session", headers: [("Cookie", cookie)])
                #expect(try again.decode(SessionJSON.self) == session)

                let reader = try await http.request(.POST, "/api/login", headers: [json], body: #"{"token":"\#(readerToken)"}"#)
                let readerSession = try reader.decode(SessionJSON.self)
                #expect(readerSession.principal == "search-indexer")
                #expect(!readerSession.admin)
                let refused = try await http.request(.POST, "/api/consumers/indexer/reset",
                    headers: [json, ("Cookie", try #require(reader.cookie)), ("X-Telex-CSRF", readerSession.csrf)],
                    body: #"{"to":"beginning"}"#)
                #expect(refused.status == .forbidden)
                #expect(refused.errorCode == "NOT_AUTHORIZED")
                // A consumer it may not even use: the admin check (audited) comes before that one.
                let other = try await http.request(.POST, "/api/consumers/politics-feed/reset",
                    headers: [json, ("Cookie", try #require(reader.cookie)), ("X-Telex-CSRF", readerSession.csrf)],
                    body: #"{"to":"beginning"}"#)
                #expect(other.status == .forbidden)
                #expect(other.errorMessage?.contains("not an admin principal") == true)
            }
        }
        // The refused login names its reason in the audit log; the refused reset is audited as the server's refusal.
        #expect(audit.contains { $0.contains("authentication_failed") && $0.contains("console login") })
        #expect(audit.contains {
            $0.contains("authorization_refused") && $0.contains("console reset-consumer")
                && $0.contains("search-indexer") && $0.contains("\"indexer\"")
        })
        #expect(audit.contains { $0.contains("authorization_refused") && $0.contains("\"politics-feed\"") })
    }

    @Test("a logged-out session is forgotten: 401 afterwards, also for the live tail")
    func logout() async throws {
        _ = try await withBrokerConsole { port, adminToken, _, _ in
            try await TestHTTP.with(port: port) { http in
                let admin = try await http.request(.POST, "/api/login", headers: [json], body: #"{"token":"\#(adminToken)"}"#)
                let cookie = ("Cookie", try #require(admin.cookie))
                let session = try admin.decode(SessionJSON.self)
                #expect(try await http.request(.GET, "/api/overview", headers: [cookie]).status == .ok)
                let noCSRF = try await http.request(.POST, "/api/logout", headers: [cookie])
                #expect(noCSRF.status == .forbidden)
                #expect(noCSRF.errorCode == "CSRF")
                let logout = try await http.request(.POST, "/api/logout", headers: [cookie, ("X-Telex-CSRF", session.csrf)])
                #expect(logout.status == .noContent)
                for path in ["/api/session", "/api/overview", "/api/topics", "/api/topics/news.sport/tail"] {
                    let after = try await http.request(.GET, path, headers: [cookie])
                    #expect(after.status == .unauthorized, "\(path)")
                    #expect(after.errorCode == "UNAUTHENTICATED", "\(path)")
                }
            }
        }
    }

    @Test("while a peer's login backoff runs its logins are refused at once, the token unchecked")
    func backoffRefusesParallelGuesses() async throws {
        _ = try await withBrokerConsole(failureDelay: .seconds(30)) { _, adminToken, _, server in
            let peer = "192.0.2.7"
            let name = String(adminToken.prefix(while: { $0 != "." }))
            // The first failure earns no delay; the second one 30 s, which its answer waits out.
            guard case .rejected = await server.consoleLogin(token: "\(name).wrong", peer: peer) else {
                Issue.record("a wrong token was accepted")
                return
            }
            #expect(server.consoleLoginWait(peer: peer) == nil)
            let second = Task { await server.consoleLogin(token: "\(name).wrong-again", peer: peer) }
            while server.consoleLoginWait(peer: peer) == nil { await Task.yield() }
            // A parallel guess, even the right token, is refused without being checked.
            let parallel = await server.consoleLogin(token: adminToken, peer: peer)
            guard case .waiting(let wait) = parallel else {
                Issue.record("a login during the backoff was checked: \(parallel)")
                return
            }
            #expect(wait > .zero && wait <= .seconds(30))
            #expect(TelexServer.consoleLoginWaitReason(wait).hasPrefix("too many failed logins from this address; wait "))
            // Another peer is not held up.
            guard case .accepted = await server.consoleLogin(token: adminToken, peer: "192.0.2.8") else {
                Issue.record("another peer's login was refused")
                return
            }
            second.cancel()
            _ = await second.value
        }
    }

    @Test("parallel logins arriving as a peer's wait ends get one guess between them")
    func parallelLoginsClaimOneGuess() async throws {
        _ = try await withBrokerConsole(failureDelay: .seconds(30)) { _, adminToken, _, server in
            let peer = "192.0.2.9"
            let name = String(adminToken.prefix(while: { $0 != "." }))
            // A first failure earns no delay: the next guess may be checked at once, but only one of 32.
            guard case .rejected = await server.consoleLogin(token: "\(name).wrong", peer: peer) else {
                Issue.record("a wrong token was accepted")
                return
            }
            let (checked, waiting) = await withTaskGroup(of: ConsoleLoginOutcome.self) { group in
                for attempt in 0..<32 {
                    group.addTask { await server.consoleLogin(token: "\(name).guess-\(attempt)", peer: peer) }
                }
                var checked = 0
                var waiting = 0
                for await outcome in group {
                    if case .waiting = outcome { waiting += 1 } else { checked += 1 }
                    // The 31 refused at once are in; the checked guess sleeps out its 30 s delay: end it.
                    if waiting == 31 { group.cancelAll() }
                }
                return (checked, waiting)
            }
            #expect(checked == 1)
            #expect(waiting == 31)
        }
    }

    @Test("a backoff claim is refused while another of the peer's attempts is checked or its delay runs")
    func claim() {
        let backoff = LoginBackoff(baseDelay: .seconds(2), maxDelay: .seconds(8))
        let start = ContinuousClock.now
        #expect(backoff.claim(peer: "p", now: start) == nil)
        #expect(backoff.claim(peer: "p", now: start) == .seconds(2))
        #expect(backoff.claim(peer: "q", now: start) == nil)
        #expect(backoff.failed(peer: "p", now: start) == .zero)
        #expect(backoff.claim(peer: "p", now: start) == nil)
        // In progress after one failure: a failure now would earn 2 s.
        #expect(backoff.claim(peer: "p", now: start) == .seconds(2))
        #expect(backoff.failed(peer: "p", now: start) == .seconds(2))
        #expect(backoff.claim(peer: "p", now: start + .milliseconds(500)) == .milliseconds(1500))
        #expect(backoff.claim(peer: "p", now: start + .seconds(2)) == nil)
        #expect(backoff.claim(peer: "p", now: start + .seconds(2)) == .seconds(4))
        // A claim never answered lapses after maxDelay.
        #expect(backoff.claim(peer: "p", now: start + .seconds(10)) == nil)
        backoff.succeeded(peer: "p")
        #expect(backoff.claim(peer: "p", now: start) == nil)
        #expect(backoff.count == 0)
    }

    @Test("whether logins are needed comes from the configuration, before the broker serves")
    func requiresAuthenticationBeforeServing() async throws {
        var logger = Logger(label: "telex.test.console")
        logger.logLevel = .critical
        var open = ServerConfiguration(port: 0, dataDirectory: "/nonexistent", eventLoopThreads: 1)
        var token = open
        token.authToken = "secret"
        var users = open
        users.auth.usersFile = "/nonexistent/users.json"
        open.authToken = nil
        for (configuration, expected) in [(open, false), (token, true), (users, true)] {
            let server = TelexServer(configuration: configuration, logger: logger)
            #expect(server.requiresAuthentication == expected)
            try? await server.shutdown()
        }
    }

    @Test("a login while the broker is not serving is 503 SHUTTING_DOWN, not a refusal: unchecked, unaudited, no backoff")
    func loginBeforeServing() async throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("telex-console-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var logger = Logger(label: "telex.test.console")
        logger.logLevel = .critical
        var configuration = ServerConfiguration(port: 0, dataDirectory: directory + "/data", eventLoopThreads: 1)
        configuration.authToken = "secret"
        configuration.auth.auditLogFile = directory + "/audit.log"
        // Never started: as while `start()` recovers the topics.
        let server = TelexServer(configuration: configuration, logger: logger)
        #expect(await server.consoleLogin(token: "secret", peer: "192.0.2.9") == .notServing)

        let bound = AsyncStream<Int>.makeStream()
        let endpoint = ConsoleEndpoint(
            configuration: ConsoleConfiguration(host: "127.0.0.1", port: 0), tls: nil, server: server,
            data: FakeData(), logger: logger, onBound: { bound.continuation.yield($0) })
        let running = Task { try await endpoint.run() }
        defer { running.cancel() }
        var ports = bound.stream.makeAsyncIterator()
        let port = try #require(await ports.next())
        try await TestHTTP.with(port: port) { http in
            for _ in 0..<2 {
                let answer = try await http.request(.POST, "/api/login", headers: [json], body: #"{"token":"secret"}"#)
                #expect(answer.status == .serviceUnavailable)
                #expect(answer.errorCode == "SHUTTING_DOWN")
                #expect(answer.errorMessage?.contains("starting or stopping") == true)
                #expect(answer.headers.first(name: "Set-Cookie") == nil)
                #expect(answer.headers.first(name: "Retry-After") == nil, "no backoff was earned")
            }
        }
        running.cancel()
        try await running.value
        #expect(server.consoleLoginWait(peer: "127.0.0.1") == nil)
        #expect(!FileManager.default.fileExists(atPath: directory + "/audit.log"), "nothing audited")
        try? await server.shutdown()
    }

    @Test("the backoff's remaining wait: none after a first failure, the delay less the time since the last failure")
    func remainingWait() {
        let backoff = LoginBackoff(baseDelay: .seconds(2), maxDelay: .seconds(8))
        let start = ContinuousClock.now
        #expect(backoff.remainingWait(peer: "p", now: start) == nil)
        #expect(backoff.failed(peer: "p", now: start) == .zero)
        #expect(backoff.remainingWait(peer: "p", now: start) == nil)
        #expect(backoff.failed(peer: "p", now: start) == .seconds(2))
        #expect(backoff.remainingWait(peer: "p", now: start + .milliseconds(500)) == .milliseconds(1500))
        #expect(backoff.remainingWait(peer: "p", now: start + .seconds(2)) == nil)
        #expect(backoff.remainingWait(peer: "q", now: start) == nil)
        backoff.succeeded(peer: "p")
        #expect(backoff.remainingWait(peer: "p", now: start) == nil)
        #expect(TelexServer.wholeSeconds(.milliseconds(1500)) == 2)
        #expect(TelexServer.wholeSeconds(.milliseconds(1)) == 1)
        #expect(TelexServer.wholeSeconds(.seconds(3)) == 3)
    }
}
