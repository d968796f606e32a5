import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import Prometheus
import TelexAuth
import TelexProtocol
import TelexServer
import Testing

@testable import TelexConsole

/// A self-signed certificate for 127.0.0.1 made by the `openssl` command (CI installs it, as for the broker's TLS
/// tests), valid for two days.
private func makeCertificate(in directory: String) throws -> ServerTLSConfiguration {
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
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

/// The certificate a new TLS connection to `port` is served, as PEM, read by `openssl s_client`.
private func servedCertificate(port: Int) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["openssl", "s_client", "-connect", "127.0.0.1:\(port)"]
    let output = Pipe()
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = output
    process.standardError = FileHandle.nullDevice
    try process.run()
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return try pemCertificate(in: text)
}

/// The first PEM certificate block of `text`.
private func pemCertificate(in text: String) throws -> String {
    guard let begin = text.range(of: "-----BEGIN CERTIFICATE-----"),
        let end = text.range(of: "-----END CERTIFICATE-----", range: begin.upperBound..<text.endIndex)
    else { throw TelexError(.internalError, "no certificate in: \(text.prefix(200))") }
    return String(text[begin.lowerBound..<end.upperBound])
}

@Suite("Console over HTTPS", .timeLimit(.minutes(1)))
struct HTTPTLSTests {
    @Test("with the broker's TLS the console speaks HTTPS only, and its session cookie is Secure")
    func https() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("telex-console-tls-\(UUID())").path
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

    @Test("a certificate renewed by the broker's reload is served to new console and metrics connections")
    func reloadedCertificate() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("telex-console-tls-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let tls = try makeCertificate(in: directory)
        let renewed = try makeCertificate(in: directory + "/renewed")
        var logger = Logger(label: "telex.test.console")
        logger.logLevel = .critical
        var serverConfiguration = ServerConfiguration(port: 0, dataDirectory: directory + "/data", eventLoopThreads: 1)
        serverConfiguration.tls = tls
        let server = TelexServer(configuration: serverConfiguration, logger: logger)
        try await server.start()
        let configuration = ConsoleConfiguration(host: "127.0.0.1", port: 0)
        let bound = AsyncStream<Int>.makeStream()
        let endpoint = ConsoleEndpoint(
            configuration: configuration, tls: tls, server: server, data: FakeData(), logger: logger,
            onBound: { bound.continuation.yield($0) })
        let metricsBound = AsyncStream<Int>.makeStream()
        let metrics = MetricsEndpoint(
            host: "127.0.0.1", port: 0, tls: tls, registry: PrometheusCollectorRegistry(), server: server,
            logger: logger, onBound: { metricsBound.continuation.yield($0) })
        let running = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await endpoint.run() }
                group.addTask { try await metrics.run() }
                try await group.waitForAll()
            }
        }
        do {
            var ports = bound.stream.makeAsyncIterator()
            let port = try #require(await ports.next())
            var metricsPorts = metricsBound.stream.makeAsyncIterator()
            let metricsPort = try #require(await metricsPorts.next())
            let original = try pemCertificate(in: String(contentsOfFile: tls.certificateChainPath, encoding: .utf8))
            let next = try pemCertificate(in: String(contentsOfFile: renewed.certificateChainPath, encoding: .utf8))
            #expect(try servedCertificate(port: port) == original)
            #expect(try servedCertificate(port: metricsPort) == original)

            for (path, source) in [
                (tls.certificateChainPath, renewed.certificateChainPath), (tls.privateKeyPath, renewed.privateKeyPath),
            ] {
                try FileManager.default.removeItem(atPath: path)
                try FileManager.default.copyItem(atPath: source, toPath: path)
            }
            try await server.reload()
            #expect(try servedCertificate(port: port) == next)
            #expect(try servedCertificate(port: metricsPort) == next)
        } catch {
            running.cancel()
            _ = try? await running.value
            try? await server.shutdown()
            throw error
        }
        running.cancel()
        try await running.value
        try await server.shutdown()
    }
}
