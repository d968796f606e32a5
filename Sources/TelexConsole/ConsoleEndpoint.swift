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
    func consoleLogin(token: String, peer: String) async -> ConsoleLoginOutcome
    func isAdmin(_ identity: Identity) -> Bool
    /// The TLS context the broker gives new connections now (`TelexServer.reload()` replaces it); nil before it
    /// loaded one.
    var currentTLSContext: NIOSSLContext? { get }
}

extension ConsoleAuthority {
    /// Fakes without a broker have none: the endpoint serves its own load of `tls`.
    var currentTLSContext: NIOSSLContext? { nil }
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
        /// A request's head and body must arrive within this long of its first byte (and the first request within
        /// this long of the connection's opening): a slow sender cannot hold a slot.
        var requestTimeout: Duration = .seconds(10)
        /// A keep-alive connection is closed after this long without a new request.
        var keepAliveIdle: Duration = .seconds(20)
        /// When the endpoint stops, connections still answering are closed after this long.
        var shutdownGrace: Duration = .seconds(5)
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
    let anonymousCSRF = Secrets.makeSecret()
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
        connections = ConsoleConnections(
            maxConnections: configuration.maxConnections, maxPerPeer: configuration.maxConnectionsPerPeer,
            maxTails: configuration.maxTails)
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
        // Each connection takes the broker's context as it is then, so a certificate renewed by SIGHUP reaches new
        // connections; this endpoint's own load serves only while the broker has none yet.
        let ownTLSContext = try await tls?.loadSSLContext()
        let authority = self.authority
        let timing = self.timing
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: configuration.host, port: configuration.port) { channel in
                let tlsContext = ownTLSContext.map { authority.currentTLSContext ?? $0 }
                return channel.eventLoop.makeCompletedFuture {
                    try Self.configurePipeline(channel, tlsContext: tlsContext, timing: timing)
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
                    // Answers in progress get the grace period; then their connections close and their tasks end.
                    if await !connections.drained(within: timing.shutdownGrace) {
                        logger.info("console closing connections still answering after the shutdown grace")
                        connections.closeAll()
                        group.cancelAll()
                    }
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

    /// TLS, the idle timeout, the request deadlines, HTTP/1.1 with NIO's error handling (a 400 for what does not
    /// parse) and the security headers. No pipelining assistance: each connection's task reads the next request
    /// only after answering the last one, and a live tail must see its client close while it streams (the
    /// assistance holds reads then).
    private static func configurePipeline(_ channel: Channel, tlsContext: NIOSSLContext?, timing: Timing) throws {
        let pipeline = channel.pipeline.syncOperations
        if let tlsContext { try pipeline.addHandler(NIOSSLServerHandler(context: tlsContext)) }
        try pipeline.addHandler(IdleStateHandler(allTimeout: TimeAmount(timing.idle)))
        try pipeline.addHandler(ConsoleIdleClose())
        let deadline = ConsoleRequestDeadline(
            requestTimeout: TimeAmount(timing.requestTimeout), keepAliveIdle: TimeAmount(timing.keepAliveIdle))
        try pipeline.addHandler(ConsoleRequestDeadline.BytesIn(deadline))
        try pipeline.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true)
        let encoder = try pipeline.handler(type: HTTPResponseEncoder.self)
        try pipeline.addHandler(ConsoleSecurityHeaders(), position: .after(encoder))
        try pipeline.addHandler(ConsoleRequestDeadline.Parts(deadline))
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
