import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// The open connections and live tails, with their caps, and what to close when the endpoint stops. Thread-safe:
/// one lock, held for dictionary work only; channels and tails are closed outside it.
final class ConsoleConnections: Sendable {
    private struct Open {
        var channel: any Channel
        /// The peer's IP address, for the per-peer cap.
        var peer: String
        /// Whether it is answering a request now (its body read): an idle one is closed at stop.
        var busy = false
    }

    private struct State {
        var stopping = false
        var nextID = 0
        var connections: [Int: Open] = [:]
        var perPeer: [String: Int] = [:]
        /// Tail slots: reserved (nil) while the data source opens the tail, then its handle and channel.
        var tails: [Int: (handle: ConsoleTailHandle, channel: any Channel)?] = [:]
    }

    let maxConnections: Int
    let maxPerPeer: Int
    let maxTails: Int
    private let state = NIOLockedValueBox(State())
    /// Yields once stopping and no connection is left.
    private let drainedSignal = AsyncStream<Void>.makeStream()

    init(maxConnections: Int, maxPerPeer: Int, maxTails: Int) {
        self.maxConnections = maxConnections
        self.maxPerPeer = maxPerPeer
        self.maxTails = maxTails
    }

    var isStopping: Bool { state.withLockedValue { $0.stopping } }
    var connectionCount: Int { state.withLockedValue { $0.connections.count } }
    var tailCount: Int { state.withLockedValue { $0.tails.count } }

    /// An id for a new connection; nil when `maxConnections` are open, `maxPerPeer` from its IP address, or the
    /// endpoint stops (close it then).
    func admit(_ channel: any Channel) -> Int? {
        let peer = channel.remoteAddress?.ipAddress ?? "?"
        return state.withLockedValue { state in
            guard !state.stopping, state.connections.count < maxConnections,
                state.perPeer[peer, default: 0] < maxPerPeer
            else { return nil }
            state.nextID += 1
            state.connections[state.nextID] = Open(channel: channel, peer: peer)
            state.perPeer[peer, default: 0] += 1
            return state.nextID
        }
    }

    func release(_ id: Int) {
        let drained = state.withLockedValue { state in
            guard let open = state.connections.removeValue(forKey: id) else { return false }
            let left = state.perPeer[open.peer, default: 1] - 1
            state.perPeer[open.peer] = left > 0 ? left : nil
            return state.stopping && state.connections.isEmpty
        }
        if drained { drainedSignal.continuation.yield() }
    }

    /// Marks connection `id` busy with a request whose body was read; false when the endpoint stops (the
    /// connection closes instead).
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

    /// Puts the opened tail and its connection in its slot; false when the endpoint stopped meanwhile (end it then).
    func attachTail(_ id: Int, _ handle: ConsoleTailHandle, channel: any Channel) -> Bool {
        state.withLockedValue { state in
            guard !state.stopping else { return false }
            state.tails[id] = .some((handle, channel))
            return true
        }
    }

    func releaseTail(_ id: Int) {
        state.withLockedValue { _ = $0.tails.removeValue(forKey: id) }
    }

    /// Refuses new connections, requests and tails from now on, ends the live tails and closes their connections
    /// (a browser that takes no frames cannot hold the stop) and the idle ones (also one whose request is still
    /// arriving); a busy one closes after its answer (`drained(within:)` bounds that). Safe to call more than once.
    func stop() {
        let (idle, tails, drained) = state.withLockedValue { state in
            state.stopping = true
            return (
                state.connections.values.filter { !$0.busy }.map(\.channel), state.tails.values.compactMap { $0 },
                state.connections.isEmpty)
        }
        for tail in tails {
            tail.handle.end()
            tail.channel.close(promise: nil)
        }
        for channel in idle { channel.close(promise: nil) }
        if drained { drainedSignal.continuation.yield() }
    }

    /// After `stop()`: true once every connection is released, false when `grace` passed first (or the task was
    /// cancelled).
    func drained(within grace: Duration) async -> Bool {
        await withTaskGroup(of: Bool.self) { race in
            race.addTask {
                for await _ in self.drainedSignal.stream { return true }
                return false
            }
            race.addTask {
                do {
                    try await Task.sleep(for: grace)
                } catch {}
                return false
            }
            let first = await race.next() ?? false
            race.cancelAll()
            return first
        }
    }

    /// Closes every connection still open (the end of the shutdown grace).
    func closeAll() {
        let open = state.withLockedValue { $0.connections.values.map(\.channel) }
        for channel in open { channel.close(promise: nil) }
    }
}

/// The deadlines of one connection's requests: the head and body of a request must arrive within `requestTimeout`
/// of its first byte (the first request: of the connection's opening), and the next request must begin within
/// `keepAliveIdle` of the last answer; otherwise the connection is closed. Nothing runs while a request is answered
/// (a live tail sends its own keep-alives). Used by two handlers of one channel, on its event loop only.
final class ConsoleRequestDeadline {
    private enum Phase {
        /// Between requests: waiting for the first byte of the next.
        case waiting
        /// Bytes of a request arrived; its body has not ended yet.
        case reading
        /// The request was read and is being answered.
        case answering
    }

    let requestTimeout: TimeAmount
    let keepAliveIdle: TimeAmount
    private var phase = Phase.reading
    private var timer: Scheduled<Void>?

    init(requestTimeout: TimeAmount, keepAliveIdle: TimeAmount) {
        self.requestTimeout = requestTimeout
        self.keepAliveIdle = keepAliveIdle
    }

    private func arm(_ amount: TimeAmount?, _ context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        guard let amount else { return }
        let channel = context.channel
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: amount) { channel.close(promise: nil) }
    }

    /// Sees the raw bytes, before the HTTP decoder: the first byte of a request starts its deadline.
    final class BytesIn: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = ByteBuffer
        let deadline: ConsoleRequestDeadline

        init(_ deadline: ConsoleRequestDeadline) { self.deadline = deadline }

        func handlerAdded(context: ChannelHandlerContext) {
            if context.channel.isActive { deadline.arm(deadline.requestTimeout, context) }
        }

        func channelActive(context: ChannelHandlerContext) {
            deadline.arm(deadline.requestTimeout, context)
            context.fireChannelActive()
        }

        func channelInactive(context: ChannelHandlerContext) {
            deadline.arm(nil, context)
            context.fireChannelInactive()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if deadline.phase == .waiting {
                deadline.phase = .reading
                deadline.arm(deadline.requestTimeout, context)
            }
            context.fireChannelRead(data)
        }
    }

    /// Sees the decoded requests and the answers: a request's end stops its deadline, an answer's end starts the
    /// keep-alive wait.
    final class Parts: ChannelDuplexHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundIn = HTTPServerResponsePart
        let deadline: ConsoleRequestDeadline

        init(_ deadline: ConsoleRequestDeadline) { self.deadline = deadline }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if case .end = unwrapInboundIn(data) {
                deadline.phase = .answering
                deadline.arm(nil, context)
            }
            context.fireChannelRead(data)
        }

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            if case .end = unwrapOutboundIn(data), deadline.phase == .answering {
                deadline.phase = .waiting
                deadline.arm(deadline.keepAliveIdle, context)
            }
            context.write(data, promise: promise)
        }
    }
}
