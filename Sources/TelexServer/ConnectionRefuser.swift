import NIOCore
import TelexProtocol

/// Stands in for the `ConnectionHandler` on a connection the broker will not serve: sends one ERROR frame
/// (request id 0) as soon as the connection is active, then closes it once the frame is written — or when
/// `closeAfter` has passed, whatever happened meanwhile: over TLS the frame waits for a handshake that a silent
/// client never completes. Reads nothing.
final class ConnectionRefuser: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let error: TelexError
    private let closeAfter: TimeAmount
    private var refused = false

    init(_ error: TelexError, closeAfter: TimeAmount) {
        self.error = error
        self.closeAfter = closeAfter
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { refuse(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        refuse(context: context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    private func refuse(context: ChannelHandlerContext) {
        guard !refused else { return }
        refused = true
        var frame = context.channel.allocator.buffer(capacity: 64 + error.message.utf8.count)
        frame.writeMessage(.error(code: error.code, message: error.message), requestID: 0)
        let channel = context.channel
        let deadline = context.eventLoop.scheduleTask(in: closeAfter) { channel.close(promise: nil) }
        channel.closeFuture.whenComplete { _ in deadline.cancel() }
        context.writeAndFlush(wrapOutboundOut(frame)).whenComplete { _ in channel.close(promise: nil) }
    }
}
