import Logging
import NIOCore
import NIOPosix
import TelexAuth
import TelexProtocol
import TelexStorage

/// Serves one client connection: handshake, publish → append → ack, subscriptions, commits.
///
/// Runs on the connection's event loop and is confined to it (not Sendable): closures that complete elsewhere
/// capture it in a `NIOLoopBound` and hop back. Appends are written to the page cache right here (a few
/// microseconds); acknowledgements wait for durability off the loop and hop back. Blocking file work (topic
/// creation, commits) runs on the server's thread pool. Any error about a request is answered with an ERROR frame
/// for that request; an error in the byte stream itself closes the connection after the ERROR frame.
///
/// Limits (`ServerConfiguration.limits`): HELLO must arrive within the handshake timeout; the handler withholds
/// `read()` while the connection's unanswered PUBLISH bytes are above `maxUnackedBytes` or the channel is not
/// writable, so a client that publishes without reading answers stops being read; topic creation goes through
/// the server-wide `TopicCreationLimiter`.
///
/// Files: this one holds the connection's lifecycle and request dispatch; `+Publish` appends and commits,
/// `+Subscriptions` performs what the subscriptions' state machines decide, `+Writing` the outbound side.
final class ConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = Frame
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// Unsent `FileRegion`s one plaintext connection may have (see `fileRegionsInFlight`).
    static let maxFileRegionsInFlight = 64
    /// How long `closeWithError` waits for its ERROR frame to be written before it closes the connection anyway.
    static let closeGracePeriod = TimeAmount.seconds(2)

    /// Sent through the pipeline by the server when it shuts down: answer every later request with
    /// SHUTTING_DOWN, and close once every accepted publish and commit has been answered and flushed.
    struct Quiesce: Sendable {}

    enum State {
        case awaitingHello
        /// HELLO failed authentication; AUTHENTICATION_FAILED is sent (after the peer's backoff) and then it closes.
        case rejecting
        case ready
        case quiescing
        case closed
    }

    let hub: TopicHub
    let store: TopicStore
    let configuration: ServerConfiguration
    let threadPool: NIOThreadPool
    let access: AccessControl
    let topicCreationLimiter: TopicCreationLimiter
    /// The broker-wide facts admin commands report (`+Admin`).
    let adminContext: AdminContext
    var logger: Logger
    /// Who the client is: no one (no right) until HELLO is accepted; its rights are looked up in `access` on every
    /// request.
    var identity = Identity.unauthenticated
    /// How many of this connection's authorization refusals are logged and audited one by one.
    var refusalThrottle: RefusalAuditThrottle
    var state = State.awaitingHello
    var context: ChannelHandlerContext?
    var subscriptions: [UInt32: Subscription] = [:]
    var flushScheduled = false
    var outbound = ByteBuffer()
    /// True while a request waits on the thread pool (a topic creation, a subscription's time lookups); later
    /// requests wait in `waitingRequests`, so replies stay in request order.
    var awaitingStorage = false
    /// Requests that arrived while `awaitingStorage`, in arrival order.
    var waitingRequests = CircularBuffer<(request: Result<ClientMessage, TelexError>, requestID: UInt32)>()
    /// Publishes and commits accepted and not yet answered.
    var inFlight = 0
    /// The last commit of this connection: the next one runs after it, so commits apply in order.
    var lastCommit: EventLoopFuture<Void>?
    /// Closes the connection if HELLO has not arrived in time; cancelled by a successful HELLO.
    var handshakeDeadline: Scheduled<Void>?
    /// What the PUBLISH requests read and not yet answered (waiting behind other work, appending, or awaiting
    /// durability) count against `maxUnackedBytes`: see `unackedCost(batchBytes:)`.
    var unackedBytes = 0
    /// True while a `read()` from the channel is withheld; it is passed on once reading may resume.
    var readWithheld = false
    /// Whether the connection runs over TLS; then DELIVER batches are read into memory instead of sent by sendfile.
    var usesTLS = false
    /// Whether the TLS handshake has completed; until then nothing written reaches the peer.
    var tlsHandshakeCompleted = false
    /// DELIVER slices being read on the thread pool for this TLS connection: at most one (`mayStartDelivery`).
    var tlsReadsInFlight = 0
    /// DELIVER batches written as `FileRegion`s (each holding a duplicated descriptor) and not yet sent: at most
    /// `maxFileRegionsInFlight`.
    var fileRegionsInFlight = 0
    /// Subscriptions waiting for the connection's delivery budget (`mayStartDelivery`), in round-robin order.
    var deliveryTurns = CircularBuffer<UInt32>()
    /// The subject common name (CN) of the client certificate that the TLS handshake verified (mutual TLS), for
    /// naming the connection's principal. Nil on plaintext connections and when the client presented no
    /// certificate. Set when the handshake completes, before the first frame is handled.
    var peerCommonName: String?

    init(
        store: TopicStore, hub: TopicHub, configuration: ServerConfiguration, threadPool: NIOThreadPool,
        access: AccessControl, topicCreationLimiter: TopicCreationLimiter, adminContext: AdminContext = AdminContext(),
        logger: Logger
    ) {
        self.adminContext = adminContext
        self.store = store
        self.hub = hub
        self.configuration = configuration
        self.threadPool = threadPool
        self.access = access
        self.topicCreationLimiter = topicCreationLimiter
        self.logger = logger
        refusalThrottle = RefusalAuditThrottle(limit: configuration.auth.auditedRefusalsPerSecond)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        outbound = context.channel.allocator.buffer(capacity: 1024)
        usesTLS = Self.isTLS(context)
        logger[metadataKey: "peer"] = "\(context.channel.remoteAddress?.description ?? "?")"
        let timeout = configuration.limits.handshakeTimeout
        handshakeDeadline = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(timeout)) {
            guard case .awaitingHello = self.state else { return }
            self.logger.info("closing connection that did not complete HELLO in time")
            self.closeWithError(TelexError(.handshakeTimeout,
                "HELLO did not arrive within \(timeout); send HELLO as the first frame right after connecting"), requestID: 0)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        handshakeDeadline?.cancel()
        endAllSubscriptions()
        reportSuppressedRefusals()
        self.context = nil
        state = .closed
    }

    func channelInactive(context: ChannelHandlerContext) {
        handshakeDeadline?.cancel()
        endAllSubscriptions()
        reportSuppressedRefusals()
        state = .closed
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            for id in Array(subscriptions.keys) { pump(id) }
        }
        resumeReadingIfAllowed()
        context.fireChannelWritabilityChanged()
    }

    // MARK: Back-pressure

    /// Passes a read on unless the connection is over its unanswered-publish budget or cannot take more writes.
    func read(context: ChannelHandlerContext) {
        if mayRead {
            context.read()
        } else {
            readWithheld = true
        }
    }

    private var mayRead: Bool {
        unackedBytes <= configuration.limits.maxUnackedBytes && context?.channel.isWritable != false
    }

    /// What one unanswered PUBLISH counts against `maxUnackedBytes`: its batch plus 256 bytes for its bookkeeping
    /// (the durability waiter, the answer to come), so that a flood of tiny batches is bounded too.
    static func unackedCost(batchBytes: Int) -> Int { batchBytes + 256 }

    /// A PUBLISH with a batch of `bytes` was answered (acknowledged or refused).
    func publishAnswered(bytes: Int) {
        unackedBytes -= Self.unackedCost(batchBytes: bytes)
        resumeReadingIfAllowed()
    }

    private func resumeReadingIfAllowed() {
        guard readWithheld, mayRead, let context else { return }
        readWithheld = false
        context.read()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        noteTLSEvent(event, context: context)
        switch event {
        case is Quiesce: quiesce()
        case is PermissionsChanged: permissionsChanged()
        default: context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard let telexError = error as? TelexError else {
            // A socket or TLS error (reset, broken pipe, refused certificate): nobody is left to tell.
            logConnectionError(error, context: context)
            state = .closed
            endAllSubscriptions()
            context.close(promise: nil)
            return
        }
        // Errors from the frame decoder: the byte stream cannot be trusted any more.
        logger.info("closing connection", metadata: ["error": "\(telexError)"])
        closeWithError(telexError, requestID: telexError.requestID ?? 0)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        let requestID = frame.header.requestID
        let request: Result<ClientMessage, TelexError>
        do {
            request = .success(try ClientMessage.decode(frame))
        } catch where error.code != .invalidRequest {
            // A malformed body: the byte stream cannot be trusted any more.
            return closeWithError(error, requestID: requestID)
        } catch {
            // A well-formed frame of a broker-to-client type: refused, the connection stays open.
            request = .failure(error)
        }
        switch state {
        case .closed, .rejecting:
            return
        case .awaitingHello:
            guard case .success(.hello(let minVersion, let maxVersion, let clientName, let token)) = request else {
                closeWithError(TelexError(.handshakeRequired,
                    "\(frame.header.type.name) sent before HELLO; the first frame must be HELLO"), requestID: requestID)
                return
            }
            handshake(minVersion: minVersion, maxVersion: maxVersion, clientName: clientName, token: token, requestID: requestID)
        case .ready:
            if case .success(.publish(_, let batch)) = request {
                unackedBytes += Self.unackedCost(batchBytes: batch.readableBytes)
            }
            if awaitingStorage {
                waitingRequests.append((request, requestID))
            } else {
                handle(request, requestID: requestID)
            }
        case .quiescing:
            refuseWhileQuiescing(frame.header.type, requestID: requestID)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushOutbound()
    }

    private func handshake(minVersion: UInt8, maxVersion: UInt8, clientName: String, token: ByteBuffer, requestID: UInt32) {
        let supported = FrameHeader.supportedVersions
        guard minVersion <= maxVersion, maxVersion >= supported.lowerBound, minVersion <= supported.upperBound else {
            closeWithError(TelexError(.unsupportedVersion,
                "client speaks versions \(minVersion)...\(maxVersion); this broker speaks \(supported.lowerBound)...\(supported.upperBound)"),
                requestID: requestID)
            return
        }
        guard authenticate(token: String(buffer: token), requestID: requestID) else { return }
        state = .ready
        handshakeDeadline?.cancel()
        logger[metadataKey: "client"] = "\(clientName)"
        logger.debug("client connected")
        write(.helloOK(version: min(maxVersion, supported.upperBound), serverName: configuration.serverName,
                       maxFrameSize: UInt32(configuration.maxFrameSize)), requestID: requestID)
    }

    private func handle(_ request: Result<ClientMessage, TelexError>, requestID: UInt32) {
        let message: ClientMessage
        switch request {
        case .success(let decoded): message = decoded
        case .failure(let error): return reply(error, requestID)
        }
        switch message {
        case .publish(let topic, let batch):
            publish(topic: topic, batch: batch, requestID: requestID)
        case .subscribe(
            let subscriptionID, let pattern, let start, let consumerName, let initialCredit, let resume, let options):
            do {
                try subscribe(id: subscriptionID, pattern: pattern, start: start, consumerName: consumerName,
                              credit: initialCredit, resume: resume, options: options, requestID: requestID)
            } catch {
                reply(error, requestID)
            }
        case .credit(let subscriptionID, let batches):
            addCredit(batches, subscriptionID: subscriptionID, requestID: requestID)
        case .commit(let subscriptionID, let topic, let offset):
            commit(subscriptionID: subscriptionID, topic: topic, offset: offset, requestID: requestID)
        case .unsubscribe(let subscriptionID):
            unsubscribe(subscriptionID, requestID: requestID)
        case .ping(let nonce):
            write(.pong(nonce: nonce), requestID: requestID)
        case .admin(let adminRequest):
            admin(adminRequest, requestID: requestID)
        case .hello:
            reply(TelexError(.invalidRequest, "HELLO sent twice on one connection"), requestID)
        }
    }

    /// Runs blocking `work` (file I/O) on the thread pool while later requests on this connection wait behind it,
    /// so replies stay in request order; then, on the loop, hands its result to `completion` and goes on with the
    /// waiting requests. False (and nothing runs) when the handler has left its channel.
    @discardableResult
    func runBlocking<Value: Sendable>(
        _ work: @escaping @Sendable () throws -> Value, then completion: @escaping (Result<Value, any Error>) -> Void
    ) -> Bool {
        holdingRequests({ loop in self.threadPool.runIfActive(eventLoop: loop, work) }, then: completion)
    }

    /// As `runBlocking`, for work that awaits (a purge reaching the archive): run as a task off the loop.
    @discardableResult
    func runAsync<Value: Sendable>(
        _ work: @escaping @Sendable () async throws -> Value, then completion: @escaping (Result<Value, any Error>) -> Void
    ) -> Bool {
        holdingRequests({ loop in loop.makeFutureWithTask(work) }, then: completion)
    }

    /// Runs the work `start` begins on the loop while later requests on this connection wait behind it, then hands
    /// its result to `completion` and goes on with the waiting requests.
    private func holdingRequests<Value: Sendable>(
        _ start: (any EventLoop) -> EventLoopFuture<Value>, then completion: @escaping (Result<Value, any Error>) -> Void
    ) -> Bool {
        guard let loop = context?.eventLoop else { return false }
        awaitingStorage = true
        inFlight += 1
        start(loop).assumeIsolated().whenComplete { result in
            self.awaitingStorage = false
            self.inFlight -= 1
            completion(result)
            self.handleWaitingRequests()
            self.scheduleFlush()
            self.closeIfQuiesced()
        }
        return true
    }

    /// Handles the requests that waited behind work on the thread pool, until more such work blocks them again.
    func handleWaitingRequests() {
        while !awaitingStorage, let (request, requestID) = waitingRequests.popFirst() {
            switch state {
            case .ready: handle(request, requestID: requestID)
            case .quiescing:
                switch request {
                case .success(let message):
                    refuseWhileQuiescing(message.type, requestID: requestID)
                    if case .publish(_, let batch) = message { publishAnswered(bytes: batch.readableBytes) }
                case .failure(let error): reply(error, requestID)
                }
            case .awaitingHello, .rejecting, .closed: return
            }
        }
    }

    private func refuseWhileQuiescing(_ type: MessageType, requestID: UInt32) {
        reply(TelexError(.shuttingDown, "the broker is shutting down; reconnect and send \(type.name) again"), requestID)
    }

    // MARK: Shutdown

    private func quiesce() {
        switch state {
        case .awaitingHello, .rejecting:
            state = .closed
            context?.close(promise: nil)
        case .ready:
            state = .quiescing
            logger.debug("quiescing", metadata: ["inFlight": "\(inFlight)"])
            handleWaitingRequests()
            closeIfQuiesced()
        case .quiescing, .closed:
            return
        }
    }

    /// Closes the connection once shutdown began and every accepted publish and commit has been answered and flushed.
    func closeIfQuiesced() {
        guard case .quiescing = state, inFlight == 0, !awaitingStorage, waitingRequests.isEmpty, let context else { return }
        state = .closed
        endAllSubscriptions()
        let pending = outbound
        outbound = ByteBuffer()
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.byteBuffer(pending))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}
