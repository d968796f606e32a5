import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import TelexProtocol

/// An async client for a Telex broker: publish with batching, compression, pipelining and idempotent retries;
/// subscribe as an `AsyncSequence`; commit durable consumer positions.
///
/// A `Service`: `run()` owns the connection and returns when its task is cancelled or the service group shuts
/// down gracefully; calls made before `run()` starts wait for it, calls after it ends fail with `.closed`.
/// ```swift
/// let client = TelexClient(configuration: .init(host: "broker.local"))
/// try await withThrowingDiscardingTaskGroup { group in
///     group.addTask { await client.run() }
///     try await client.publish(records, to: "news.world")
///     group.cancelAll()
/// }
/// ```
/// or `TelexClient.withClient(configuration:) { client in ... }`, which does exactly that.
/// Thread-safe. One TCP connection, re-established with backoff when it drops.
public final class TelexClient: Sendable, Service {
    public let configuration: ClientConfiguration
    /// This client's idempotent producer id: random, nonzero, fixed for the client's life.
    public let producerID: Int64
    let logger: Logger
    let eventLoopGroup: any EventLoopGroup
    let codecs: CodecPool
    private let state = NIOLockedValueBox(State())
    /// `run()` waits on this stream; finishing it (graceful shutdown) or cancelling `run()` ends the client.
    private let lifetime = AsyncStream<Never>.makeStream()

    private enum Lifecycle: Sendable {
        case idle
        case running
        case shutDown
    }

    private struct State: Sendable {
        var lifecycle = Lifecycle.idle
        var startWaiters: [Int: CheckedContinuation<Void, any Error>] = [:]
        var nextWaiterID = 0
        var connection: Connection?
        var connecting: Task<Connection, any Error>?
        var sequences: [String: Int32] = [:]
        var nextSubscriptionID: UInt32 = 1
    }

    /// Creates a client; nothing connects until `run()` is running and a call needs the broker.
    /// - Parameter eventLoopGroup: where the connection's I/O runs. Default: NIO's shared singleton group.
    public init(
        configuration: ClientConfiguration = .init(),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "telex.client")
    ) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        codecs = CodecPool(
            compressionLevel: configuration.compressionLevel, implementation: configuration.deflateImplementation)
        var id: Int64 = 0
        while id == 0 { id = Int64.random(in: 1...Int64.max) }
        producerID = id
    }

    /// Runs a client for the duration of `body`: starts `run()` in a child task, calls `body`, then shuts the
    /// client down (closing its connection) whether `body` returned or threw.
    public static func withClient<Result: Sendable>(
        configuration: ClientConfiguration = .init(),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "telex.client"),
        isolation: isolated (any Actor)? = #isolation,
        _ body: (TelexClient) async throws -> Result
    ) async throws -> Result {
        let client = TelexClient(configuration: configuration, eventLoopGroup: eventLoopGroup, logger: logger)
        return try await withThrowingTaskGroup(of: Void.self, returning: Result.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            return try await body(client)
        }
    }

    /// Owns the client's connection until the calling task is cancelled or a graceful shutdown is requested;
    /// then closes the connection, failing whatever still waits on it. Call it once.
    public func run() async {
        let waiters = state.withLockedValue { state -> [CheckedContinuation<Void, any Error>]? in
            guard case .idle = state.lifecycle else { return nil }
            state.lifecycle = .running
            defer { state.startWaiters = [:] }
            return Array(state.startWaiters.values)
        }
        guard let waiters else {
            logger.error("TelexClient.run() called more than once; the second call returns at once")
            return
        }
        for waiter in waiters { waiter.resume() }
        let lifetime = self.lifetime
        await withTaskCancellationOrGracefulShutdownHandler {
            for await _ in lifetime.stream {}
        } onCancelOrGracefulShutdown: {
            lifetime.continuation.finish()
        }
        await shutdown()
    }

    private func shutdown() async {
        let (connection, connecting, waiters) = state.withLockedValue { state in
            state.lifecycle = .shutDown
            defer {
                state.connection = nil
                state.connecting = nil
                state.startWaiters = [:]
            }
            return (state.connection, state.connecting, Array(state.startWaiters.values))
        }
        for waiter in waiters { waiter.resume(throwing: TelexError(.closed, "the client was shut down before it ran")) }
        connecting?.cancel()
        // A connect in flight ends within `connectTimeout`; waiting for it keeps its channel off a group the caller
        // may shut down once run() has returned.
        if let connected = try? await connecting?.value { await connected.close() }
        await connection?.close()
        logger.debug("client shut down")
    }

    /// Connects now (one attempt) instead of at the first request, to report an unreachable broker early.
    /// Throws `connectionFailed` with advice when the broker cannot be reached.
    public func connect() async throws {
        _ = try await currentConnection(attempts: 1)
    }

    /// The broker's name from HELLO_OK, once connected.
    public var serverName: String { state.withLockedValue { $0.connection?.serverName ?? "" } }

    /// Round-trip time of a PING.
    public func ping() async throws -> Duration {
        let clock = ContinuousClock()
        let start = clock.now
        let nonce = UInt64.random(in: 0...UInt64.max)
        let reply = try await currentConnection().request(.ping(nonce: nonce))
        guard case .pong(nonce) = reply else { throw TelexError(.malformedFrame, "PING answered with \(reply.type.name)") }
        return clock.now - start
    }

    // MARK: Connection management

    /// Waits until `run()` has started; throws `.closed` once it has ended.
    private func waitUntilRunning() async throws {
        let waiterID = state.withLockedValue { state -> Int? in
            guard case .idle = state.lifecycle else { return nil }
            defer { state.nextWaiterID += 1 }
            return state.nextWaiterID
        }
        if let waiterID {
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                    let outcome = state.withLockedValue { state -> Result<Void, any Error>? in
                        switch state.lifecycle {
                        case .running: return .success(())
                        case .shutDown: return .failure(TelexError(.closed, "the client was shut down"))
                        case .idle:
                            if Task.isCancelled { return .failure(CancellationError()) }
                            state.startWaiters[waiterID] = continuation
                            return nil
                        }
                    }
                    if let outcome { continuation.resume(with: outcome) }
                }
            } onCancel: {
                state.withLockedValue { $0.startWaiters.removeValue(forKey: waiterID) }?.resume(throwing: CancellationError())
            }
        }
        if case .shutDown = state.withLockedValue({ $0.lifecycle }) {
            throw TelexError(.closed, "the client was shut down; its run() has returned")
        }
    }

    /// The live connection, reconnecting with exponential backoff if it dropped. Cancelling the calling task
    /// ends the wait at once.
    func currentConnection(attempts: Int? = nil) async throws -> Connection {
        if let live = state.withLockedValue({ $0.connection }), live.isActive { return live }
        try await waitUntilRunning()
        let task: Task<Connection, any Error> = try state.withLockedValue { state in
            if case .shutDown = state.lifecycle { throw TelexError(.closed, "the client was shut down") }
            if let connection = state.connection, connection.isActive { return Task { connection } }
            if let connecting = state.connecting { return connecting }
            let task = makeConnectTask(attempts: attempts ?? configuration.maxReconnectAttempts)
            state.connecting = task
            return task
        }
        return try await valueCancellable(of: task)
    }

    private func makeConnectTask(attempts: Int) -> Task<Connection, any Error> {
        let configuration = self.configuration
        let group = self.eventLoopGroup
        let logger = self.logger
        return Task {
            var delay = configuration.initialReconnectDelay
            var attempt = 1
            while true {
                do {
                    let connection = try await Connection.connect(configuration: configuration, group: group, logger: logger)
                    let accepted = state.withLockedValue { state -> Bool in
                        state.connecting = nil
                        guard case .running = state.lifecycle else { return false }
                        state.connection = connection
                        return true
                    }
                    guard accepted else {
                        await connection.close()
                        throw TelexError(.closed, "the client was shut down")
                    }
                    return connection
                } catch {
                    let permanent = (error as? TelexError).map {
                        [.authenticationFailed, .unsupportedVersion, .closed, .tlsFailure].contains($0.code)
                    } ?? true
                    guard !permanent, attempt < attempts, !Task.isCancelled else {
                        state.withLockedValue { $0.connecting = nil }
                        throw error
                    }
                    logger.info("reconnecting", metadata: ["attempt": "\(attempt)", "error": "\(error)"])
                    do {
                        try await Task.sleep(for: delay)
                    } catch {
                        state.withLockedValue { $0.connecting = nil }
                        throw error
                    }
                    delay = min(delay * 2, configuration.maxReconnectDelay)
                    attempt += 1
                }
            }
        }
    }

    func dropConnection(_ stale: Connection) async {
        let drop = state.withLockedValue { state -> Bool in
            guard state.connection === stale else { return false }
            state.connection = nil
            return true
        }
        if drop { await stale.close() }
    }

    func makeSubscriptionID() -> UInt32 {
        state.withLockedValue { state in
            defer { state.nextSubscriptionID &+= 1 }
            return state.nextSubscriptionID
        }
    }

    /// Reserves `count` producer sequence numbers for `topic`; returns the first.
    func reserveSequences(_ count: Int, topic: String) -> Int32 {
        state.withLockedValue { state in
            let first = state.sequences[topic, default: 0]
            state.sequences[topic] = first &+ Int32(truncatingIfNeeded: count)
            return first
        }
    }
}

/// Waits for `task`'s value; cancelling the waiting task ends the wait with `CancellationError` at once, without
/// cancelling `task` (other callers may share it).
func valueCancellable<T: Sendable>(of task: Task<T, any Error>) async throws -> T {
    let slot = NIOLockedValueBox<CheckedContinuation<T, any Error>?>(nil)
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let cancelled = slot.withLockedValue { slot -> Bool in
                if Task.isCancelled { return true }
                slot = continuation
                return false
            }
            if cancelled { return continuation.resume(throwing: CancellationError()) }
            Task {
                let result = await task.result
                slot.withLockedValue { slot in defer { slot = nil }; return slot }?.resume(with: result)
            }
        }
    } onCancel: {
        slot.withLockedValue { slot in defer { slot = nil }; return slot }?.resume(throwing: CancellationError())
    }
}
