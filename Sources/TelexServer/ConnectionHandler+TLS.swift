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
    func deliverFromThreadPool(
        _ slice: LogSlice, topic: String, subscriptionID id: UInt32, selected: [Range<Int64>]? = nil
    ) {
        guard let context, let subscription = subscriptions[id] else { return }
        let listener = subscription.listener
        let skipDamaged = subscription.skipDamaged
        tlsReadsInFlight += 1
        threadPool.runIfActive(eventLoop: context.eventLoop) { () throws -> DeliveryCheck in
            DeliveryCheck(try slice.readBytes(), offsets: slice.firstOffset..<slice.nextOffset, skipDamaged: skipDamaged)
        }.assumeIsolated().whenComplete { result in
            self.tlsReadsInFlight -= 1
            if self.subscriptions[id]?.listener === listener {
                switch result {
                case .success(let checked):
                    if checked.intact.readableBytes > 0 {
                        self.writeDeliver(subscriptionID: id, topic: topic, batches: checked.intact, selected: selected)
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
///
/// Lost offsets are counted from the chain of offsets the slice should hold (`offsets`), never from a header that
/// failed: a batch failing its CRC covers offsets up to the next batch that chains on, and bytes that do not hold
/// a whole batch with the expected base offset (or a later one in the slice: a compaction gap) make the rest of the
/// slice corrupt.
struct DeliveryCheck: Sendable {
    var intact = ByteBuffer()
    var corrupt: [Range<Int64>] = []

    init(_ bytes: ByteBuffer, offsets: Range<Int64>, skipDamaged: Bool) {
        var position = bytes.readerIndex
        var expected = offsets.lowerBound
        while expected < offsets.upperBound {
            // A base offset above the expected one is a compacted topic's gap (Protocol/STORAGE.md §15), not damage.
            guard let header = Self.batchHeader(in: bytes, at: position), header.baseOffset >= expected,
                header.baseOffset < offsets.upperBound
            else {
                corrupt.append(expected..<offsets.upperBound)
                return
            }
            let batch = bytes.getSlice(at: position, length: header.totalSize)!
            let covered = batch.getSlice(at: batch.readerIndex + RecordBatchHeader.crcStart,
                                         length: header.totalSize - RecordBatchHeader.crcStart)!
            position += header.totalSize
            if CRC32.checksum(covered) == header.crc {
                if corrupt.isEmpty || skipDamaged { intact.writeImmutableBuffer(batch) }
                expected = header.nextOffset
                continue
            }
            // The failed batch's record count is not trusted: its offsets end where the next batch starts.
            let following = Self.batchHeader(in: bytes, at: position)?.baseOffset
            let next = following.flatMap { $0 > expected && $0 < offsets.upperBound ? $0 : nil } ?? offsets.upperBound
            corrupt.append(expected..<next)
            if !skipDamaged || next == offsets.upperBound { return }
            expected = next
        }
    }

    /// The header at `position` if a whole batch of its length follows in `bytes`.
    private static func batchHeader(in bytes: ByteBuffer, at position: Int) -> RecordBatchHeader? {
        guard let header = RecordBatchHeader.peek(bytes, at: position), header.totalSize >= RecordBatchHeader.size,
            position + header.totalSize <= bytes.writerIndex
        else { return nil }
        return header
    }
}
