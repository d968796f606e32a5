import Foundation
import Logging
import NIOHTTP1
import TelexAuth
import TelexProtocol
import TelexServer
import Testing

@testable import TelexConsole

/// A real broker on 127.0.0.1:0 with a users file holding an admin and a reader, and its console (public init) over
/// a fake data source; both stopped afterwards.
private func withBrokerConsole<T: Sendable>(
    _ body: (_ port: Int, _ adminToken: String, _ readerToken: String) async throws -> T
) async throws -> T {
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
    configuration.auth.failureDelay = .milliseconds(1)
    configuration.auth.maxFailureDelay = .milliseconds(2)
    var logger = Logger(label: "telex.test.console")
    logger.logLevel = .warning
    let server = TelexServer(configuration: configuration, logger: logger)
    try await server.start()
    let bound = AsyncStream<Int>.makeStream()
    let endpoint = ConsoleEndpoint(
        configuration: ConsoleConfiguration(host: "127.0.0.1", port: 0), tls: nil, server: server, data: FakeData(),
        logger: logger, onBound: { bound.continuation.yield($0) })
    let running = Task { try await endpoint.run() }
    do {
        var ports = bound.stream.makeAsyncIterator()
        guard let port = await ports.next() else { throw TelexError(.internalError, "the console did not bind") }
        let result = try await body(port, adminToken, readerToken)
        running.cancel()
        try await running.value
        try await server.shutdown()
        return result
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

    @Test("a wrong token is 401 with the broker's reason; a right one a cookie session with the principal's rights")
    func login() async throws {
        try await withBrokerConsole { port, adminToken, readerToken in
            try await TestHTTP.with(port: port) { http in
                let none = try await http.request(.GET, "/api/session")
                #expect(none.status == .unauthorized)
                #expect(none.errorCode == "UNAUTHENTICATED")

                let name = String(adminToken.prefix(while: { $0 != "." }))
                let wrong = try await http.request(.POST, "/api/login", headers: [json],
                    body: #"{"token":"\#(name).not-the-secret"}"#)
                #expect(wrong.status == .unauthorized)
                #expect(wrong.errorCode == "AUTHENTICATION_FAILED")
                #expect(wrong.errorMessage?.isEmpty == false)
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
            }
        }
    }

    @Test("a logged-out session is forgotten: 401 afterwards, also for the live tail")
    func logout() async throws {
        try await withBrokerConsole { port, adminToken, _ in
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
}
