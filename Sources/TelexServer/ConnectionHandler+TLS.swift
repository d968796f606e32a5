import NIOCore
import NIOSSL
import NIOTLS
import TelexProtocol
import TelexStorage

/// TLS connections: the peer's certificate name, and DELIVER frames whose batches are read into memory on the
/// thread pool, because `NIOSSLHandler` encrypts `ByteBuffer`s and cannot carry a `FileRegion` (sendfile).
extension ConnectionHandler {
    /// Whether a TLS handler sits in front of this one in `context`'s pipeline.
    static func isTLS(_ context: ChannelHandlerContext) -> Bool {
        (try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self)) != nil
    }

    /// Records the verified client certificate's subject CN once the TLS handshake completes. NIOSSL reports the
    /// completion before it passes on any decrypted byte, so this runs before HELLO is handled.
    func noteTLSEvent(_ event: Any, context: ChannelHandlerContext) {
        guard case .handshakeCompleted = event as? TLSUserEvent else { return }
        tlsHandshakeCompleted = true
        let certificate = try? context.pipeline.syncOperations.nioSSL_peerCertificate()
        peerCommonName = certificate?.subjectName.last { $0.type == .commonName }?.value
        if let peerCommonName { logger[metadataKey: "peerCN"] = "\(peerCommonName)" }
    }

    /// Logs a transport error: a failed TLS handshake at info (an operator wants to see a refused certificate),
    /// everything else at debug: resets, broken pipes, and a peer that left mid-handshake (the channel is
    /// already closed then, as after `TLSRecordGuard` refused a plaintext client).
    func logConnectionError(_ error: any Error, context: ChannelHandlerContext) {
        if error is NIOSSLError || error is BoringSSLError, context.channel.isActive {
            logger.info("TLS failed", metadata: ["error": "\(error)"])
        } else {
            logger.debug("connection error", metadata: ["error": "\(error)"])
        }
    }

    /// Reads `slice` on the thread pool, then writes it as a DELIVER frame and hands the delivery turn on.
    /// One read per connection is in flight at a time (`mayStartDelivery`), so DELIVER frames keep their order and
    /// the connection holds at most one slice (`maxDeliverBytes`) in memory beyond its unsent output; the state
    /// machine has already counted the batches as delivered. If the subscription ends meanwhile, the bytes are
    /// dropped.
    ///
    /// The bytes are in memory here, so each batch's CRC is checked again (storage checked it once before): a batch
    /// that changed on disk since is never sent. Without skip-damaged the batches before it are sent and the
    /// subscription ends with DATA_LOSS; with it, only that batch is left out (the client sees the offsets jump).
    func deliverFromThreadPool(_ slice: LogSlice, topic: String, subscriptionID id: UInt32) {
        guard let context, let subscription = subscriptions[id] else { return }
        let listener = subscription.listener
        let skipDamaged = subscription.skipDamaged
        tlsReadsInFlight += 1
        threadPool.runIfActive(eventLoop: context.eventLoop) { () throws -> DeliveryCheck in
            DeliveryCheck(try slice.readBytes(), skipDamaged: skipDamaged)
        }.assumeIsolated().whenComplete { result in
            self.tlsReadsInFlight -= 1
            if self.subscriptions[id]?.listener === listener {
                switch result {
                case .success(let checked):
                    if checked.intact.readableBytes > 0 {
                        self.writeDeliver(subscriptionID: id, topic: topic, batches: checked.intact)
                    }
                    if let corrupt = checked.corrupt.first, !skipDamaged {
                        let lost = corrupt.count == 1
                            ? "offset \(corrupt.lowerBound) of \(topic) is"
                            : "offsets \(corrupt.lowerBound)-\(corrupt.upperBound - 1) of \(topic) are"
                        self.endSubscription(id, error: TelexError(.dataLoss,
                            "\(lost) lost: the stored batch failed its CRC when read for delivery; subscribe with skip-damaged to read on from offset \(corrupt.upperBound)",
                            topic: topic, offset: corrupt.lowerBound))
                        break
                    }
                    for range in checked.corrupt {
                        self.logger.error("stored batch failed its CRC when read for delivery; skipped", metadata: [
                            "topic": "\(topic)", "firstOffset": "\(range.lowerBound)", "nextOffset": "\(range.upperBound)",
                        ])
                    }
                    // To the back of the line: the other subscriptions waiting read first.
                    self.waitForDeliveryTurn(id)
                case .failure(let error):
                    self.endSubscription(id, error: Self.storageError(error, doing: "reading \(topic) to deliver it"))
                }
            }
            self.passDeliveryTurns()
            self.flushOutbound()
        }
    }
}

/// Whole stored batches read for delivery, checked by their CRCs: the ones to send, and the offsets of those that
/// failed. Without `skipDamaged` the batches to send stop at the first failure.
struct DeliveryCheck: Sendable {
    var intact = ByteBuffer()
    var corrupt: [Range<Int64>] = []

    init(_ bytes: ByteBuffer, skipDamaged: Bool) {
        var position = bytes.readerIndex
        while let header = RecordBatchHeader.peek(bytes, at: position), header.totalSize >= RecordBatchHeader.size,
            position + header.totalSize <= bytes.writerIndex
        {
            let batch = bytes.getSlice(at: position, length: header.totalSize)!
            let covered = batch.getSlice(at: batch.readerIndex + RecordBatchHeader.crcStart,
                                         length: header.totalSize - RecordBatchHeader.crcStart)!
            if CRC32.checksum(covered) == header.crc {
                if corrupt.isEmpty || skipDamaged { intact.writeImmutableBuffer(batch) }
            } else {
                corrupt.append(header.baseOffset..<header.nextOffset)
                if !skipDamaged { return }
            }
            position += header.totalSize
        }
    }
}
