import Foundation
import InMemoryLogging
import Logging
import NIOCore
import NIOPosix
import TelexClient
import TelexProtocol
import TelexServer
import Testing

/// A broker with TLS over test certificates: CA `ca` signs the server certificate `server` and the client
/// certificate `client` (CN `sports-desk`); CA `other` signs `stranger` (CN `stranger`).
private struct TLSFixture {
    let certificates: TestCertificates
    let directory: String

    init(directory: String) throws {
        self.directory = directory
        certificates = try TestCertificates(directory: directory)
        try certificates.makeCA("ca")
        try certificates.makeCA("other")
        try certificates.makeServer("server", signedBy: "ca")
        try certificates.makeLeaf("client", commonName: "sports-desk", signedBy: "ca")
        try certificates.makeLeaf("stranger", commonName: "stranger", signedBy: "other")
    }

    func serverTLS(
        clientAuthentication: ServerTLSConfiguration.ClientAuthentication = .none
    ) -> ServerTLSConfiguration {
        ServerTLSConfiguration(
            certificateChainPath: certificates.certificate("server"), privateKeyPath: certificates.key("server"),
            clientCAPath: clientAuthentication == .none ? nil : certificates.certificate("ca"),
            clientAuthentication: clientAuthentication)
    }

    func clientTLS(
        trusting ca: String = "ca", client: String? = nil, serverName: String? = nil
    ) -> ClientTLSConfiguration {
        ClientTLSConfiguration(
            trustRoots: .file(certificates.certificate(ca)), certificateChainPath: client.map(certificates.certificate),
            privateKeyPath: client.map(certificates.key), serverName: serverName)
    }
}

/// Runs `body` with a TLS fixture and a data directory, both temporary.
private func withTLSFixture<T>(_ body: (TLSFixture, String) async throws -> T) async throws -> T {
    try await withTemporaryDirectory { directory in
        let certificates = "\(directory)/certificates"
        try FileManager.default.createDirectory(atPath: certificates, withIntermediateDirectories: true)
        return try await body(try TLSFixture(directory: certificates), "\(directory)/data")
    }
}

/// A started broker whose log is kept in `logs` (debug and up).
private func startLoggedServer(
    directory: String, logs: InMemoryLogHandler, configure: (inout ServerConfiguration) -> Void
) async throws -> TelexServer {
    var configuration = ServerConfiguration(port: 0, dataDirectory: directory, eventLoopThreads: 2)
    configure(&configuration)
    var handler = logs
    handler.logLevel = .debug
    let server = TelexServer(configuration: configuration, logger: Logger(label: "telex.test.tls") { _ in handler })
    try await server.start()
    return server
}

/// A client configuration for `server` that fails fast: one connect attempt, a 3-second connect timeout.
private func fastFailingConfiguration(_ server: TelexServer, tls: ClientTLSConfiguration?) -> ClientConfiguration {
    var configuration = clientConfiguration(server)
    configuration.tls = tls
    configuration.connectTimeout = .seconds(3)
    return configuration
}

/// The error `connect()` fails with, and how long it took.
private func connectError(_ configuration: ClientConfiguration) async throws -> (TelexError, Duration) {
    let clock = ContinuousClock()
    let start = clock.now
    do {
        try await TelexClient.withClient(configuration: configuration) { try await $0.connect() }
    } catch let error as TelexError {
        return (error, clock.now - start)
    }
    throw TelexError(.internalError, "connecting to \(configuration.host):\(configuration.port) succeeded")
}

/// A TLS port on 127.0.0.1 that refuses every client as it accepts it: with `alert`, a fatal handshake_failure
/// alert and the end of its output; else a plain close. The client's TCP connect succeeds, and its channel may
/// be torn down before the client sees the connect complete.
private func withRefusingServer<T>(alert: Bool, _ body: (Int) async throws -> T) async throws -> T {
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(TLSRefuser(alert: alert))
            }
        }
        .bind(host: "127.0.0.1", port: 0).get()
    do {
        let result = try await body(channel.localAddress!.port!)
        try await channel.close()
        return result
    } catch {
        try? await channel.close()
        throw error
    }
}

/// The accepted side of `withRefusingServer`.
private final class TLSRefuser: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// A TLS record holding a fatal (2) handshake_failure (40) alert.
    private static let handshakeFailureAlert: [UInt8] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]
    private let alert: Bool

    init(alert: Bool) {
        self.alert = alert
    }

    func channelActive(context: ChannelHandlerContext) {
        guard alert else { return context.close(promise: nil) }
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: Self.handshakeFailureAlert)), promise: nil)
        // Only the output: the ClientHello is then read and dropped, not answered with a reset.
        context.close(mode: .output, promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

@Suite("TLS", .serialized, .timeLimit(.minutes(1)))
struct TLSTests {
    @Test("publish, live delivery and replay over TLS, in order across many reads and topics")
    func endToEnd() async throws {
        try await withTLSFixture { fixture, data in
            let tls = fixture.serverTLS()
            let server = try await startServer(directory: data) {
                $0.tls = tls
                $0.maxDeliverBytes = 4096  // many DELIVER frames, so many reads on the thread pool
            }
            var configuration = clientConfiguration(server)
            configuration.tls = fixture.clientTLS()
            do {
                try await TelexClient.withClient(configuration: configuration) { client in
                    try await client.connect()
                    let live = try await client.subscribe("news.>", from: .end)
                    for topic in ["news.world", "news.sport", "news.china"] {
                        let acks = try await client.publish(plainRecords(0..<400), to: topic)
                        #expect(acks.first?.baseOffset == 0)
                    }
                    let liveRecords = try await collect(live, count: 1200)
                    #expect(liveRecords.count == 1200)
                    await live.cancel()

                    let replay = try await client.subscribe("news.>", from: .beginning, untilCaughtUp: true)
                    var offsets: [String: [Int64]] = [:]
                    for try await record in replay {
                        offsets[record.topic, default: []].append(record.offset)
                        #expect(String(buffer: record.record.key) == "key-\(record.offset)")
                    }
                    for topic in ["news.world", "news.sport", "news.china"] {
                        #expect(offsets[topic] == Array(0..<400), "\(topic)")
                    }
                }
                try await server.shutdown()
            } catch {
                try? await server.shutdown()
                throw error
            }
        }
    }

    @Test("mutual TLS: a client certificate from the CA is accepted and its CN reaches the connection")
    func mutualTLSAccepted() async throws {
        try await withTLSFixture { fixture, data in
            let logs = InMemoryLogHandler()
            let tls = fixture.serverTLS(clientAuthentication: .required)
            let server = try await startLoggedServer(directory: data, logs: logs) { $0.tls = tls }
            var configuration = clientConfiguration(server)
            configuration.tls = fixture.clientTLS(client: "client")
            do {
                try await TelexClient.withClient(configuration: configuration) { client in
                    let acks = try await client.publish(plainRecords(0..<3), to: "news.sport")
                    #expect(acks.map(\.baseOffset) == [0])
                }
                let connected = logs.entries.filter { $0.message.description == "client connected" }
                #expect(connected.contains { $0.metadata["peerCN"] == "sports-desk" })
                try await server.shutdown()
            } catch {
                try? await server.shutdown()
                throw error
            }
        }
    }

    @Test("mutual TLS refuses a certificate from another CA, and a missing one when required")
    func mutualTLSRejected() async throws {
        try await withTLSFixture { fixture, data in
            let tls = fixture.serverTLS(clientAuthentication: .required)
            let server = try await startServer(directory: data) { $0.tls = tls }
            do {
                for client in ["stranger", nil] {
                    let (error, elapsed) = try await connectError(
                        fastFailingConfiguration(server, tls: fixture.clientTLS(client: client)))
                    #expect(error.code == .tlsFailure, "\(client ?? "no certificate"): \(error)")
                    #expect(error.message.contains("TLS with 127.0.0.1:\(server.localPort!) failed"))
                    #expect(elapsed < .seconds(3))
                }
                try await server.shutdown()
            } catch {
                try? await server.shutdown()
                throw error
            }
        }
    }

    @Test("optional client authentication accepts clients with and without a certificate")
    func optionalClientAuthentication() async throws {
        try await withTLSFixture { fixture, data in
            let tls = fixture.serverTLS(clientAuthentication: .optional)
            let server = try await startServer(directory: data) { $0.tls = tls }
            do {
                for client in ["client", nil] {
                    var configuration = clientConfiguration(server)
                    configuration.tls = fixture.clientTLS(client: client)
                    try await TelexClient.withClient(configuration: configuration) { _ = try await $0.ping() }
                }
                let (error, _) = try await connectError(
                    fastFailingConfiguration(server, tls: fixture.clientTLS(client: "stranger")))
                #expect(error.code == .tlsFailure)
                try await server.shutdown()
            } catch {
                try? await server.shutdown()
                throw error
            }
        }
    }

    @Test("the broker's certificate must come from a trusted CA and carry the name or address connected to")
    func serverVerification() async throws {
        try await withTLSFixture { fixture, data in
            try fixture.certificates.makeLeaf(
                "named", commonName: "telex.newsroom.test", signedBy: "ca", subjectAltName: "DNS:telex.newsroom.test")
            let tls = ServerTLSConfiguration(
                certificateChainPath: fixture.certificates.certificate("named"),
                privateKeyPath: fixture.certificates.key("named"))
            let server = try await startServer(directory: data) { $0.tls = tls }
            do {
                let (untrusted, _) = try await connectError(
                    fastFailingConfiguration(
                        server, tls: fixture.clientTLS(trusting: "other", serverName: "telex.newsroom.test")))
                #expect(untrusted.code == .tlsFailure)
                let (misnamed, _) = try await connectError(fastFailingConfiguration(server, tls: fixture.clientTLS()))
                #expect(misnamed.code == .tlsFailure)
                #expect(misnamed.message.contains("valid for 127.0.0.1 (else pass --tls-server-name)"))
                var byName = clientConfiguration(server)
                byName.tls = fixture.clientTLS(serverName: "telex.newsroom.test")
                try await TelexClient.withClient(configuration: byName) { _ = try await $0.ping() }
                try await server.shutdown()
            } catch {
                try? await server.shutdown()
                throw error
            }
        }
    }

    @Test("a broker that refuses the TLS handshake as it accepts is never reported unreachable")
    func refusedAtOnce() async throws {
        try await withTLSFixture { fixture, _ in
            for alert in [true, false] {
                try await withRefusingServer(alert: alert) { port in
                    var configuration = ClientConfiguration(port: port, clientName: "integration-test")
                    configuration.tls = fixture.clientTLS()
                    configuration.connectTimeout = .seconds(3)
                    for _ in 0..<50 {
                        let (error, _) = try await connectError(configuration)
                        #expect(!error.message.contains("cannot reach"), "\(error)")
                        if alert {
                            #expect(error.code == .tlsFailure, "\(error)")
                            #expect(error.message.contains("valid for 127.0.0.1 (else pass --tls-server-name)"))
                        } else {
                            // An end of stream or a reset during the handshake, as the close happens to arrive.
                            #expect([.tlsFailure, .connectionFailed].contains(error.code), "\(error)")
                        }
                    }
                }
            }
        }
    }

    @Test("a client connecting by host name verifies that name")
    func hostName() async throws {
        try await withTLSFixture { fixture, data in
            let tls = fixture.serverTLS()
            let server = try await startServer(directory: data) { $0.tls = tls }
            do {
                var byName = clientConfiguration(server)
                byName.host = "localhost"
                byName.tls = fixture.clientTLS()
                try await TelexClient.withClient(configuration: byName) { _ = try await $0.ping() }
                try await server.shutdown()
            } catch {
                try? await server.shutdown()
                throw error
            }
        }
    }

    @Test("a plaintext client on the TLS port is closed unanswered and told to use --tls, quickly")
    func plaintextClientOnTLSPort() async throws {
        try await withTLSFixture { fixture, data in
            let tls = fixture.serverTLS()
            let server = try await startServer(directory: data) { $0.tls = tls }
            do {
                let (error, elapsed) = try await connectError(fastFailingConfiguration(server, tls: nil))
                #expect(error.code == .connectionFailed)
                #expect(error.message.contains("closed the connection without answering HELLO"))
                #expect(error.message.hasSuffix("is this a TLS port? use --tls (or --tls-ca CA)"))
                #expect(elapsed < .seconds(3))

                let raw = try RawConnection(port: server.localPort!)
                raw.send(.hello(minVersion: 1, maxVersion: 1, clientName: "raw", authToken: ByteBuffer()), requestID: 1)
                #expect(raw.waitForClose())
                #expect(raw.received.readableBytes == 0)
                try await server.shutdown()
            } catch {
                try? await server.shutdown()
                throw error
            }
        }
    }

    @Test("a TLS client on a plaintext port is told that the broker does not speak TLS there, quickly")
    func tlsClientOnPlaintextPort() async throws {
        try await withTLSFixture { fixture, data in
            let server = try await startServer(directory: data)
            do {
                let (error, elapsed) = try await connectError(
                    fastFailingConfiguration(server, tls: fixture.clientTLS()))
                #expect(error.code == .tlsFailure)
                #expect(error.message.contains("the broker does not speak TLS here"))
                #expect(elapsed < .seconds(3))
                try await server.shutdown()
            } catch {
                try? await server.shutdown()
                throw error
            }
        }
    }

    @Test("a connection that never finishes the TLS handshake, silent or trickling, is closed at the handshake timeout")
    func stalledTLSHandshake() async throws {
        try await withTLSFixture { fixture, data in
            let tls = fixture.serverTLS()
            let server = try await startServer(directory: data) {
                $0.tls = tls
                $0.limits.handshakeTimeout = .milliseconds(300)
            }
            do {
                let clock = ContinuousClock()
                let start = clock.now
                let silent = try RawConnection(port: server.localPort!)
                let trickling = try RawConnection(port: server.localPort!)
                // The start of a TLS record holding a ClientHello, one byte every 50 ms, until the broker closes.
                let hello: [UInt8] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03]
                    + [UInt8](repeating: 0x2A, count: 40)
                for byte in hello where !trickling.hasDataToRead() {
                    trickling.send(ByteBuffer(bytes: [byte]))
                    try await Task.sleep(for: .milliseconds(50))
                }
                for connection in [silent, trickling] {
                    #expect(connection.waitForClose())
                    #expect(connection.received.readableBytes == 0)
                }
                #expect(clock.now - start < .seconds(3))
                try await server.shutdown()
            } catch {
                try? await server.shutdown()
                throw error
            }
        }
    }

    @Test("over TLS, a connection beyond the maximum that never completes the handshake is closed at the timeout")
    func refusedTLSConnectionIsClosed() async throws {
        try await withTLSFixture { fixture, data in
            let tls = fixture.serverTLS()
            let server = try await startServer(directory: data) {
                $0.tls = tls
                $0.limits.maxConnections = 1
                $0.limits.handshakeTimeout = .milliseconds(300)
            }
            var configuration = clientConfiguration(server)
            configuration.tls = fixture.clientTLS()
            do {
                try await TelexClient.withClient(configuration: configuration) { client in
                    _ = try await client.ping()
                    let clock = ContinuousClock()
                    let start = clock.now
                    let refused = try RawConnection(port: server.localPort!)
                    #expect(refused.waitForClose())
                    #expect(clock.now - start < .seconds(3))
                    _ = try await client.ping()
                }
                try await server.shutdown()
            } catch {
                try? await server.shutdown()
                throw error
            }
        }
    }

    @Test("over TLS, 200 subscriptions on one connection each get their topic in order")
    func manySubscriptions() async throws {
        try await withTLSFixture { fixture, data in
            let tls = fixture.serverTLS()
            let server = try await startServer(directory: data) {
                $0.tls = tls
                $0.maxDeliverBytes = 2048  // several DELIVER frames, so several reads, per subscription
            }
            var configuration = clientConfiguration(server)
            configuration.tls = fixture.clientTLS()
            do {
                try await TelexClient.withClient(configuration: configuration) { client in
                    let topics = (0..<20).map { "news.desk\($0)" }
                    for topic in topics {
                        for first in stride(from: 0, to: 30, by: 5) {
                            _ = try await client.publish(plainRecords(first..<first + 5), to: topic)
                        }
                    }
                    var subscriptions: [(String, TelexSubscription)] = []
                    for index in 0..<200 {
                        let topic = topics[index % topics.count]
                        subscriptions.append((topic, try await client.subscribe(topic, from: .beginning, untilCaughtUp: true)))
                    }
                    try await withThrowingTaskGroup(of: (String, [Int64]).self) { group in
                        for (topic, subscription) in subscriptions {
                            group.addTask { (topic, try await subscription.reduce(into: []) { $0.append($1.offset) }) }
                        }
                        for try await (topic, offsets) in group {
                            #expect(offsets == Array(0..<30), "\(topic)")
                        }
                    }
                }
                try await server.shutdown()
            } catch {
                try? await server.shutdown()
                throw error
            }
        }
    }

    @Test("reload gives new connections the new certificate, keeps open ones, and keeps the old one on failure")
    func reload() async throws {
        try await withTLSFixture { fixture, data in
            let certificates = fixture.certificates
            try certificates.makeCA("next")
            try certificates.makeServer("next-server", signedBy: "next")
            let tls = fixture.serverTLS()
            let server = try await startServer(directory: data) { $0.tls = tls }
            var before = clientConfiguration(server)
            before.tls = fixture.clientTLS()
            var after = clientConfiguration(server)
            after.tls = fixture.clientTLS(trusting: "next")
            do {
                try await TelexClient.withClient(configuration: before) { open in
                    _ = try await open.ping()
                    try replace(certificates.certificate("server"), with: certificates.certificate("next-server"))
                    try replace(certificates.key("server"), with: certificates.key("next-server"))
                    try await server.reload()

                    _ = try await open.ping()
                    try await TelexClient.withClient(configuration: after) { _ = try await $0.ping() }
                    let (stale, _) = try await connectError(fastFailingConfiguration(server, tls: before.tls))
                    #expect(stale.code == .tlsFailure)

                    try "not a key".write(toFile: certificates.key("server"), atomically: true, encoding: .utf8)
                    await #expect(throws: TelexError.self) { try await server.reload() }
                    try await TelexClient.withClient(configuration: after) { _ = try await $0.ping() }
                    _ = try await open.ping()
                }
                try await server.shutdown()
            } catch {
                try? await server.shutdown()
                throw error
            }
        }
    }
}

private func replace(_ path: String, with source: String) throws {
    try FileManager.default.removeItem(atPath: path)
    try FileManager.default.copyItem(atPath: source, toPath: path)
}
