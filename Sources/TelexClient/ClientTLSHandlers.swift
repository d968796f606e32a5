import NIOCore
import NIOSSL
import TelexProtocol

/// First in a TLS connection's pipeline: the broker's first byte must start a TLS record (a handshake, or an
/// alert). Anything else is a broker answering in plaintext: the connection fails at once with `tlsFailure`
/// instead of waiting for a handshake that will never come. Removes itself once the first byte has passed.
final class TLSReplyGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// TLS record content types a server may start with.
    private static let handshakeRecordType: UInt8 = 22
    private static let alertRecordType: UInt8 = 21

    private let address: String
    private var refused = false

    init(address: String) {
        self.address = address
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        let buffer = unwrapInboundIn(data)
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else {
            return context.fireChannelRead(data)
        }
        guard first == Self.handshakeRecordType || first == Self.alertRecordType else {
            refused = true
            context.fireErrorCaught(TelexError(.tlsFailure,
                "\(address) answered in plaintext: the broker does not speak TLS here; connect without --tls and "
                    + "--tls-ca, or start telexd with --tls-cert and --tls-key"))
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(data)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// Right after `NIOSSLClientHandler`: turns a TLS error before the broker's first answer (an untrusted or
/// misnamed certificate, a client certificate the broker refused) into a `tlsFailure` that says what to check.
/// Later TLS errors are lost connections (`connectionFailed`), retried like any other.
final class TLSErrorTranslator: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let address: String
    private let verifiedName: String
    private var receivedData = false

    init(address: String, verifiedName: String) {
        self.address = address
        self.verifiedName = verifiedName
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        receivedData = true
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is NIOSSLError || error is BoringSSLError || error is NIOSSLExtraError else {
            return context.fireErrorCaught(error)
        }
        let closedUncleanly = if case .uncleanShutdown? = error as? NIOSSLError { true } else { false }
        if receivedData || closedUncleanly {
            return context.fireErrorCaught(
                TelexError(.connectionFailed, "the TLS connection to \(address) failed: \(error)"))
        }
        context.fireErrorCaught(TelexError(.tlsFailure,
            "TLS with \(address) failed (\(error)); check that --tls-ca names the CA that signed the broker's "
                + "certificate, that the certificate is valid for \(verifiedName) (else pass --tls-server-name), and "
                + "that the broker accepts the client certificate of --tls-cert if it requires one"))
    }
}
