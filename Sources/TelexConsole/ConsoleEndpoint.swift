import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import ServiceLifecycle
import TelexAuth
import TelexProtocol
import TelexServer

/// What the console asks of the broker's access control. `TelexServer` in production (its login has the protocol's
/// backoff and audit); endpoint tests over a fake data source may pass a fake.
protocol ConsoleAuthority: Sendable {
    var requiresAuthentication: Bool { get }
    func consoleLogin(token: String, peer: String) async -> AuthenticationOutcome
    func isAdmin(_ identity: Identity) -> Bool
}

extension TelexServer: ConsoleAuthority {}

/// The web console: the page's files and its JSON API (README "Telex Console") over HTTP/1.1, or HTTPS with the
/// broker's certificate. A swift-service-lifecycle `Service`: `run()` binds, serves and takes the rate and lag
/// samples (`ConsoleDataSource.sample()` every `sampleInterval`) until a graceful shutdown or the task's
/// cancellation, then closes the listener, idle connections and live tails, and returns once the requests in
/// progress were answered. Tests bind port 0 and read `localPort` (or pass `onBound`).
public final class ConsoleEndpoint: Service, Sendable {
    /// Timeouts of the connections, fixed in production; tests shorten them.
    struct Timing: Sendable {
        /// A live tail sends a `: keep-alive` comment after this long without events.
        var keepAlive: Duration = .seconds(15)
        /// A connection on which nothing was read and no write completed for this long is closed: an idle
        /// keep-alive connection, or a live tail whose browser stopped taking its frames (it frees its slot).
        var idle: Duration = .seconds(60)
    }

    public let configuration: ConsoleConfiguration
    let tls: ServerTLSConfiguration?
    let authority: any ConsoleAuthority
    let data: any ConsoleDataSource
    let sessions: ConsoleSessions
    let timing: Timing
    let logger: Logger
    let connections: ConsoleConnections
    /// The CSRF token of every request when the broker needs no login: there is no session then, and any page of
    /// this origin may learn it from `/api/session` (a page of another origin cannot read that answer).
    let anonymousCSRF = ConsoleSessions.randomToken()
    private let onBound: @Sendable (Int) -> Void
    private let boundPort = NIOLockedValueBox<Int?>(nil)

    /// Serves the console of `server` with `data` on `configuration`'s address; with `tls` (the broker's
    /// `configuration.tls`), over HTTPS and with `Secure` cookies.
    public convenience init(
        configuration: ConsoleConfiguration, tls: ServerTLSConfiguration?, server: TelexServer,
        data: any ConsoleDataSource, logger: Logger, onBound: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.init(
            configuration: configuration, tls: tls, authority: server, data: data,
            sessions: ConsoleSessions(configuration: configuration), timing: Timing(), logger: logger,
            onBound: onBound)
    }

    init(
        configuration: ConsoleConfiguration, tls: ServerTLSConfiguration?, authority: any ConsoleAuthority,
        data: any ConsoleDataSource, sessions: ConsoleSessions, timing: Timing, logger: Logger,
        onBound: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.configuration = configuration
        self.tls = tls
        self.authority = authority
        self.data = data
        self.sessions = sessions
        self.timing = timing
        self.logger = logger
        self.onBound = onBound
        connections = ConsoleConnections(maxConnections: configuration.maxConnections, maxTails: configuration.maxTails)
    }

    /// The bound port while `run()` serves.
    public var localPort: Int? { boundPort.withLockedValue { $0 } }

    /// Why the console must not listen on `host`: plaintext beyond loopback without `allowPlaintext`, the broker's
    /// rule. Nil when it may. One line that says how to fix it.
    public static func plaintextRefusal(
        host: String, port: Int, tls: ServerTLSConfiguration?, allowPlaintext: Bool
    ) -> String? {
        ServerConfiguration.plaintextRefusal(
            host: host, port: port, tls: tls, allowPlaintext: allowPlaintext, doing: "serve the console")
    }

    typealias Connection = NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>

    /// Binds, serves until a graceful shutdown or the task's cancellation, then closes everything it opened.
    public func run() async throws {
        let tlsContext: NIOSSLContext?
        if let tls {
            tlsContext = try await NIOThreadPool.singleton.runIfActive { try tls.makeSSLContext() }
        } else {
            tlsContext = nil
        }
        let idle = TimeAmount(timing.idle)
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: configuration.host, port: configuration.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try Self.configurePipeline(channel, tlsContext: tlsContext, idle: idle)
                    return try Connection(wrappingChannelSynchronously: channel)
                }
            }
        let port = listener.channel.localAddress?.port ?? 0
        boundPort.withLockedValue { $0 = port }
        logger.info("console listening", metadata: [
            "address": "\(listener.channel.localAddress?.description ?? "?")", "tls": "\(tls == nil ? "off" : "on")",
        ])
        onBound(port)
        let connections = self.connections
        await withTaskCancellationOrGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { sampling in
                sampling.addTask { await self.sampleUntilCancelled() }
                await withDiscardingTaskGroup { group in
                    do {
                        try await listener.executeThenClose { inbound in
                            for try await connection in inbound {
                                guard let id = connections.admit(connection.channel) else {
                                    // Over the cap: closed unanswered (executeThenClose finishes its writer).
                                    try? await connection.executeThenClose { _, _ in }
                                    continue
                                }
                                group.addTask {
                                    await self.serve(connection, id: id)
                                    connections.release(id)
                                }
                            }
                        }
                    } catch {
                        logger.debug("console listener closed", metadata: ["error": "\(error)"])
                    }
                    // The listener can also end on its own (an accept error): stop the connections with it.
                    connections.stop()
                }
                sampling.cancelAll()
            }
        } onCancelOrGracefulShutdown: {
            listener.channel.close(promise: nil)
            connections.stop()
        }
        boundPort.withLockedValue { $0 = nil }
        logger.info("console stopped")
    }

    /// TLS, the idle timeout, HTTP/1.1 with NIO's error handling (a 400 for what does not parse) and the security
    /// headers. No pipelining assistance: each connection's task reads the next request only after answering the
    /// last one, and a live tail must see its client close while it streams (the assistance holds reads then).
    private static func configurePipeline(_ channel: Channel, tlsContext: NIOSSLContext?, idle: TimeAmount) throws {
        let pipeline = channel.pipeline.syncOperations
        if let tlsContext { try pipeline.addHandler(NIOSSLServerHandler(context: tlsContext)) }
        try pipeline.addHandler(IdleStateHandler(allTimeout: idle))
        try pipeline.addHandler(ConsoleIdleClose())
        try pipeline.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true)
        let encoder = try pipeline.handler(type: HTTPResponseEncoder.self)
        try pipeline.addHandler(ConsoleSecurityHeaders(), position: .after(encoder))
    }

    private func sampleUntilCancelled() async {
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: configuration.sampleInterval)
            } catch {
                return
            }
            data.sample()
        }
    }
}

/// Closes a connection when `IdleStateHandler` reports it idle.
final class ConsoleIdleClose: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }
}

/// A live tail the endpoint may have to end from elsewhere: when its connection closes or the endpoint stops.
final class ConsoleTailHandle: Sendable {
    let tail: any ConsoleTail
    private let ended = NIOLockedValueBox(false)

    init(_ tail: any ConsoleTail) { self.tail = tail }

    var isEnded: Bool { ended.withLockedValue { $0 } }

    /// Marks the tail ended and closes it, so that a `next` waiting for events returns at once.
    func end() {
        ended.withLockedValue { $0 = true }
        tail.close()
    }
}

/// The open connections and live tails, with their caps, and what to close when the endpoint stops. Thread-safe:
/// one lock, held for dictionary work only; channels and tails are closed outside it.
final class ConsoleConnections: Sendable {
    private struct State {
        var stopping = false
        var nextID = 0
        /// Each connection's channel, and whether it is answering a request now (an idle one is closed at stop).
        var connections: [Int: (channel: any Channel, busy: Bool)] = [:]
        /// Tail slots: reserved (nil) while the data source opens the tail, then its handle.
        var tails: [Int: ConsoleTailHandle?] = [:]
    }

    let maxConnections: Int
    let maxTails: Int
    private let state = NIOLockedValueBox(State())

    init(maxConnections: Int, maxTails: Int) {
        self.maxConnections = maxConnections
        self.maxTails = maxTails
    }

    var isStopping: Bool { state.withLockedValue { $0.stopping } }
    var connectionCount: Int { state.withLockedValue { $0.connections.count } }
    var tailCount: Int { state.withLockedValue { $0.tails.count } }

    /// An id for a new connection; nil when `maxConnections` are open or the endpoint stops (close it then).
    func admit(_ channel: any Channel) -> Int? {
        state.withLockedValue { state in
            guard !state.stopping, state.connections.count < maxConnections else { return nil }
            state.nextID += 1
            state.connections[state.nextID] = (channel, false)
            return state.nextID
        }
    }

    func release(_ id: Int) {
        state.withLockedValue { $0.connections[id] = nil }
    }

    /// Marks connection `id` busy with a request; false when the endpoint stops (the connection closes instead).
    func beginRequest(_ id: Int) -> Bool {
        state.withLockedValue { state in
            guard !state.stopping else { return false }
            state.connections[id]?.busy = true
            return true
        }
    }

    func endRequest(_ id: Int) {
        state.withLockedValue { $0.connections[id]?.busy = false }
    }

    /// A tail slot; nil when `maxTails` are taken or the endpoint stops.
    func reserveTail() -> Int? {
        state.withLockedValue { state in
            guard !state.stopping, state.tails.count < maxTails else { return nil }
            state.nextID += 1
            state.tails[state.nextID] = .some(nil)
            return state.nextID
        }
    }

    /// Puts the opened tail in its slot; false when the endpoint stopped meanwhile (end it then).
    func attachTail(_ id: Int, _ handle: ConsoleTailHandle) -> Bool {
        state.withLockedValue { state in
            guard !state.stopping else { return false }
            state.tails[id] = .some(handle)
            return true
        }
    }

    func releaseTail(_ id: Int) {
        state.withLockedValue { _ = $0.tails.removeValue(forKey: id) }
    }

    /// Refuses new connections, requests and tails from now on, ends the live tails and closes idle connections
    /// (a busy one closes after its answer). Safe to call more than once.
    func stop() {
        let (idle, tails) = state.withLockedValue { state in
            state.stopping = true
            return (
                state.connections.values.filter { !$0.busy }.map(\.channel),
                state.tails.values.compactMap { $0 })
        }
        for tail in tails { tail.end() }
        for channel in idle { channel.close(promise: nil) }
    }
}
