import NIOCore
import TelexProtocol

/// Stands in for the `ConnectionHandler` on a connection the broker will not serve: sends one ERROR frame
/// (request id 0) as soon as the connection is active, then closes it. Reads nothing.
final class ConnectionRefuser: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let error: TelexError
    private var refused = false

    init(_ error: TelexError) {
        self.error = error
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
        context.writeAndFlush(wrapOutboundOut(frame)).whenComplete { _ in channel.close(promise: nil) }
    }
}
