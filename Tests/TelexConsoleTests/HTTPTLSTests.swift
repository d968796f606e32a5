import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import TelexAuth
import TelexProtocol
import TelexServer
import Testing

@testable import TelexConsole

/// A self-signed certificate for 127.0.0.1 made by the `openssl` command (CI installs it, as for the broker's TLS
/// tests), valid for two days.
private func makeCertificate(in directory: String) throws -> ServerTLSConfiguration {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = [
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", directory + "/console.key", "-out", directory + "/console.pem", "-days", "2",
        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
    ]
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw TelexError(.internalError, "openssl req exited with \(process.terminationStatus)")
    }
    return ServerTLSConfiguration(certificateChainPath: directory + "/console.pem", privateKeyPath: directory + "/console.key")
}

@Suite("Console over HTTPS", .timeLimit(.minutes(1)))
struct HTTPTLSTests {
    @Test("with the broker's TLS the console speaks HTTPS only, and its session cookie is Secure")
    func https() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("telex-console-tls-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let tls = try makeCertificate(in: directory)
        let authority = FakeAuthority(requiresAuthentication: true, tokens: ["desk.secret": .sharedToken])
        var logger = Logger(label: "telex.test.console")
        logger.logLevel = .critical
        let configuration = ConsoleConfiguration(host: "127.0.0.1", port: 0)
        let bound = AsyncStream<Int>.makeStream()
        let endpoint = ConsoleEndpoint(
            configuration: configuration, tls: tls, authority: authority, data: FakeData(),
            sessions: ConsoleSessions(configuration: configuration), timing: ConsoleEndpoint.Timing(), logger: logger,
            onBound: { bound.continuation.yield($0) })
        let running = Task { try await endpoint.run() }
        defer { running.cancel() }
        var ports = bound.stream.makeAsyncIterator()
        let port = try #require(await ports.next())

        let client = HTTPClient(configuration: HTTPClient.Configuration(certificateVerification: .none))
        do {
            var login = HTTPClientRequest(url: "https://127.0.0.1:\(port)/api/login")
            login.method = .POST
            login.headers.add(name: "Content-Type", value: "application/json")
            login.body = .bytes(ByteBuffer(string: #"{"token":"desk.secret"}"#))
            let response = try await client.execute(login, timeout: .seconds(10))
            #expect(response.status == .ok)
            let cookie = try #require(response.headers.first(name: "Set-Cookie"))
            #expect(cookie.hasSuffix("; HttpOnly; SameSite=Strict; Path=/; Secure"), "\(cookie)")
            #expect(response.headers.first(name: "X-Frame-Options") == "DENY")
            let body = try await response.body.collect(upTo: 1 << 16)
            #expect(try JSONDecoder().decode(SessionJSON.self, from: Data(body.readableBytesView)).principal == "auth-token")
        } catch {
            try await client.shutdown()
            throw error
        }
        try await client.shutdown()

        // Plain HTTP to the TLS port gets no HTTP answer.
        await #expect(throws: (any Error).self) {
            _ = try await TestHTTP.with(port: port) { try await $0.request(.GET, "/") }
        }
        running.cancel()
        try await running.value
    }
}
