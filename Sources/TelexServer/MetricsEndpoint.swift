import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Prometheus
import ServiceLifecycle
import TelexProtocol

/// The metrics endpoint: `GET /metrics` (Prometheus text format from `registry`) and `GET /healthz` (200 "ok" while
/// the broker serves) over HTTP/1.1, or HTTPS with the broker's certificate; 404 for other paths, 405 for other
/// methods. A swift-service-lifecycle `Service`: `run()` binds, serves until graceful shutdown or cancellation,
/// then closes the listener. Tests bind port 0 and read `localPort` (or pass `onBound`).
public final class MetricsEndpoint: Service, Sendable {
    public let host: String
    public let port: Int
    private let tls: ServerTLSConfiguration?
    private let registry: PrometheusCollectorRegistry
    private let server: TelexServer
    private let logger: Logger
    private let onBound: @Sendable (Int) -> Void
    private let boundPort = NIOLockedValueBox<Int?>(nil)

    /// Serves `registry` for `server` on `host:port`; with `tls` (the broker's `configuration.tls`), over HTTPS.
    public init(
        host: String, port: Int, tls: ServerTLSConfiguration? = nil, registry: PrometheusCollectorRegistry,
        server: TelexServer, logger: Logger, onBound: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.host = host
        self.port = port
        self.tls = tls
        self.registry = registry
        self.server = server
        self.logger = logger
        self.onBound = onBound
    }

    /// The bound port while `run()` serves.
    public var localPort: Int? { boundPort.withLockedValue { $0 } }

    /// Binds, serves until a graceful shutdown or the task's cancellation, then closes the listener.
    public func run() async throws {
        // Each connection takes the broker's context as it is then (renewed by `reload()`); this endpoint's own load
        // serves only while the broker has none yet.
        let ownTLSContext = try await tls?.loadSSLContext()
        let registry = self.registry
        let server = self.server
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                let tlsContext = ownTLSContext.map { server.currentTLSContext ?? $0 }
                return channel.eventLoop.makeCompletedFuture {
                    if let tlsContext {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tlsContext))
                    }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler(registry: registry, server: server))
                }
            }
        let channel = try await bootstrap.bind(host: host, port: port).get()
        let port = channel.localAddress?.port ?? 0
        boundPort.withLockedValue { $0 = port }
        logger.info("metrics endpoint listening", metadata: [
            "address": "\(channel.localAddress?.description ?? "?")", "tls": "\(tls == nil ? "off" : "on")",
        ])
        onBound(port)
        // Returns at graceful shutdown, throws at cancellation: either way the listener closes.
        try? await gracefulShutdown()
        boundPort.withLockedValue { $0 = nil }
        try? await channel.close()
    }

    /// Why the endpoint must not listen on `host`: plaintext beyond loopback without `allowPlaintext`, the same rule
    /// as the broker's. Nil when it may. One line that says how to fix it.
    public static func plaintextRefusal(host: String, port: Int, tls: ServerTLSConfiguration?, allowPlaintext: Bool) -> String? {
        ServerConfiguration.plaintextRefusal(
            host: host, port: port, tls: tls, allowPlaintext: allowPlaintext, doing: "serve metrics")
    }

    /// Parses `HOST:PORT` (`[::1]:9090` for IPv6); nil if it is not one.
    public static func parseAddress(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        return (host, port)
    }
}

/// Answers one HTTP/1.1 request at a time; keeps the connection open when the client asks to.
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// The exposition format version Prometheus expects for text.
    static let metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

    private let registry: PrometheusCollectorRegistry
    private let server: TelexServer
    private var request: HTTPRequestHead?

    init(registry: PrometheusCollectorRegistry, server: TelexServer) {
        self.registry = registry
        self.server = server
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
        case .body:
            break
        case .end:
            guard let head = request else { return }
            request = nil
            respond(to: head, context: context)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        let status: HTTPResponseStatus
        var contentType = "text/plain; charset=utf-8"
        var body: [UInt8]
        var extra: [(String, String)] = []
        switch path {
        case "/metrics", "/healthz":
            guard head.method == .GET || head.method == .HEAD else {
                status = .methodNotAllowed
                body = Array("method not allowed; use GET\n".utf8)
                extra.append(("Allow", "GET, HEAD"))
                break
            }
            if path == "/metrics" {
                server.updateMetrics()
                body = []
                registry.emit(into: &body)
                status = .ok
                contentType = Self.metricsContentType
            } else if server.isServing {
                status = .ok
                body = Array("ok\n".utf8)
            } else {
                status = .serviceUnavailable
                body = Array("not serving\n".utf8)
            }
        default:
            status = .notFound
            body = Array("not found; try /metrics or /healthz\n".utf8)
        }
        var headers = HTTPHeaders([("Content-Type", contentType), ("Content-Length", "\(body.count)")] + extra)
        let keepAlive = head.isKeepAlive
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
                      promise: nil)
        if head.method != .HEAD {
            var buffer = context.channel.allocator.buffer(capacity: body.count)
            buffer.writeBytes(body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            written.whenComplete { _ in channel.close(promise: nil) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
