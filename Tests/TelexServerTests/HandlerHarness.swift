import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOPosix
import TelexProtocol
import TelexStorage
import Testing

@testable import TelexServer

/// The frame decoder and a `ConnectionHandler` on an `NIOAsyncTestingChannel`, over a real `TopicStore` in a
/// temporary directory. Frames go in as bytes; `next()` decodes what the handler wrote.
final class HandlerHarness {
    let channel: NIOAsyncTestingChannel
    let store: TopicStore
    let threadPool: NIOThreadPool
    let directory: String
    /// The principals the handler checks against; `reload()` it after changing the users file.
    let access: AccessControl
    private var decoder = FrameDecoder()
    private var received = ByteBuffer()

    /// `access`: share one `AccessControl` (and its login backoff) between harnesses; by default each has its own.
    /// `tls`: the handler acts as on a TLS connection whose handshake completed (DELIVER batches read into memory).
    /// `holdingWrites`: a `WriteHolder` at the head of the pipeline passes writes on but keeps their promises.
    init(
        peerCommonName: String? = nil, access: AccessControl? = nil, tls: Bool = false,
        holdingWrites: WriteHolder? = nil, configure: (inout ServerConfiguration) -> Void = { _ in }
    ) async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("telex-handler-\(UUID().uuidString)").path
        var configuration = ServerConfiguration(dataDirectory: directory)
        configure(&configuration)
        var logger = Logger(label: "telex.test.handler")
        logger.logLevel = .warning
        store = try TopicStore(directory: directory, configuration: configuration.log, logger: logger)
        threadPool = NIOThreadPool(numberOfThreads: 1)
        threadPool.start()
        let hub = TopicHub()
        let access = try access ?? AccessControl(configuration: configuration, logger: logger)
        self.access = access
        channel = try await NIOAsyncTestingChannel { [store, threadPool, configuration, logger] channel in
            let handler = ConnectionHandler(
                store: store, hub: hub, configuration: configuration, threadPool: threadPool, access: access,
                topicCreationLimiter: TopicCreationLimiter(limits: configuration.limits, existingTopics: 0), logger: logger)
            handler.peerCommonName = peerCommonName
            if let holdingWrites { try channel.pipeline.syncOperations.addHandler(holdingWrites) }
            try channel.pipeline.syncOperations.addHandlers([
                FileRegionReader(),
                ByteToMessageHandler(FrameDecoder(limits: FrameLimits(maxFrameSize: configuration.maxFrameSize))),
                handler,
            ])
            handler.usesTLS = tls
            handler.tlsHandshakeCompleted = tls
        }
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 7420)).get()
    }

    /// Closes the channel (if the handler has not), the store and the pool, and removes the directory.
    func finish() async throws {
        if channel.isActive { _ = try await channel.finish(acceptAlreadyClosed: true) }
        try store.close()
        try await threadPool.shutdownGracefully()
        try? FileManager.default.removeItem(atPath: directory)
    }

    func send(_ message: ClientMessage, requestID: UInt32) async throws {
        try await channel.writeInbound(Self.encode(message, requestID: requestID))
    }

    static func encode(_ message: ClientMessage, requestID: UInt32) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeMessage(message, requestID: requestID)
        return buffer
    }

    func hello(token: String = "") async throws {
        try await send(.hello(minVersion: 1, maxVersion: 1, clientName: "handler-test", authToken: ByteBuffer(string: token)),
                       requestID: 1)
        let (_, reply) = try await next()
        guard case .helloOK = reply else {
            Issue.record("expected HELLO_OK, got \(reply)")
            return
        }
    }

    /// The next message the handler wrote, waiting for it if need be.
    func next() async throws -> (requestID: UInt32, message: BrokerMessage) {
        while true {
            if let frame = try decoder.decode(buffer: &received) {
                return (frame.header.requestID, try BrokerMessage.decode(frame))
            }
            let data = try await channel.waitForOutboundWrite(as: IOData.self)
            guard case .byteBuffer(var bytes) = data else {
                throw TelexError(.internalError, "a file region passed the FileRegionReader")
            }
            received.writeBuffer(&bytes)
        }
    }

    /// Whether the handler closed the channel (after anything it wrote before).
    func waitForClose() async throws {
        try await channel.closeFuture.get()
    }

    /// Runs `body` with the connection handler on the channel's event loop.
    func withHandler<T: Sendable>(_ body: @escaping @Sendable (ConnectionHandler) -> T) async throws -> T {
        let channel = self.channel
        return try await channel.testingEventLoop.executeInContext {
            body(try channel.pipeline.syncOperations.handler(type: ConnectionHandler.self))
        }
    }
}

/// A socket that takes every write and never reports one as sent: writes pass on at once, their promises are kept
/// until `release()`, as a peer that does not read would leave them.
final class WriteHolder: ChannelOutboundHandler, @unchecked Sendable {
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// Confined to the channel's event loop.
    private var held: [EventLoopPromise<Void>] = []

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if let promise { held.append(promise) }
        context.write(data, promise: nil)
    }

    /// Completes every held write, as if the peer had read them; returns how many there were.
    func release(on channel: NIOAsyncTestingChannel) async throws -> Int {
        try await channel.testingEventLoop.executeInContext {
            let promises = self.held
            self.held = []
            for promise in promises { promise.succeed() }
            return promises.count
        }
    }
}

/// Turns the handler's sendfile writes into byte buffers by reading the file region while it is still open, as the
/// socket would; everything else passes through.
final class FileRegionReader: ChannelOutboundHandler, Sendable {
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .fileRegion(let region) = unwrapOutboundIn(data) else {
            return context.write(data, promise: promise)
        }
        do {
            var bytes = context.channel.allocator.buffer(capacity: region.readableBytes)
            _ = try region.fileHandle.withUnsafeFileDescriptor { descriptor in
                try bytes.writeWithUnsafeMutableBytes(minimumWritableBytes: region.readableBytes) { pointer in
                    let count = pread(descriptor, pointer.baseAddress, region.readableBytes, off_t(region.readerIndex))
                    guard count == region.readableBytes else {
                        throw TelexError(.storageFailure, "short read of a file region: \(count) of \(region.readableBytes)")
                    }
                    return count
                }
            }
            context.write(wrapOutboundOut(.byteBuffer(bytes)), promise: promise)
        } catch {
            promise?.fail(error)
        }
    }
}

/// One published batch of `records` small records.
func makeBatch(records: Int = 2, seed: Int = 0) -> ByteBuffer {
    var builder = RecordBatchBuilder()
    for index in 0..<records {
        builder.append(timestamp: 1_700_000_000_000 + Int64(index), key: ByteBuffer(string: "key-\(seed)-\(index)"),
                       value: ByteBuffer(string: "value \(seed)-\(index)"))
    }
    return builder.build(codec: .none)
}
