import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TelexProtocol

/// A TCP proxy between clients and a broker that tests can cut, and that records the type of every frame a
/// client sends: the way to drop a connection in the middle of a publish or a subscription, and to see that
/// the broker was sent UNSUBSCRIBE. With `corruptingFirstDeliver` it flips a bit in the first DELIVER a client
/// is sent, in the last byte of its last batch (CRC-covered), as a bad network or bad broker memory would.
final class TestProxy: Sendable {
    private let serverChannel: any Channel
    private let state: NIOLockedValueBox<State>

    private struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        var clientFrameTypes: [MessageType] = []
        var connectionsAccepted = 0
        var corruptedDeliver: (topic: String, offset: Int64)?
    }

    var port: Int { serverChannel.localAddress!.port! }

    static func start(targetPort: Int, corruptingFirstDeliver: Bool = false) async throws -> TestProxy {
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
                        let corrupter = NIOLockedValueBox(DeliverCorrupter(enabled: corruptingFirstDeliver))
                        let toClient = Forwarder(peer: inbound, observe: { _ in }) { bytes in
                            let (out, corrupted) = corrupter.withLockedValue { ($0.feed(bytes), $0.corrupted) }
                            if let corrupted { state.withLockedValue { $0.corruptedDeliver = corrupted } }
                            return out
                        }
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

    /// The topic and base offset of the batch `corruptingFirstDeliver` damaged, once it has.
    var corruptedDeliver: (topic: String, offset: Int64)? { state.withLockedValue { $0.corruptedDeliver } }

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
        let rewrite: @Sendable (ByteBuffer) -> ByteBuffer

        init(
            peer: any Channel, observe: @escaping @Sendable (ByteBuffer) -> Void,
            rewrite: @escaping @Sendable (ByteBuffer) -> ByteBuffer = { $0 }
        ) {
            self.peer = peer
            self.observe = observe
            self.rewrite = rewrite
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = unwrapInboundIn(data)
            observe(bytes)
            let out = rewrite(bytes)
            if out.readableBytes > 0 { peer.writeAndFlush(out, promise: nil) }
        }

        func channelInactive(context: ChannelHandlerContext) {
            peer.close(promise: nil)
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }

    /// Passes broker bytes on in whole frames, flipping a bit in the last byte of the first DELIVER.
    private struct DeliverCorrupter {
        var enabled: Bool
        var pending = ByteBuffer()
        var corrupted: (topic: String, offset: Int64)?

        mutating func feed(_ bytes: ByteBuffer) -> ByteBuffer {
            guard enabled, corrupted == nil || pending.readableBytes > 0 else { return bytes }
            pending.writeImmutableBuffer(bytes)
            var out = ByteBuffer()
            while let length = pending.getInteger(at: pending.readerIndex, as: UInt32.self),
                pending.readableBytes >= 4 + Int(length)
            {
                var frame = pending.readSlice(length: 4 + Int(length))!
                if corrupted == nil, frame.getInteger(at: frame.readerIndex + 5, as: UInt8.self) == MessageType.deliver.rawValue {
                    // Body: subscription id, topic (u16 length + bytes), then the batches.
                    var body = frame.getSlice(at: frame.readerIndex + 12, length: Int(length) - 8)!
                    _ = body.readInteger(as: UInt32.self)
                    let topicLength = Int(body.readInteger(as: UInt16.self)!)
                    let topic = body.readString(length: topicLength)!
                    let last = try! RecordBatch.split(body).last!
                    corrupted = (topic, RecordBatchHeader.peek(last, at: last.readerIndex)!.baseOffset)
                    let end = frame.writerIndex - 1
                    frame.setInteger(frame.getInteger(at: end, as: UInt8.self)! ^ 0x20, at: end)
                }
                out.writeBuffer(&frame)
            }
            pending.discardReadBytes()
            return out
        }
    }
}
