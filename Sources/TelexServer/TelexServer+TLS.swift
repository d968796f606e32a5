import Logging
import NIOCore
import NIOSSL

extension TelexServer {
    /// The TLS context new broker connections get now: the latest `reload()`'s. Nil without TLS or before `run()`
    /// loaded it. The console and the metrics endpoint take it for each new connection, so a renewed certificate
    /// reaches them too.
    public var currentTLSContext: NIOSSLContext? { tlsContext.withLockedValue { $0 } }

    /// Reads `configuration.tls` on the thread pool and makes the result the context new connections get.
    /// Does nothing without TLS; on failure the previous context stays in use.
    func loadTLSContext() async throws {
        guard let tls = configuration.tls else { return }
        let context = try await threadPool.runIfActive { try tls.makeSSLContext() }
        tlsContext.withLockedValue { $0 = context }
    }
}

/// First in a TLS connection's pipeline. A TLS connection begins with a handshake record (content type 22);
/// any other first byte is a client speaking plaintext to the TLS port, and the connection is closed without
/// an answer (see PROTOCOL.md, "TLS"). Removes itself once the first byte has passed.
final class TLSRecordGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// The TLS record content type of a handshake message.
    static let handshakeRecordType: UInt8 = 22

    private let logger: Logger
    private var refused = false

    init(logger: Logger) {
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        let buffer = unwrapInboundIn(data)
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else {
            return context.fireChannelRead(data)
        }
        guard first == Self.handshakeRecordType else {
            refused = true
            logger.info("closing a connection that does not speak TLS on the TLS port", metadata: [
                "peer": "\(context.channel.remoteAddress?.description ?? "?")",
                "firstByte": "0x\(String(first, radix: 16))",
            ])
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(data)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
