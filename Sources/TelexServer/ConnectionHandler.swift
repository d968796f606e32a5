import Dispatch
import Logging
import NIOCore
import TelexProtocol
import TelexStorage

/// Serves one client connection: handshake, publish → append → ack, subscriptions, commits.
///
/// Runs on the connection's event loop. Appends are written to the page cache right here (a few
/// microseconds); acknowledgements wait for durability off the loop and hop back. Any error about a
/// request is answered with an ERROR frame for that request; an error in the byte stream itself closes
/// the connection after the ERROR frame, and nothing else on the server is disturbed.
final class ConnectionHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = Frame
    typealias OutboundOut = IOData

    private enum State {
        case awaitingHello
        case ready(clientName: String)
        case closed
    }

    let hub: TopicHub
    private let store: TopicStore
    private let configuration: ServerConfiguration
    private var logger: Logger
    private let commitQueue: DispatchQueue
    private var state = State.awaitingHello
    private var context: ChannelHandlerContext?
    private var subscriptions: [UInt32: Subscription] = [:]
    private var flushScheduled = false
    private var outbound = ByteBuffer()

    init(store: TopicStore, hub: TopicHub, configuration: ServerConfiguration, logger: Logger, commitQueue: DispatchQueue) {
        self.store = store
        self.hub = hub
        self.configuration = configuration
        self.logger = logger
        self.commitQueue = commitQueue
    }

    var isWritable: Bool { context?.channel.isWritable ?? false }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        logger[metadataKey: "peer"] = "\(context.channel.remoteAddress?.description ?? "?")"
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        endAllSubscriptions()
        self.context = nil
        state = .closed
    }

    func channelInactive(context: ChannelHandlerContext) {
        endAllSubscriptions()
        state = .closed
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            for subscription in subscriptions.values { subscription.pump() }
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard let telexError = error as? TelexError else {
            // A socket error (reset, broken pipe): nobody is left to tell.
            logger.debug("connection error", metadata: ["error": "\(error)"])
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
        let message: ClientMessage
        do {
            message = try ClientMessage.decode(frame)
        } catch {
            switch (state, error.code) {
            case (.ready, .invalidRequest):
                // A well-formed frame of a broker-to-client type: refused, the connection stays open.
                reply(error, requestID)
            case (.awaitingHello, .invalidRequest):
                closeWithError(TelexError(.handshakeRequired,
                    "\(frame.header.type.name) sent before HELLO; the first frame must be HELLO"), requestID: requestID)
            default:
                closeWithError(error, requestID: requestID)
            }
            return
        }
        switch state {
        case .closed:
            return
        case .awaitingHello:
            guard case .hello(let minVersion, let maxVersion, let clientName, let token) = message else {
                closeWithError(TelexError(.handshakeRequired,
                    "\(message.type.name) sent before HELLO; the first frame must be HELLO"), requestID: requestID)
                return
            }
            handshake(minVersion: minVersion, maxVersion: maxVersion, clientName: clientName, token: token, requestID: requestID)
        case .ready:
            handle(message, requestID: requestID)
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
        if let expected = configuration.authToken, String(buffer: token) != expected {
            closeWithError(TelexError(.authenticationFailed, "the auth token in HELLO was not accepted"), requestID: requestID)
            return
        }
        state = .ready(clientName: clientName)
        logger[metadataKey: "client"] = "\(clientName)"
        logger.debug("client connected")
        write(.helloOK(version: min(maxVersion, supported.upperBound), serverName: configuration.serverName,
                       maxFrameSize: UInt32(configuration.maxFrameSize)), requestID: requestID)
    }

    private func handle(_ message: ClientMessage, requestID: UInt32) {
        switch message {
        case .publish(let topic, let batch):
            publish(topic: topic, batch: batch, requestID: requestID)
        case .subscribe(let subscriptionID, let pattern, let start, let consumerName, let initialCredit, let resume):
            do {
                try subscribe(id: subscriptionID, pattern: pattern, start: start, consumerName: consumerName,
                              credit: initialCredit, resume: resume, requestID: requestID)
            } catch {
                write(.error(code: error.code, message: error.message), requestID: requestID)
            }
        case .credit(let subscriptionID, let batches):
            guard let subscription = subscriptions[subscriptionID] else {
                return reply(TelexError(.unknownSubscription, "CREDIT for subscription \(subscriptionID), which is not active"), requestID)
            }
            subscription.addCredit(batches)
        case .commit(let subscriptionID, let topic, let offset):
            commit(subscriptionID: subscriptionID, topic: topic, offset: offset, requestID: requestID)
        case .unsubscribe(let subscriptionID):
            guard let subscription = subscriptions.removeValue(forKey: subscriptionID) else {
                return reply(TelexError(.unknownSubscription, "UNSUBSCRIBE for subscription \(subscriptionID), which is not active"), requestID)
            }
            subscription.cancel()
            hub.unregister(subscription)
            write(.unsubscribed(subscriptionID: subscriptionID), requestID: requestID)
        case .ping(let nonce):
            write(.pong(nonce: nonce), requestID: requestID)
        case .hello:
            reply(TelexError(.invalidRequest, "HELLO sent twice on one connection"), requestID)
        }
    }

    // MARK: Publish

    private func publish(topic: String, batch: ByteBuffer, requestID: UInt32) {
        let log: TopicLog
        do throws(TelexError) {
            try TopicName.validate(topic)
            if let existing = store.log(topic) {
                log = existing
            } else {
                guard configuration.allowTopicCreation else {
                    throw TelexError(.topicNotFound, "topic '\(topic)' does not exist and this broker does not create topics on publish")
                }
                // A rejected batch must not leave an empty topic behind.
                _ = try RecordBatch.validate(batch, limits: configuration.log.batchLimits, context: "batch for \(topic)")
                let (created, isNew) = try store.createLog(topic)
                log = created
                if isNew { hub.created(topic) }
            }
        } catch {
            return reply(error, requestID, topic: topic)
        }
        let result: AppendResult
        do {
            result = try log.append(batch)
        } catch {
            return reply(error, requestID, topic: topic)
        }
        let loop = context!.eventLoop
        let hub = self.hub
        log.whenDurable(result) { outcome in
            loop.execute {
                switch outcome {
                case .success:
                    self.write(.publishAck(topic: topic, baseOffset: result.baseOffset, recordCount: result.recordCount,
                                           duplicate: result.duplicate), requestID: requestID)
                case .failure(let error):
                    self.reply(error, requestID, topic: topic)
                }
                self.scheduleFlush()
            }
            if case .success = outcome, !result.duplicate { hub.readable(topic) }
        }
    }

    // MARK: Subscribe

    private func subscribe(
        id: UInt32, pattern: String, start: StartPosition, consumerName: String, credit: UInt32,
        resume: [TopicOffset], requestID: UInt32
    ) throws(TelexError) {
        try TopicName.validatePattern(pattern)
        guard subscriptions[id] == nil else {
            throw TelexError(.duplicateSubscription, "subscription id \(id) is already active on this connection")
        }
        let consumer = consumerName.isEmpty ? nil : consumerName
        if let consumer { try ConsumerOffsets.validateName(consumer) }
        let subscription = Subscription(
            id: id, requestID: requestID, pattern: pattern, consumer: consumer, credit: credit, connection: self,
            eventLoop: context!.eventLoop, store: store, logger: logger, maxDeliverBytes: configuration.maxDeliverBytes,
            maxCredit: configuration.maxCredit)
        let isPattern = TopicName.isPattern(pattern)
        let topics = isPattern ? store.topics.filter { TopicName.matches(pattern: pattern, topic: $0) } : [pattern]
        // Register first: a batch made readable from here on triggers a pump, and the pump reads the log itself.
        hub.register(subscription, topics: topics)
        let committed = consumer.map { store.consumerOffsets.committed($0) } ?? [:]
        let resumeAt = Dictionary(resume.map { ($0.topic, $0.offset) }, uniquingKeysWith: { $1 })
        var ranges: [TopicRange] = []
        do throws(TelexError) {
            for topic in topics {
                guard let log = store.log(topic) else { continue }
                let first = log.startOffset
                let end = log.readableEndOffset
                var from: Int64
                if let offset = resumeAt[topic] ?? committed[topic] {
                    from = offset
                } else {
                    switch start {
                    case .beginning: from = first
                    case .end: from = end
                    case .offset(let offset):
                        from = isPattern ? min(max(offset, first), end) : offset
                    case .timestamp(let time): from = try log.offset(atOrAfter: time)
                    }
                }
                guard from >= first else {
                    throw TelexError(.offsetOutOfRange,
                        "offset \(from) is out of range for \(topic) (log starts at \(first))", topic: topic, offset: from)
                }
                guard from <= log.endOffset else {
                    throw TelexError(.offsetOutOfRange,
                        "offset \(from) is beyond the end of \(topic) (next offset is \(log.endOffset))", topic: topic, offset: from)
                }
                subscription.add(topic: topic, log: log, from: from, caughtUpAt: end)
                ranges.append(TopicRange(topic: topic, startOffset: from, endOffset: end))
            }
        } catch {
            hub.unregister(subscription)
            throw error
        }
        guard ranges.count <= Int(UInt16.max) else {
            hub.unregister(subscription)
            throw TelexError(.invalidRequest,
                "pattern '\(pattern)' matches \(ranges.count) topics; one subscription can cover at most \(UInt16.max)")
        }
        subscriptions[id] = subscription
        logger.debug("subscribed", metadata: ["pattern": "\(pattern)", "subscription": "\(id)", "topics": "\(ranges.count)"])
        write(.subscribed(subscriptionID: id, topics: ranges), requestID: requestID)
        // A topic created between the listing above and registration is picked up here.
        if isPattern {
            for topic in store.topics where TopicName.matches(pattern: pattern, topic: topic) && subscription.position(topic) == nil {
                subscription.topicCreated(topic)
            }
        }
        subscription.pump()
    }

    private func commit(subscriptionID: UInt32, topic: String, offset: Int64, requestID: UInt32) {
        guard let subscription = subscriptions[subscriptionID] else {
            return reply(TelexError(.unknownSubscription, "COMMIT for subscription \(subscriptionID), which is not active"), requestID)
        }
        guard let consumer = subscription.consumer else {
            return reply(TelexError(.invalidRequest,
                "COMMIT on subscription \(subscriptionID), which has no consumer name; subscribe with one to commit"), requestID)
        }
        guard offset >= 0 else {
            return reply(TelexError(.invalidRequest, "COMMIT offset \(offset) is negative"), requestID)
        }
        let offsets = store.consumerOffsets
        let loop = context!.eventLoop
        // The commit fsyncs a file: keep it off the event loop.
        commitQueue.async {
            let outcome = Result { () throws(TelexError) in try offsets.commit(consumer, topic: topic, offset: offset) }
            loop.execute {
                switch outcome {
                case .success: self.write(.commitAck(topic: topic, offset: offset), requestID: requestID)
                case .failure(let error): self.reply(error, requestID, topic: topic)
                }
                self.scheduleFlush()
            }
        }
    }

    // MARK: Subscription support

    func endSubscription(_ subscription: Subscription, error: TelexError) {
        subscription.cancel()
        hub.unregister(subscription)
        if subscriptions[subscription.id] === subscription { subscriptions[subscription.id] = nil }
        write(.error(code: error.code, message: "subscription \(subscription.id) ended: \(error.message)"),
              requestID: subscription.requestID)
        write(.unsubscribed(subscriptionID: subscription.id), requestID: subscription.requestID)
        scheduleFlush()
    }

    private func endAllSubscriptions() {
        for subscription in subscriptions.values {
            subscription.cancel()
            hub.unregister(subscription)
        }
        subscriptions = [:]
    }

    /// Writes a DELIVER frame: the header from memory, the batches straight from the segment file.
    func writeDeliver(subscriptionID: UInt32, topic: String, slice: LogSlice) throws(TelexError) {
        guard let context else { return }
        var prefix = context.channel.allocator.buffer(capacity: 32 + topic.utf8.count)
        prefix.writeFrameHeader(type: .deliver, requestID: 0, bodyLength: 4 + 2 + topic.utf8.count + slice.length)
        BrokerMessage.writeDeliverPrefix(subscriptionID: subscriptionID, topic: topic, into: &prefix)
        flushOutboundBuffer()
        let handle = try slice.makeFileHandle()
        context.write(wrapOutboundOut(.byteBuffer(prefix)), promise: nil)
        let region = FileRegion(fileHandle: handle, readerIndex: slice.position, endIndex: slice.position + slice.length)
        let promise = context.eventLoop.makePromise(of: Void.self)
        promise.futureResult.whenComplete { _ in try? handle.close() }
        context.write(wrapOutboundOut(.fileRegion(region)), promise: promise)
    }

    // MARK: Writing

    /// Queues a message; it is sent at the next flush.
    func write(_ message: BrokerMessage, requestID: UInt32) {
        outbound.writeMessage(message, requestID: requestID)
    }

    private func reply(_ error: TelexError, _ requestID: UInt32, topic: String? = nil) {
        write(.error(code: error.code, message: error.message), requestID: requestID)
    }

    private func flushOutboundBuffer() {
        guard let context, outbound.readableBytes > 0 else { return }
        context.write(wrapOutboundOut(.byteBuffer(outbound)), promise: nil)
        outbound = context.channel.allocator.buffer(capacity: 1024)
    }

    func flush() {
        flushOutbound()
    }

    private func flushOutbound() {
        guard let context else { return }
        flushOutboundBuffer()
        context.flush()
    }

    /// Coalesces the flushes of acks completed in the same event loop tick.
    private func scheduleFlush() {
        guard !flushScheduled, let context else { return }
        flushScheduled = true
        context.eventLoop.execute {
            self.flushScheduled = false
            self.flushOutbound()
        }
    }

    private func closeWithError(_ error: TelexError, requestID: UInt32) {
        guard let context else { return }
        if case .closed = state { return }
        state = .closed
        endAllSubscriptions()
        write(.error(code: error.code, message: error.message), requestID: requestID)
        let pending = outbound
        outbound = ByteBuffer()
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.byteBuffer(pending))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}
