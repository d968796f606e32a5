import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TelexProtocol

/// A TCP proxy between clients and a broker that tests can cut, and that records the type of every frame a
/// client sends: the way to drop a connection in the middle of a publish or a subscription, and to see that
/// the broker was sent UNSUBSCRIBE.
final class TestProxy: Sendable {
    private let serverChannel: any Channel
    private let state: NIOLockedValueBox<State>

    private struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        var clientFrameTypes: [MessageType] = []
        var connectionsAccepted = 0
    }

    var port: Int { serverChannel.localAddress!.port! }

    static func start(targetPort: Int) async throws -> TestProxy {
        let state = NIOLockedValueBox(State())
        let group = MultiThreadedEventLoopGroup.singleton
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { inbound in
                ClientBootstrap(group: inbound.eventLoop)
                    .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                    .connect(host: "127.0.0.1", port: targetPort)
                    .flatMap { outbound in
                        state.withLockedValue { state in
                            state.connectionsAccepted += 1
                            state.channels[ObjectIdentifier(inbound)] = inbound
                            state.channels[ObjectIdentifier(outbound)] = outbound
                        }
                        let scanner = NIOLockedValueBox(ByteBuffer())
                        let toBroker = Forwarder(peer: outbound) { bytes in
                            let types = scanner.withLockedValue { buffer in
                                buffer.writeImmutableBuffer(bytes)
                                return Self.completeFrameTypes(&buffer)
                            }
                            state.withLockedValue { $0.clientFrameTypes += types }
                        }
                        let toClient = Forwarder(peer: inbound) { _ in }
                        return outbound.pipeline.addHandler(toClient).flatMap {
                            inbound.pipeline.addHandler(toBroker)
                        }.flatMap {
                            inbound.setOption(.autoRead, value: true)
                        }
                    }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return TestProxy(serverChannel: channel, state: state)
    }

    private init(serverChannel: any Channel, state: NIOLockedValueBox<State>) {
        self.serverChannel = serverChannel
        self.state = state
    }

    /// Closes every proxied connection (both sides); new connections are still accepted.
    func cutAll() {
        let channels = state.withLockedValue { state in
            defer { state.channels = [:] }
            return Array(state.channels.values)
        }
        for channel in channels { channel.close(promise: nil) }
    }

    /// Types of the frames clients have sent through the proxy, in order.
    var clientFrameTypes: [MessageType] { state.withLockedValue { $0.clientFrameTypes } }

    var connectionsAccepted: Int { state.withLockedValue { $0.connectionsAccepted } }

    func stop() async {
        cutAll()
        try? await serverChannel.close()
    }

    /// Removes whole frames from `buffer` and returns their types.
    private static func completeFrameTypes(_ buffer: inout ByteBuffer) -> [MessageType] {
        var types: [MessageType] = []
        while let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self),
            buffer.readableBytes >= 4 + Int(length)
        {
            if let raw = buffer.getInteger(at: buffer.readerIndex + 5, as: UInt8.self), let type = MessageType(rawValue: raw) {
                types.append(type)
            }
            buffer.moveReaderIndex(forwardBy: 4 + Int(length))
        }
        buffer.discardReadBytes()
        return types
    }

    /// Copies bytes to the other side and closes it when this side closes.
    private final class Forwarder: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let peer: any Channel
        let observe: @Sendable (ByteBuffer) -> Void

        init(peer: any Channel, observe: @escaping @Sendable (ByteBuffer) -> Void) {
            self.peer = peer
            self.observe = observe
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = unwrapInboundIn(data)
            observe(bytes)
            peer.writeAndFlush(bytes, promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            peer.close(promise: nil)
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}
