import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import TelexProtocol

/// One TCP connection to a broker, past the HELLO handshake.
final class Connection: Sendable {
    let channel: any Channel
    private let handler: NIOLoopBound<ClientChannelHandler>
    private let nextRequestID = NIOLockedValueBox<UInt32>(1)
    let serverName: String
    /// The largest frame the broker accepts, in bytes, from its HELLO_OK.
    let brokerMaxFrameSize: Int
    private let requestTimeout: TimeAmount

    private init(
        channel: any Channel, handler: NIOLoopBound<ClientChannelHandler>, serverName: String, brokerMaxFrameSize: Int,
        requestTimeout: TimeAmount
    ) {
        self.channel = channel
        self.handler = handler
        self.serverName = serverName
        self.brokerMaxFrameSize = brokerMaxFrameSize
        self.requestTimeout = requestTimeout
    }

    /// Connects and completes the handshake. Errors say what to do: start the broker, check the token or address.
    static func connect(configuration: ClientConfiguration, group: any EventLoopGroup, logger: Logger) async throws -> Connection {
        let limits = FrameLimits(maxFrameSize: configuration.maxFrameSize)
        let address = "\(configuration.host):\(configuration.port)"
        let tlsContext = try configuration.tls?.makeSSLContext()
        let verifiedName = configuration.tls?.hostnameToVerify(host: configuration.host)
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(TimeAmount(configuration.connectTimeout))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
        let channel: any Channel
        let handler: NIOLoopBound<ClientChannelHandler>
        do {
            // The initializer hands out the handler it adds: a broker that closes at once (a refused TLS
            // handshake) may tear the pipeline down before the connect's result is seen, and a lookup then would
            // lose the handler, and the reason it holds, with it.
            (channel, handler) = try await bootstrap.connect(
                host: configuration.host, port: configuration.port
            ) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tlsContext {
                        try channel.pipeline.syncOperations.addHandler(TLSReplyGuard(address: address))
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: tlsContext, serverHostname: verifiedName))
                        try channel.pipeline.syncOperations.addHandler(
                            TLSErrorTranslator(address: address, verifiedName: verifiedName ?? configuration.host))
                    }
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(limits: limits)))
                    let handler = ClientChannelHandler(logger: logger)
                    try channel.pipeline.syncOperations.addHandler(handler)
                    return (channel, NIOLoopBound(handler, eventLoop: channel.eventLoop))
                }
            }
        } catch {
            throw TelexError(.connectionFailed,
                "cannot reach the Telex broker at \(address) (\(error)); is telexd running? Start it with `swift run telexd`, or pass --server HOST:PORT")
        }
        let provisional = Connection(channel: channel, handler: handler, serverName: "", brokerMaxFrameSize: Int(UInt32.max),
                                     requestTimeout: TimeAmount(configuration.connectTimeout))
        let reply: BrokerMessage
        do {
            reply = try await provisional.request(
                .hello(minVersion: FrameHeader.supportedVersions.lowerBound, maxVersion: FrameHeader.supportedVersions.upperBound,
                       clientName: configuration.clientName, authToken: ByteBuffer(string: configuration.authToken)))
        } catch {
            let framesReceived = try? await channel.eventLoop.submit { handler.value.framesReceived }.get()
            try? await channel.close()
            // A plaintext client on a TLS port: the broker closes without a word (or a server sends TLS bytes).
            let tlsHint = configuration.tls == nil ? "; is this a TLS port? use --tls (or --tls-ca CA)" : ""
            guard let error = error as? TelexError else { throw error }
            if error.code == .timeout {
                throw TelexError(.connectionFailed,
                    "\(address) accepted the connection but did not answer HELLO; is it a Telex broker?\(tlsHint)")
            }
            if framesReceived == 0, error.code != .tlsFailure {
                throw TelexError(.connectionFailed,
                    "\(address) closed the connection without answering HELLO (\(error.message))\(tlsHint)")
            }
            throw error
        }
        guard case .helloOK(_, let serverName, let maxFrameSize) = reply else {
            try? await channel.close()
            throw TelexError(.malformedFrame, "expected HELLO_OK from \(address), got \(reply.type.name)")
        }
        return Connection(channel: channel, handler: handler, serverName: serverName,
                          brokerMaxFrameSize: Int(maxFrameSize), requestTimeout: TimeAmount(configuration.requestTimeout))
    }

    func makeRequestID() -> UInt32 {
        nextRequestID.withLockedValue { id in
            defer { id = id == UInt32.max ? 1 : id + 1 }
            return id
        }
    }

    /// Sends a request; the future completes with its reply, an ERROR, a timeout or the connection's failure.
    /// Requests are written in call order. With `subscriptionSink`, deliveries for that id go to the sink.
    /// A PUBLISH larger than the broker's `maxFrameSize` fails at once with FRAME_TOO_LARGE and is not sent.
    func send(
        _ message: ClientMessage, requestID: UInt32? = nil, subscriptionSink: (UInt32, SubscriptionSink)? = nil
    ) -> EventLoopFuture<BrokerMessage> {
        let requestID = requestID ?? makeRequestID()
        let loop = channel.eventLoop
        let (header, batch) = encode(message, requestID: requestID)
        if case .publish(let topic, _) = message, let batch {
            let frameSize = header.readableBytes + batch.readableBytes
            guard frameSize <= brokerMaxFrameSize else {
                return loop.makeFailedFuture(TelexError(.frameTooLarge,
                    "PUBLISH to '\(topic)' is a \(frameSize)-byte frame, above the broker's maximum of \(brokerMaxFrameSize) bytes; publish fewer or smaller records per batch",
                    requestID: requestID, topic: topic))
            }
        }
        let promise = loop.makePromise(of: BrokerMessage.self)
        let bound = self.handler
        let channel = self.channel
        let timeout = requestTimeout
        loop.execute {
            let handler = bound.value
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
                promise.fail(TelexError(.timeout, "no reply to \(message.type.name) within \(timeout.nanoseconds / 1_000_000) ms",
                                        requestID: requestID))
            }
            promise.futureResult.whenComplete { _ in
                timer.cancel()
                bound.value.pending[requestID] = nil
            }
            if let batch {
                channel.write(header, promise: nil)
                channel.writeAndFlush(batch, promise: nil)
            } else {
                channel.writeAndFlush(header, promise: nil)
            }
        }
        return promise.futureResult
    }

    /// Sends a request and waits for its reply. Cancelling the task ends the wait at once with `CancellationError`;
    /// the request itself may still be applied by the broker.
    func request(
        _ message: ClientMessage, subscriptionSink: (UInt32, SubscriptionSink)? = nil
    ) async throws -> BrokerMessage {
        let requestID = makeRequestID()
        let future = send(message, requestID: requestID, subscriptionSink: subscriptionSink)
        return try await future.getCancellable { self.abandon(requestID: requestID) }
    }

    /// Fails the local wait for `requestID` with `CancellationError`; a reply arriving later is dropped.
    func abandon(requestID: UInt32) {
        let handler = self.handler
        channel.eventLoop.execute {
            handler.value.pending.removeValue(forKey: requestID)?.fail(CancellationError())
        }
    }

    /// Sends a message whose reply nobody waits for (CREDIT, or UNSUBSCRIBE from a cancelled task).
    func post(_ message: ClientMessage) {
        let (header, _) = encode(message, requestID: message.type == .credit ? 0 : makeRequestID())
        channel.writeAndFlush(header, promise: nil)
    }

    /// Stops routing deliveries of `subscriptionID` to `sink`.
    func forget(subscriptionID: UInt32, sink: SubscriptionSink) {
        let handler = self.handler
        channel.eventLoop.execute { handler.value.forget(subscriptionID: subscriptionID, sink: sink) }
    }

    var isActive: Bool { channel.isActive }

    func close() async {
        try? await channel.close()
    }

    /// The frame for `message`; a PUBLISH's batch stays a separate buffer so the compressed bytes are not copied.
    private func encode(_ message: ClientMessage, requestID: UInt32) -> (ByteBuffer, ByteBuffer?) {
        var buffer = channel.allocator.buffer(capacity: 64)
        if case .publish(let topic, let bytes) = message {
            buffer.writeFrameHeader(type: .publish, requestID: requestID, bodyLength: 2 + topic.utf8.count + bytes.readableBytes)
            buffer.writeShortString(topic)
            return (buffer, bytes)
        }
        buffer.writeMessage(message, requestID: requestID)
        return (buffer, nil)
    }
}

extension EventLoopFuture where Value: Sendable {
    /// Waits for the future; if the task is cancelled first, calls `onCancel` (which should fail the promise)
    /// so that the wait ends promptly. `EventLoopFuture.get()` alone does not honour task cancellation.
    func getCancellable(onCancel: @escaping @Sendable () -> Void) async throws -> Value {
        try await withTaskCancellationHandler {
            try await get()
        } onCancel: {
            onCancel()
        }
    }
}
