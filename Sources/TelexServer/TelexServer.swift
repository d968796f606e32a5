import Dispatch
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TelexProtocol
import TelexStorage

/// The Telex broker: a TCP listener, the topic store, and the subscriptions between them.
///
/// `start()` opens (and recovers) the data directory and binds; `shutdown()` stops accepting, lets in-flight
/// appends finish, fsyncs and closes every log, then closes connections. Tests bind port 0 and read `localPort`.
public final class TelexServer: @unchecked Sendable {
    public let configuration: ServerConfiguration
    private let logger: Logger
    private let group: MultiThreadedEventLoopGroup
    private let hub = TopicHub()
    private let commitQueue = DispatchQueue(label: "telex.commits")
    private let lock = NIOLock()
    private var store: TopicStore?
    private var serverChannel: Channel?
    private var connections: [ObjectIdentifier: Channel] = [:]
    private var retentionTask: RepeatedTask?
    private let closed = AsyncStream<Void>.makeStream()

    public init(configuration: ServerConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.eventLoopThreads))
    }

    /// The port the server is bound to, once started.
    public var localPort: Int? { lock.withLock { serverChannel?.localAddress?.port } }

    /// The topic store, once started (for inspection in tests and tools).
    public var topicStore: TopicStore? { lock.withLock { store } }

    /// Opens the data directory, recovers every topic, and starts listening.
    public func start() async throws {
        let store = try TopicStore(directory: configuration.dataDirectory, configuration: configuration.log, logger: logger)
        let configuration = self.configuration
        let hub = self.hub
        let logger = self.logger
        let commitQueue = self.commitQueue
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 256 << 10, high: 1 << 20))
            .childChannelInitializer { [weak self] channel in
                self?.track(channel)
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(FrameDecoder(limits: FrameLimits(maxFrameSize: configuration.maxFrameSize))))
                    try channel.pipeline.syncOperations.addHandler(
                        ConnectionHandler(store: store, hub: hub, configuration: configuration, logger: logger,
                                          commitQueue: commitQueue))
                }
            }
        let channel = try await bootstrap.bind(host: configuration.host, port: configuration.port).get()
        lock.withLock {
            self.store = store
            self.serverChannel = channel
        }
        let seconds = configuration.retentionCheckSeconds
        retentionTask = group.next().scheduleRepeatedTask(initialDelay: .seconds(seconds), delay: .seconds(seconds)) { _ in
            DispatchQueue.global().async { store.applyRetention() }
        }
        DispatchQueue.global().async { store.applyRetention() }
        var recovered: [String] = []
        for topic in store.topics {
            if let log = store.log(topic) { recovered.append("\(topic)[\(log.startOffset)..<\(log.endOffset)]") }
        }
        logger.info("telexd listening", metadata: [
            "address": "\(channel.localAddress?.description ?? "?")",
            "dataDirectory": "\(configuration.dataDirectory)",
            "fsync": "\(configuration.log.fsync)",
            "topics": "\(recovered.count)",
            "recovered": "\(recovered.joined(separator: " "))",
        ])
    }

    private func track(_ channel: Channel) {
        let id = ObjectIdentifier(channel)
        lock.withLock { connections[id] = channel }
        channel.closeFuture.whenComplete { [weak self] _ in
            _ = self?.lock.withLock { self?.connections.removeValue(forKey: id) }
        }
    }

    /// Waits until `shutdown()` has finished.
    public func waitUntilClosed() async {
        for await _ in closed.stream {}
    }

    /// Stops accepting, finishes in-flight appends, fsyncs and closes every log, closes connections.
    public func shutdown() async throws {
        let (channel, store) = lock.withLock { (serverChannel, self.store) }
        guard let channel else { return }
        lock.withLock { serverChannel = nil }
        retentionTask?.cancel()
        try? await channel.close()
        // Closing the logs fsyncs them, which completes every durability waiter, so pending acks get written.
        var closeError: Error?
        do { try store?.close() } catch { closeError = error }
        try? await Task.sleep(nanoseconds: 50_000_000)
        let open = lock.withLock { Array(connections.values) }
        for connection in open { try? await connection.close() }
        try await group.shutdownGracefully()
        logger.info("telexd stopped")
        closed.continuation.finish()
        if let closeError { throw closeError }
    }
}
