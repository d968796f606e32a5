import NIOCore
import TelexProtocol
import TelexStorage

/// The outbound side: messages are encoded into one buffer and written at the next flush; DELIVER frames send
/// their header from memory and the batches straight from the segment file (sendfile), or on TLS connections
/// from memory, read on the thread pool (`ConnectionHandler+TLS`).
extension ConnectionHandler {
    /// Queues a message; it is sent at the next flush.
    func write(_ message: BrokerMessage, requestID: UInt32) {
        outbound.writeMessage(message, requestID: requestID)
    }

    func reply(_ error: TelexError, _ requestID: UInt32) {
        store.metrics.errorSent(error.code.name)
        write(.error(code: error.code, message: error.message), requestID: requestID)
    }

    /// Writes a DELIVER frame: the header from memory, the batches by sendfile from the segment file.
    /// Plaintext connections only: a TLS handler cannot carry a `FileRegion`. The region's duplicated descriptor
    /// counts in `fileRegionsInFlight` until it is written (or the write failed); then the subscriptions that
    /// waited for the budget take their turns.
    /// With `selected`, the frame is a DELIVER_SELECTED naming the offsets the client hands on.
    func writeDeliver(
        subscriptionID: UInt32, topic: String, slice: LogSlice, selected: [Range<Int64>]? = nil
    ) throws(TelexError) {
        guard let context else { return }
        let handle = try slice.makeFileHandle()
        writeDeliverPrefix(subscriptionID: subscriptionID, topic: topic, selected: selected, batchBytes: slice.length,
                           context: context)
        let region = FileRegion(fileHandle: handle, readerIndex: slice.position, endIndex: slice.position + slice.length)
        let promise = context.eventLoop.makePromise(of: Void.self)
        fileRegionsInFlight += 1
        promise.futureResult.assumeIsolated().whenComplete { _ in
            try? handle.close()
            self.fileRegionsInFlight -= 1
            self.passDeliveryTurns()
        }
        context.write(wrapOutboundOut(.fileRegion(region)), promise: promise)
    }

    /// Writes a DELIVER frame whose batches were read into memory (`batches` holds whole stored batches).
    func writeDeliver(subscriptionID: UInt32, topic: String, batches: ByteBuffer, selected: [Range<Int64>]? = nil) {
        guard let context else { return }
        writeDeliverPrefix(subscriptionID: subscriptionID, topic: topic, selected: selected,
                           batchBytes: batches.readableBytes, context: context)
        context.write(wrapOutboundOut(.byteBuffer(batches)), promise: nil)
    }

    /// Writes what is queued, then a DELIVER (or with `selected` a DELIVER_SELECTED) frame's header and the body
    /// before its batches; the batches follow.
    private func writeDeliverPrefix(
        subscriptionID: UInt32, topic: String, selected: [Range<Int64>]?, batchBytes: Int, context: ChannelHandlerContext
    ) {
        var prefix = context.channel.allocator.buffer(capacity: 36 + topic.utf8.count + 12 * (selected?.count ?? 0))
        if let selected {
            let bodyLength = BrokerMessage.deliverSelectedPrefixSize(topic: topic, rangeCount: selected.count) + batchBytes
            prefix.writeFrameHeader(type: .deliverSelected, requestID: 0, bodyLength: bodyLength)
            BrokerMessage.writeDeliverSelectedPrefix(
                subscriptionID: subscriptionID, topic: topic, selected: selected, into: &prefix)
        } else {
            prefix.writeFrameHeader(type: .deliver, requestID: 0, bodyLength: 4 + 2 + topic.utf8.count + batchBytes)
            BrokerMessage.writeDeliverPrefix(subscriptionID: subscriptionID, topic: topic, into: &prefix)
        }
        writeOutboundBuffer()
        context.write(wrapOutboundOut(.byteBuffer(prefix)), promise: nil)
    }

    private func writeOutboundBuffer() {
        guard let context, outbound.readableBytes > 0 else { return }
        context.write(wrapOutboundOut(.byteBuffer(outbound)), promise: nil)
        outbound = context.channel.allocator.buffer(capacity: 1024)
    }

    func flushOutbound() {
        guard let context else { return }
        writeOutboundBuffer()
        context.flush()
    }

    /// Coalesces the flushes of answers completed in the same event loop tick.
    func scheduleFlush() {
        guard !flushScheduled, let context else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            self.flushOutbound()
        }
    }

    /// Sends an ERROR frame and closes the connection once it is written, or after `closeGracePeriod` if the
    /// peer does not take it (its receive window is full). Before the TLS handshake has completed nothing can be
    /// said (NIOSSL would hold the frame until a handshake the peer may never finish): it closes at once.
    func closeWithError(_ error: TelexError, requestID: UInt32) {
        guard let context else { return }
        if case .closed = state { return }
        state = .closed
        endAllSubscriptions()
        let channel = context.channel
        guard !usesTLS || tlsHandshakeCompleted else {
            context.close(promise: nil)
            return
        }
        store.metrics.errorSent(error.code.name)
        write(.error(code: error.code, message: error.message), requestID: requestID)
        let pending = outbound
        outbound = ByteBuffer()
        let hardClose = context.eventLoop.scheduleTask(in: Self.closeGracePeriod) { channel.close(promise: nil) }
        channel.closeFuture.whenComplete { _ in hardClose.cancel() }
        context.writeAndFlush(wrapOutboundOut(.byteBuffer(pending))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}
