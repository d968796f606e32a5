import CoreMetrics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import TelexProtocol
import TelexStorage

/// The Telex broker: a TCP listener, the topic store, and the subscriptions between them.
///
/// `start()` opens (and recovers) the data directory on the server's thread pool and binds; `shutdown()` stops
/// accepting, has every connection finish what it accepted, fsyncs and closes every log, and waits for the
/// connections to close. Blocking file work (recovery, topic creation, commits, retention) runs on one
/// `NIOThreadPool` owned here. Tests bind port 0 and read `localPort`.
///
/// It is a swift-service-lifecycle `Service`: `run()` starts it, serves until graceful shutdown (SIGTERM/SIGINT in
/// a `ServiceGroup`) or task cancellation, then shuts down as `shutdown()` does and returns. Retention is not a
/// service of its own: it is a repeated task of the running server (every `retentionCheckSeconds`), started by
/// `start()` and cancelled by `shutdown()`, which waits for a run in progress before closing the logs.
public final class TelexServer: Service, Sendable {
    public let configuration: ServerConfiguration
    /// Where the broker and its store record metrics (see `TelexMetrics`).
    public let metrics: TelexMetrics
    let logger: Logger
    private let group: MultiThreadedEventLoopGroup
    let threadPool: NIOThreadPool
    let hub = TopicHub()
    private let state = NIOLockedValueBox(State.idle)
    private let connections = NIOLockedValueBox(Connections())
    /// What ADMIN info reports beyond the store (start time, connection count); set when the listener binds.
    let adminContextBox = NIOLockedValueBox<AdminContext?>(nil)
    /// The TLS context new connections get, when `configuration.tls` is set; `reload()` replaces it.
    let tlsContext = NIOLockedValueBox<NIOSSLContext?>(nil)
    /// The latest `reload()`; the next one starts only after it finished, so reloads apply in the order they were
    /// asked for and an older load never replaces a newer one.
    private let lastReload = NIOLockedValueBox<Task<Void, any Error>?>(nil)
    /// Set once `shutdown()` has finished; tasks in `waitUntilClosed()` wait here.
    private let closed = NIOLockedValueBox<(done: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
    /// Set once a stop was asked for (graceful shutdown, cancellation or `shutdown()`); `run()` waits here.
    private let stopRequested = NIOLockedValueBox<(done: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    /// How long `shutdown()` waits for connections to answer what they accepted before closing them anyway.
    static let quiesceTimeout = TimeAmount.seconds(10)

    private enum State {
        case idle
        /// `start()` is opening the store and binding; `stopRequested` when `shutdown()` came in meanwhile.
        case starting(stopRequested: Bool)
        case running(Running)
        case stopping
        case stopped
    }

    private struct Running {
        var store: TopicStore
        var access: AccessControl
        var serverChannel: any Channel
        var retentionTask: RepeatedTask?
        /// The retention run in progress, if any; shutdown waits for it before closing the store.
        var retentionRun: EventLoopFuture<Void>?
    }

    private struct Connections {
        var accepting = true
        var channels: [ObjectIdentifier: any Channel] = [:]
    }

    /// `metricsFactory` receives every metric (the global `MetricsSystem.factory` unless given; tests pass their own).
    public init(
        configuration: ServerConfiguration, logger: Logger, metricsFactory: any MetricsFactory = MetricsSystem.factory
    ) {
        self.configuration = configuration
        metrics = TelexMetrics(factory: metricsFactory, maxTopics: configuration.metricsMaxTopics)
        self.logger = logger
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.eventLoopThreads))
        threadPool = NIOThreadPool(numberOfThreads: 2)
    }

    /// The port the server is bound to, once started.
    public var localPort: Int? {
        state.withLockedValue { state in
            guard case .running(let running) = state else { return nil }
            return running.serverChannel.localAddress?.port
        }
    }

    /// The topic store, once started (for inspection in tests and tools).
    public var topicStore: TopicStore? {
        state.withLockedValue { state in
            guard case .running(let running) = state else { return nil }
            return running.store
        }
    }

    /// The store, access control and listener while serving; nil before `start()` finished and once stopping.
    var running: (store: TopicStore, access: AccessControl, serverChannel: any Channel)? {
        state.withLockedValue { state in
            guard case .running(let running) = state else { return nil }
            return (running.store, running.access, running.serverChannel)
        }
    }

    /// Opens the data directory, recovers every topic, and starts listening.
    public func start() async throws {
        let wasIdle = state.withLockedValue { state in
            guard case .idle = state else { return false }
            state = .starting(stopRequested: false)
            return true
        }
        guard wasIdle else { throw TelexError(.invalidRequest, "start() was called on a server that was already started") }
        threadPool.start()
        let store: TopicStore
        let access: AccessControl
        let channel: any Channel
        do {
            let configuration = self.configuration
            let logger = self.logger
            let metrics = self.metrics
            access = try await threadPool.runIfActive { try AccessControl(configuration: configuration, logger: logger) }
            store = try await threadPool.runIfActive {
                try TopicStore(directory: configuration.dataDirectory, configuration: configuration.log, logger: logger,
                               metrics: metrics, archive: configuration.archive)
            }
            try await loadTLSContext()
            channel = try await bind(store: store, access: access)
        } catch {
            // A server that failed to start is finished: its threads stop, and shutdown() returns at once.
            state.withLockedValue { $0 = .stopping }
            await stopThreads()
            throw error
        }
        let seconds = configuration.retentionCheckSeconds
        let retentionTask = group.next().scheduleRepeatedTask(initialDelay: .seconds(seconds), delay: .seconds(seconds)) {
            [self] _ in self.applyRetention()
        }
        let stopRequested = state.withLockedValue { state -> Bool in
            let requested: Bool
            if case .starting(let stopRequested) = state { requested = stopRequested } else { requested = false }
            state = .running(Running(store: store, access: access, serverChannel: channel, retentionTask: retentionTask))
            return requested
        }
        if stopRequested { return try await shutdown() }
        applyRetention()
        var recovered: [String] = []
        for topic in store.topics {
            if let log = store.log(topic) { recovered.append("\(topic)[\(log.startOffset)..<\(log.endOffset)]") }
        }
        logger.info("telexd listening", metadata: [
            "address": "\(channel.localAddress?.description ?? "?")",
            "dataDirectory": "\(configuration.dataDirectory)",
            "fsync": "\(configuration.log.fsync)",
            "tls": "\(configuration.tls.map { "on (client certificates: \($0.clientAuthentication.rawValue))" } ?? "off")",
            "topics": "\(recovered.count)",
            "recovered": "\(recovered.joined(separator: " "))",
        ])
    }

    private func bind(store: TopicStore, access: AccessControl) async throws -> any Channel {
        let configuration = self.configuration
        let hub = self.hub
        let logger = self.logger
        let threadPool = self.threadPool
        let topicCreationLimiter = TopicCreationLimiter(limits: configuration.limits, existingTopics: store.topics.count)
        let adminContext = AdminContext { [connections] in connections.withLockedValue { $0.channels.count } }
        adminContextBox.withLockedValue { $0 = adminContext }
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 256 << 10, high: 1 << 20))
            .childChannelInitializer { [self] channel in
                let tlsContext = self.tlsContext.withLockedValue { $0 }
                switch self.track(channel) {
                case .accepted:
                    break
                case .stopping:
                    return channel.close()
                case .full(let open):
                    logger.info("refusing connection: too many connections", metadata: [
                        "peer": "\(channel.remoteAddress?.description ?? "?")", "connections": "\(open)",
                    ])
                    return channel.eventLoop.makeCompletedFuture {
                        // Over TLS the refusal goes out once the handshake is done, so the client can read it.
                        if let tlsContext {
                            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tlsContext))
                        }
                        try channel.pipeline.syncOperations.addHandler(ConnectionRefuser(TelexError(.tooManyConnections,
                            "the broker already serves its maximum of \(configuration.limits.maxConnections) connections; try again later"),
                            closeAfter: TimeAmount(configuration.limits.handshakeTimeout)))
                    }
                }
                return channel.eventLoop.makeCompletedFuture {
                    if let tlsContext {
                        // TLS sits below the frames: a plaintext first byte closes the connection unanswered.
                        try channel.pipeline.syncOperations.addHandler(TLSRecordGuard(logger: logger))
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tlsContext))
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(FrameDecoder(limits: FrameLimits(maxFrameSize: configuration.maxFrameSize))))
                    try channel.pipeline.syncOperations.addHandler(
                        ConnectionHandler(store: store, hub: hub, configuration: configuration, threadPool: threadPool,
                                          access: access, topicCreationLimiter: topicCreationLimiter,
                                          adminContext: adminContext, logger: logger))
                }
            }
        return try await bootstrap.bind(host: configuration.host, port: configuration.port).get()
    }

    /// Re-reads what the broker may reload without a restart (on SIGHUP in telexd): the TLS certificate chain, key
    /// and client CA — new connections use the new material, open ones keep theirs — and the users file, without
    /// dropping connections: every connection checks its next request against the new principals and ends the
    /// subscriptions its principal may no longer have. What fails to load keeps its previous version in force, and
    /// the error (naming the file) is thrown after both were tried. Reloads run one at a time, in the order they were
    /// called: when two overlap, the later one reads the files after the earlier one is done.
    public func reload() async throws {
        let reload = lastReload.withLockedValue { last -> Task<Void, any Error> in
            let previous = last
            let next = Task {
                _ = await previous?.result
                try await self.reloadNow()
            }
            last = next
            return next
        }
        try await reload.value
    }

    private func reloadNow() async throws {
        var failure: (any Error)?
        do { try await loadTLSContext() } catch { failure = error }
        do { try await reloadUsers() } catch { failure = failure ?? error }
        if let failure { throw failure }
    }

    private func reloadUsers() async throws {
        let access: AccessControl? = state.withLockedValue { state in
            guard case .running(let running) = state else { return nil }
            return running.access
        }
        guard let access else { return }
        let principals = try await threadPool.runIfActive { try access.reload() }
        guard principals != nil else { return }
        let open = connections.withLockedValue { Array($0.channels.values) }
        for channel in open {
            channel.eventLoop.execute {
                channel.pipeline.syncOperations.fireUserInboundEventTriggered(ConnectionHandler.PermissionsChanged())
            }
        }
    }

    private enum Admission {
        case accepted
        case stopping
        /// The broker already serves `limits.maxConnections` (the count given).
        case full(Int)
    }

    /// Remembers an accepted connection until it closes; refuses it once shutdown has begun or at the maximum.
    private func track(_ channel: any Channel) -> Admission {
        let id = ObjectIdentifier(channel)
        let maxConnections = configuration.limits.maxConnections
        let admission = connections.withLockedValue { connections -> Admission in
            guard connections.accepting else { return .stopping }
            guard connections.channels.count < maxConnections else { return .full(connections.channels.count) }
            connections.channels[id] = channel
            return .accepted
        }
        guard case .accepted = admission else { return admission }
        metrics.connections.increment()
        channel.closeFuture.whenComplete { [connections, metrics] _ in
            metrics.connections.decrement()
            _ = connections.withLockedValue { $0.channels.removeValue(forKey: id) }
        }
        return .accepted
    }

    /// Runs retention on the thread pool, unless a run is still going or the server is stopping.
    private func applyRetention() {
        let loop = group.next()
        let run: EventLoopFuture<Void>? = state.withLockedValue { state in
            guard case .running(var running) = state, running.retentionRun == nil else { return nil }
            let store = running.store
            let compactor = Compactor(configuration: configuration.compaction, logger: logger, metrics: metrics)
            let run = threadPool.runIfActive(eventLoop: loop) {
                _ = store.applyRetention()
                // Compaction rounds ride on retention's timer, one at a time (Protocol/STORAGE.md §15.3).
                compactor.runRound(store)
            }.recover { _ in }
            running.retentionRun = run
            state = .running(running)
            return run
        }
        // Registered outside the lock: the future may already be complete, and then this runs right here.
        run?.whenComplete { [state] _ in
            state.withLockedValue { state in
                guard case .running(var running) = state else { return }
                running.retentionRun = nil
                state = .running(running)
            }
        }
    }

    /// Starts the server, serves until graceful shutdown is triggered or the task is cancelled, then stops it as
    /// `shutdown()` does (stop accepting, answer accepted publishes and commits, fsync and close every log) and
    /// returns. If `shutdown()` is called from elsewhere, `run()` returns once the server is closed. Throws what
    /// `start()` or `shutdown()` throws.
    public func run() async throws {
        try await start()
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await waitForStopRequest()
            } onGracefulShutdown: { [self] in
                requestStop()
            }
        } onCancel: { [self] in
            requestStop()
        }
        logger.info("shutting down")
        try await shutdown()
    }

    private func requestStop() {
        let waiters = stopRequested.withLockedValue { stop in
            stop.done = true
            defer { stop.waiters = [] }
            return stop.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    private func waitForStopRequest() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = stopRequested.withLockedValue { stop -> Bool in
                if !stop.done { stop.waiters.append(continuation) }
                return stop.done
            }
            if done { continuation.resume() }
        }
    }

    /// Waits until `shutdown()` has finished.
    public func waitUntilClosed() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = closed.withLockedValue { closed -> Bool in
                if !closed.done { closed.waiters.append(continuation) }
                return closed.done
            }
            if done { continuation.resume() }
        }
    }

    /// Stops accepting, lets every connection answer the publishes and commits it accepted (later requests get
    /// SHUTTING_DOWN), fsyncs and closes every log, waits for the connections to close, then stops its threads.
    public func shutdown() async throws {
        requestStop()
        enum Action { case stop(Running), stopThreads, wait }
        let action: Action = state.withLockedValue { state in
            switch state {
            case .running(let running):
                state = .stopping
                return .stop(running)
            case .idle:
                state = .stopping
                return .stopThreads
            case .starting:
                // start() sees the request once it has bound, and shuts down then.
                state = .starting(stopRequested: true)
                return .wait
            case .stopping, .stopped:
                return .wait
            }
        }
        let running: Running
        switch action {
        case .stop(let value): running = value
        case .stopThreads: return await stopThreads()
        case .wait: return await waitUntilClosed()
        }
        running.retentionTask?.cancel()
        let open = connections.withLockedValue { connections in
            connections.accepting = false
            return Array(connections.channels.values)
        }
        try? await running.serverChannel.close()
        // Every connection stops taking requests before the logs close, so nothing new is appended after.
        for channel in open {
            try? await channel.eventLoop.submit {
                channel.pipeline.syncOperations.fireUserInboundEventTriggered(ConnectionHandler.Quiesce())
            }.get()
        }
        try? await running.retentionRun?.get()
        // Closing the logs fsyncs them, which completes every durability waiter, so the pending acks get written.
        let store = running.store
        var closeError: (any Error)?
        do {
            try await threadPool.runIfActive { try store.close() }
        } catch {
            closeError = error
        }
        await waitForConnectionsToClose(open)
        await stopThreads()
        logger.info("telexd stopped")
        if let closeError { throw closeError }
    }

    /// Waits for quiescing connections to close themselves; after `quiesceTimeout`, closes the rest.
    private func waitForConnectionsToClose(_ channels: [any Channel]) async {
        guard !channels.isEmpty else { return }
        let loop = group.next()
        let logger = self.logger
        let deadline = loop.scheduleTask(in: Self.quiesceTimeout) {
            let remaining = channels.filter(\.isActive)
            logger.warning("closing connections that did not finish in time", metadata: ["connections": "\(remaining.count)"])
            for channel in remaining { channel.close(promise: nil) }
        }
        try? await EventLoopFuture.andAllComplete(channels.map(\.closeFuture), on: loop).get()
        deadline.cancel()
    }

    private func stopThreads() async {
        do {
            try await threadPool.shutdownGracefully()
            try await group.shutdownGracefully()
        } catch {
            logger.error("stopping threads failed", metadata: ["error": "\(error)"])
        }
        state.withLockedValue { $0 = .stopped }
        let waiters = closed.withLockedValue { closed in
            closed.done = true
            defer { closed.waiters = [] }
            return closed.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}
