import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycleTestKit
import TelexAuth
import TelexServer
import Testing

@testable import TelexConsole

/// A login that waits until the test lets it through, so that a request is in progress when the shutdown begins.
private struct GatedAuthority: ConsoleAuthority {
    let gate = AsyncStream<Void>.makeStream()
    let entered = AsyncStream<Void>.makeStream()
    var requiresAuthentication: Bool { true }

    func consoleLogin(token: String, peer: String) async -> ConsoleLoginOutcome {
        entered.continuation.yield()
        for await _ in gate.stream { break }
        return .accepted(.sharedToken)
    }

    func isAdmin(_ identity: Identity) -> Bool { true }
}

@Suite("Console graceful shutdown", .timeLimit(.minutes(1)))
struct HTTPShutdownTests {
    @Test("a graceful shutdown closes the listener, idle connections and tails, and answers requests in progress")
    func gracefulShutdown() async throws {
        let data = FakeData(topics: ["news.sport": []])
        let authority = GatedAuthority()
        var logger = Logger(label: "telex.test.console")
        logger.logLevel = .warning
        let bound = AsyncStream<Int>.makeStream()
        let endpoint = ConsoleEndpoint(
            configuration: ConsoleConfiguration(host: "127.0.0.1", port: 0), tls: nil, authority: authority,
            data: data, sessions: ConsoleSessions(configuration: ConsoleConfiguration(host: "127.0.0.1", port: 0)),
            timing: ConsoleEndpoint.Timing(), logger: logger, onBound: { bound.continuation.yield($0) })
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await endpoint.run() }
                var ports = bound.stream.makeAsyncIterator()
                let port = try #require(await ports.next())

                let idle = try await TestHTTP.connect(port: port)
                let tailClient = try await TestHTTP.connect(port: port)
                let busy = try await TestHTTP.connect(port: port)
                try await idle.executeThenClose { idleInbound, idleOutbound in
                    try await tailClient.executeThenClose { tailInbound, tailOutbound in
                        try await busy.executeThenClose { busyInbound, busyOutbound in
                            var idleHTTP = TestHTTP(parts: idleInbound.makeAsyncIterator(), outbound: idleOutbound,
                                channel: idle.channel)
                            #expect(try await idleHTTP.request(.GET, "/").status == .ok)

                            var tailHTTP = TestHTTP(parts: tailInbound.makeAsyncIterator(), outbound: tailOutbound,
                                channel: tailClient.channel)
                            // Without a session the tail is refused; the gated login lets the test in first.
                            var busyHTTP = TestHTTP(parts: busyInbound.makeAsyncIterator(), outbound: busyOutbound,
                                channel: busy.channel)
                            try await busyHTTP.send(.POST, "/api/login", headers: [("Content-Type", "application/json")],
                                body: #"{"token":"t"}"#)
                            var entered = authority.entered.stream.makeAsyncIterator()
                            _ = await entered.next()
                            let session = endpoint.sessions.create(identity: .sharedToken)
                            try await tailHTTP.send(.GET, "/api/topics/news.sport/tail",
                                headers: [("Cookie", "telex_session=\(session.id)")])
                            #expect(try await tailHTTP.head()?.status == .ok)
                            while data.tails.isEmpty { try await Task.sleep(for: .milliseconds(5)) }

                            trigger.triggerGracefulShutdown()
                            await data.tails[0].waitUntilClosed()
                            #expect(await tailHTTP.isClosedByServer())
                            #expect(await idleHTTP.isClosedByServer())
                            // The login in progress still gets its answer, and its connection closes after it.
                            authority.gate.continuation.yield()
                            let login = try await busyHTTP.response()
                            #expect(login.status == .ok)
                            #expect(login.headers.first(name: "Connection") == "close")
                            #expect(await busyHTTP.isClosedByServer())
                        }
                    }
                }
                try await tasks.waitForAll()
                #expect(endpoint.localPort == nil)
                await #expect(throws: (any Error).self) { try await TestHTTP.connect(port: port) }
            }
        }
    }

    /// An endpoint with `authority` and `timing`, run under a graceful-shutdown trigger: `body` gets it, its port
    /// and the trigger; afterwards run() must have returned.
    private func withGracefulEndpoint(
        authority: any ConsoleAuthority, timing: ConsoleEndpoint.Timing,
        _ body: @escaping (ConsoleEndpoint, Int, GracefulShutdownTestTrigger) async throws -> Void
    ) async throws {
        var logger = Logger(label: "telex.test.console")
        logger.logLevel = .critical
        let bound = AsyncStream<Int>.makeStream()
        let configuration = ConsoleConfiguration(host: "127.0.0.1", port: 0)
        let endpoint = ConsoleEndpoint(
            configuration: configuration, tls: nil, authority: authority, data: FakeData(),
            sessions: ConsoleSessions(configuration: configuration), timing: timing, logger: logger,
            onBound: { bound.continuation.yield($0) })
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await endpoint.run() }
                var ports = bound.stream.makeAsyncIterator()
                let port = try #require(await ports.next())
                try await body(endpoint, port, trigger)
                try await tasks.waitForAll()
                #expect(endpoint.localPort == nil)
            }
        }
    }

    @Test("a graceful shutdown does not wait for a request whose body is still arriving")
    func slowUploader() async throws {
        let timing = ConsoleEndpoint.Timing(
            idle: .seconds(600), requestTimeout: .seconds(600), keepAliveIdle: .seconds(600), shutdownGrace: .seconds(600))
        try await withGracefulEndpoint(authority: GatedAuthority(), timing: timing) { endpoint, port, trigger in
            let uploader = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: "127.0.0.1", port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
            try await uploader.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(string:
                    "POST /api/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        + "Content-Length: 100\r\n\r\n{\"token\":"))
                while endpoint.connections.connectionCount == 0 { try await Task.sleep(for: .milliseconds(5)) }
                trigger.triggerGracefulShutdown()
                do {
                    for try await _ in inbound {}
                } catch {}
            }
        }
    }

    @Test("after the shutdown grace, connections still answering are closed and run() returns")
    func graceEnds() async throws {
        let authority = GatedAuthority()
        var timing = ConsoleEndpoint.Timing()
        timing.shutdownGrace = .milliseconds(100)
        try await withGracefulEndpoint(authority: authority, timing: timing) { _, port, trigger in
            try await TestHTTP.with(port: port) { http in
                try await http.send(.POST, "/api/login", headers: [("Content-Type", "application/json")],
                    body: #"{"token":"t"}"#)
                var entered = authority.entered.stream.makeAsyncIterator()
                _ = await entered.next()
                trigger.triggerGracefulShutdown()
                // The gate never opens: the login is still in progress when the grace ends.
                #expect(await http.isClosedByServer())
            }
        }
    }
}
