import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TelexProtocol

/// What a subscription's receiving end gets from the connection, in order.
enum SubscriptionItem {
    case batches(topic: String, ByteBuffer)
    case caughtUp
    case failed(TelexError)
    case disconnected(TelexError)
    case ended
}

/// Receives one subscription's deliveries on the event loop and hands them to its consumer task.
final class SubscriptionSink: @unchecked Sendable {
    private let lock = NIOLock()
    private var queue: [SubscriptionItem] = []
    private var head = 0
    private var waiter: CheckedContinuation<SubscriptionItem, Never>?

    func push(_ item: SubscriptionItem) {
        lock.lock()
        if let waiter {
            self.waiter = nil
            lock.unlock()
            waiter.resume(returning: item)
            return
        }
        queue.append(item)
        lock.unlock()
    }

    func next() async -> SubscriptionItem {
        await withCheckedContinuation { continuation in
            lock.lock()
            if head < queue.count {
                let item = queue[head]
                head += 1
                if head > 64, head * 2 > queue.count {
                    queue.removeFirst(head)
                    head = 0
                }
                lock.unlock()
                continuation.resume(returning: item)
            } else {
                waiter = continuation
                lock.unlock()
            }
        }
    }
}

/// Routes frames from the broker: replies to their request, deliveries to their subscription.
final class ClientChannelHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = Frame

    var pending: [UInt32: EventLoopPromise<BrokerMessage>] = [:]
    var sinks: [UInt32: SubscriptionSink] = [:]
    var sinksByRequest: [UInt32: SubscriptionSink] = [:]
    var closedError: TelexError?
    let logger: Logger

    init(logger: Logger) {
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        let requestID = frame.header.requestID
        let message: BrokerMessage
        do {
            message = try BrokerMessage.decode(frame)
        } catch {
            fail(context: context, error: error)
            return
        }
        switch message {
        case .deliver(let subscriptionID, let topic, let batches):
            sinks[subscriptionID]?.push(.batches(topic: topic, batches))
        case .caughtUp(let subscriptionID):
            sinks[subscriptionID]?.push(.caughtUp)
        case .error(let code, let text):
            let error = TelexError(code, text, requestID: requestID)
            if let promise = pending.removeValue(forKey: requestID) {
                promise.fail(error)
            } else if let sink = sinksByRequest[requestID] {
                sink.push(.failed(error))
            } else if code == .unknownSubscription {
                // A CREDIT raced with the end of its subscription: nothing to do.
                logger.debug("broker error", metadata: ["error": "\(error)"])
            } else {
                logger.warning("broker error", metadata: ["error": "\(error)"])
                fail(context: context, error: error)
            }
        case .unsubscribed(let subscriptionID):
            if let promise = pending.removeValue(forKey: requestID) {
                promise.succeed(message)
            }
            sinks.removeValue(forKey: subscriptionID)?.push(.ended)
        default:
            pending.removeValue(forKey: requestID)?.succeed(message)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        let error = closedError ?? TelexError(.connectionFailed, "the connection to the broker was closed")
        closedError = error
        let promises = pending
        pending = [:]
        for promise in promises.values { promise.fail(error) }
        for sink in sinks.values { sink.push(.disconnected(error)) }
        sinks = [:]
        sinksByRequest = [:]
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        fail(context: context, error: (error as? TelexError)
            ?? TelexError(.connectionFailed, "connection error: \(error)"))
    }

    private func fail(context: ChannelHandlerContext, error: TelexError) {
        if closedError == nil { closedError = error }
        context.close(promise: nil)
    }
}

/// One TCP connection to a broker, past the HELLO handshake.
final class Connection: @unchecked Sendable {
    let channel: Channel
    private let handler: ClientChannelHandler
    private let nextRequestID = NIOLockedValueBox<UInt32>(1)
    let serverName: String
    let requestTimeout: TimeAmount

    private init(channel: Channel, handler: ClientChannelHandler, serverName: String, requestTimeout: TimeAmount) {
        self.channel = channel
        self.handler = handler
        self.serverName = serverName
        self.requestTimeout = requestTimeout
    }

    static func connect(configuration: ClientConfiguration, group: EventLoopGroup, logger: Logger) async throws -> Connection {
        let handler = ClientChannelHandler(logger: logger)
        let limits = FrameLimits(maxFrameSize: configuration.maxFrameSize)
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(limits: limits)))
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        let address = "\(configuration.host):\(configuration.port)"
        let channel: Channel
        do {
            channel = try await bootstrap.connect(host: configuration.host, port: configuration.port).get()
        } catch {
            throw TelexError(.connectionFailed,
                "cannot reach the Telex broker at \(address) (\(error)); is telexd running? Start it with `swift run telexd`, or pass --server HOST:PORT")
        }
        let provisional = Connection(channel: channel, handler: handler, serverName: "", requestTimeout: configuration.connectTimeout)
        let reply: BrokerMessage
        do {
            reply = try await provisional.request(
                .hello(minVersion: FrameHeader.supportedVersions.lowerBound, maxVersion: FrameHeader.supportedVersions.upperBound,
                       clientName: configuration.clientName, authToken: ByteBuffer(string: configuration.authToken)))
        } catch {
            try? await channel.close()
            if let error = error as? TelexError, error.code == .timeout {
                throw TelexError(.connectionFailed, "\(address) accepted the connection but did not answer HELLO; is it a Telex broker?")
            }
            throw error
        }
        guard case .helloOK(_, let serverName, _) = reply else {
            try? await channel.close()
            throw TelexError(.malformedFrame, "expected HELLO_OK from \(address), got \(reply.type.name)")
        }
        return Connection(channel: channel, handler: handler, serverName: serverName, requestTimeout: configuration.requestTimeout)
    }

    func makeRequestID() -> UInt32 {
        nextRequestID.withLockedValue { id in
            defer { id = id == UInt32.max ? 1 : id + 1 }
            return id
        }
    }

    /// Sends a request and returns the future of its reply. Requests are written in call order.
    func send(_ message: ClientMessage, requestID: UInt32? = nil, subscriptionSink: (UInt32, SubscriptionSink)? = nil) -> EventLoopFuture<BrokerMessage> {
        let requestID = requestID ?? makeRequestID()
        let loop = channel.eventLoop
        let promise = loop.makePromise(of: BrokerMessage.self)
        var buffer = channel.allocator.buffer(capacity: 64)
        var batch: ByteBuffer?
        if case .publish(let topic, let bytes) = message {
            // The batch goes out as its own buffer: no copy of the (possibly large) compressed bytes.
            buffer.writeFrameHeader(type: .publish, requestID: requestID, bodyLength: 2 + topic.utf8.count + bytes.readableBytes)
            buffer.writeShortString(topic)
            batch = bytes
        } else {
            buffer.writeMessage(message, requestID: requestID)
        }
        let handler = self.handler
        let channel = self.channel
        let timeout = requestTimeout
        loop.execute {
            if let error = handler.closedError {
                promise.fail(error)
                return
            }
            if let (subscriptionID, sink) = subscriptionSink {
                handler.sinks[subscriptionID] = sink
                handler.sinksByRequest[requestID] = sink
            }
            handler.pending[requestID] = promise
            let timer = loop.scheduleTask(in: timeout) {
                if handler.pending.removeValue(forKey: requestID) != nil {
                    promise.fail(TelexError(.timeout, "no reply to \(message.type.name) within \(timeout.nanoseconds / 1_000_000) ms",
                                            requestID: requestID))
                }
            }
            promise.futureResult.whenComplete { _ in timer.cancel() }
            if let batch {
                channel.write(buffer, promise: nil)
                channel.writeAndFlush(batch, promise: nil)
            } else {
                channel.writeAndFlush(buffer, promise: nil)
            }
        }
        return promise.futureResult
    }

    /// Sends a request and waits for its reply; cancelling the task fails the wait (the request may still apply).
    func request(_ message: ClientMessage, subscriptionSink: (UInt32, SubscriptionSink)? = nil) async throws -> BrokerMessage {
        let future = send(message, subscriptionSink: subscriptionSink)
        return try await withTaskCancellationHandler {
            try await future.get()
        } onCancel: {
            future.eventLoop.execute {
                // Fails only the local wait; the reply, if any, is dropped.
                for (id, promise) in self.handler.pending where promise.futureResult === future {
                    self.handler.pending[id] = nil
                    promise.fail(CancellationError())
                }
            }
        }
    }

    /// Sends a message that has no reply (CREDIT).
    func post(_ message: ClientMessage) {
        var buffer = channel.allocator.buffer(capacity: 32)
        buffer.writeMessage(message, requestID: 0)
        channel.writeAndFlush(buffer, promise: nil)
    }

    func forget(subscriptionID: UInt32, sink: SubscriptionSink) {
        let handler = self.handler
        channel.eventLoop.execute {
            if handler.sinks[subscriptionID] === sink { handler.sinks[subscriptionID] = nil }
            handler.sinksByRequest = handler.sinksByRequest.filter { $0.value !== sink }
        }
    }

    var isActive: Bool { channel.isActive }

    func close() async {
        try? await channel.close()
    }
}
