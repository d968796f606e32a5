import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TelexEvents
import TelexProtocol

/// The broker's acknowledgement of one published batch.
public struct PublishAck: Sendable, Equatable {
    public var topic: String
    public var baseOffset: Int64
    public var recordCount: UInt32
    /// True when the broker had already stored this batch (an idempotent retry) and returned its original offsets.
    public var duplicate: Bool
}

/// A batch encoded and compressed once, ready to publish (and to re-send unchanged on retry).
public struct PreparedBatch: Sendable {
    public let topic: String
    public let bytes: ByteBuffer
    public let recordCount: Int
}

/// An async client for a Telex broker: publish with batching, compression, pipelining and idempotent retries;
/// subscribe as an `AsyncSequence`; commit durable consumer positions.
///
/// Thread-safe. One TCP connection, re-established with backoff when it drops.
public final class TelexClient: @unchecked Sendable {
    public let configuration: ClientConfiguration
    let logger: Logger
    private let group: MultiThreadedEventLoopGroup
    private let lock = NIOLock()
    private var connection: Connection?
    private var connecting: Task<Connection, Error>?
    private var sequences: [String: Int32] = [:]
    private var nextSubscriptionID: UInt32 = 1
    private var isClosed = false
    /// zlib compressors reused across calls: creating one costs a few hundred KB of zeroed memory.
    private var compressors: [ZlibCompressor] = []
    /// This client's idempotent producer id: random, nonzero, fixed for the client's life.
    public let producerID: Int64

    private init(configuration: ClientConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var id: Int64 = 0
        while id == 0 { id = Int64.random(in: 1...Int64.max) }
        producerID = id
    }

    /// Connects and completes the handshake; throws `connectionFailed` with advice when the broker is unreachable.
    public static func connect(
        configuration: ClientConfiguration = .init(), logger: Logger = Logger(label: "telex.client")
    ) async throws -> TelexClient {
        let client = TelexClient(configuration: configuration, logger: logger)
        do {
            _ = try await client.currentConnection(attempts: 1)
        } catch {
            try? await client.group.shutdownGracefully()
            throw error
        }
        return client
    }

    /// The broker's name from HELLO_OK.
    public var serverName: String { lock.withLock { connection?.serverName ?? "" } }

    /// The live connection, reconnecting with exponential backoff if it dropped.
    func currentConnection(attempts: Int? = nil) async throws -> Connection {
        if let live = lock.withLock({ connection }), live.isActive { return live }
        let task: Task<Connection, Error> = try lock.withLock {
            if isClosed { throw TelexError(.closed, "the client was closed") }
            if let connection, connection.isActive { return Task { connection } }
            if let connecting { return connecting }
            let configuration = self.configuration
            let group = self.group
            let logger = self.logger
            let attempts = attempts ?? configuration.maxReconnectAttempts
            let task = Task<Connection, Error> {
                var delay = configuration.initialReconnectDelay
                var attempt = 1
                while true {
                    do {
                        return try await Connection.connect(configuration: configuration, group: group, logger: logger)
                    } catch {
                        guard attempt < attempts else { throw error }
                        logger.info("reconnecting", metadata: ["attempt": "\(attempt)", "error": "\(error)"])
                        try await Task.sleep(nanoseconds: UInt64(delay.nanoseconds))
                        delay = min(delay * 2, configuration.maxReconnectDelay)
                        attempt += 1
                    }
                }
            }
            connecting = task
            return task
        }
        do {
            let connection = try await task.value
            lock.withLock {
                self.connection = connection
                if connecting == task { connecting = nil }
            }
            return connection
        } catch {
            lock.withLock { if connecting == task { connecting = nil } }
            throw error
        }
    }

    // MARK: Publishing

    /// Encodes `records` for `topic` into batches (up to `maxBatchRecords` / `maxBatchBytes` each), compressed
    /// with the configured codec on the available cores, each with this producer's next sequence number.
    public func prepare(_ records: [Record], topic: String) async throws -> [PreparedBatch] {
        try TopicName.validate(topic)
        var ranges: [Range<Int>] = []
        var sizes: [Int] = []
        var start = 0
        var bytes = 0
        for (index, record) in records.enumerated() {
            let size = 16 + record.key.readableBytes + record.value.readableBytes
                + record.headers.reduce(0) { $0 + 6 + $1.name.utf8.count + $1.value.readableBytes }
            if index > start, index - start >= configuration.maxBatchRecords || bytes + size > configuration.maxBatchBytes {
                ranges.append(start..<index)
                sizes.append(bytes)
                start = index
                bytes = 0
            }
            bytes += size
        }
        if start < records.count {
            ranges.append(start..<records.count)
            sizes.append(bytes)
        }
        let (chunks, chunkBytes) = (ranges, sizes)
        let firstSequence: Int32 = lock.withLock {
            let first = sequences[topic, default: 0]
            sequences[topic] = first &+ Int32(chunks.count)
            return first
        }
        let configuration = self.configuration
        let producerID = self.producerID
        let workers = max(1, min(System.coreCount, chunks.count))
        if chunks.count == 1 {
            // One batch: compress it right here rather than pay for a task group.
            let compressor = configuration.codec == .zlib ? takeCompressor() : nil
            defer { if let compressor { returnCompressor(compressor) } }
            var builder = RecordBatchBuilder(reservingCapacity: chunkBytes[0])
            for record in records { builder.append(record) }
            let bytes = builder.build(codec: configuration.codec, compressor: compressor, producerID: producerID,
                                      producerSequence: firstSequence)
            return [PreparedBatch(topic: topic, bytes: bytes, recordCount: builder.count)]
        }
        var batches = [PreparedBatch?](repeating: nil, count: chunks.count)
        try await withThrowingTaskGroup(of: [(Int, PreparedBatch)].self) { group in
            for worker in 0..<workers {
                group.addTask {
                    let compressor = configuration.codec == .zlib ? self.takeCompressor() : nil
                    defer { if let compressor { self.returnCompressor(compressor) } }
                    var built: [(Int, PreparedBatch)] = []
                    for index in stride(from: worker, to: chunks.count, by: workers) {
                        var builder = RecordBatchBuilder(reservingCapacity: chunkBytes[index])
                        for record in records[chunks[index]] { builder.append(record) }
                        let bytes = builder.build(codec: configuration.codec, compressor: compressor, producerID: producerID,
                                                  producerSequence: firstSequence &+ Int32(index))
                        built.append((index, PreparedBatch(topic: topic, bytes: bytes, recordCount: builder.count)))
                    }
                    return built
                }
            }
            for try await built in group {
                for (index, batch) in built { batches[index] = batch }
            }
        }
        return batches.map { $0! }
    }

    private func takeCompressor() -> ZlibCompressor {
        lock.withLock { compressors.popLast() } ?? ZlibCompressor(level: configuration.compressionLevel)
    }

    private func returnCompressor(_ compressor: ZlibCompressor) {
        lock.withLock { if compressors.count < 2 * System.coreCount { compressors.append(compressor) } }
    }

    /// Publishes records to `topic` and returns one ack per batch, in order, once each is durable on the broker.
    ///
    /// Compression runs ahead of sending: while one group of batches is in flight the next is being compressed.
    public func publish(_ records: [Record], to topic: String) async throws -> [PublishAck] {
        let groupSize = configuration.maxBatchRecords * max(2, min(configuration.publishWindow, 16))
        var groups: [Range<Int>] = []
        var start = 0
        while start < records.count {
            groups.append(start..<min(start + groupSize, records.count))
            start += groupSize
        }
        let pipeline = PublishPipeline(client: self)
        var preparing: Task<[PreparedBatch], Error>? = groups.first.map { first in
            Task { try await self.prepare(Array(records[first]), topic: topic) }
        }
        for index in groups.indices {
            let batches = try await preparing!.value
            preparing = index + 1 < groups.count
                ? Task { [groups] in try await self.prepare(Array(records[groups[index + 1]]), topic: topic) } : nil
            for batch in batches { try await pipeline.submit(batch) }
        }
        return try await pipeline.finish()
    }

    /// Publishes CloudEvents; each goes to `topic` or, when nil, to the event's own `topic` attribute.
    /// Returns each event's topic and offset, in input order.
    public func publish(events: [CloudEvent], to topic: String? = nil) async throws -> [(topic: String, offset: Int64)] {
        var byTopic: [String: [Int]] = [:]
        var topicOrder: [String] = []
        for (index, event) in events.enumerated() {
            guard let target = topic ?? event.topic else {
                throw TelexError(.invalidEvent, "event \(event.id) has no topic: pass one or set the event's 'topic' attribute")
            }
            if byTopic[target] == nil { topicOrder.append(target) }
            byTopic[target, default: []].append(index)
        }
        var results = [(topic: String, offset: Int64)](repeating: ("", -1), count: events.count)
        var prepared: [PreparedBatch] = []
        var owners: [[Int]] = []
        for target in topicOrder {
            let indexes = byTopic[target]!
            let batches = try await prepare(indexes.map { events[$0].record() }, topic: target)
            var position = 0
            for batch in batches {
                owners.append(Array(indexes[position..<position + batch.recordCount]))
                position += batch.recordCount
            }
            prepared += batches
        }
        let acks = try await publish(prepared: prepared)
        for (ack, indexes) in zip(acks, owners) {
            for (position, index) in indexes.enumerated() { results[index] = (ack.topic, ack.baseOffset + Int64(position)) }
        }
        return results
    }

    /// Publishes prepared batches in order with at most `publishWindow` awaiting acks. If the connection drops,
    /// it reconnects and re-sends every unacknowledged batch unchanged; the broker answers any it already
    /// stored with the original offsets, so nothing is stored twice.
    public func publish(prepared batches: [PreparedBatch]) async throws -> [PublishAck] {
        let pipeline = PublishPipeline(client: self)
        for batch in batches { try await pipeline.submit(batch) }
        return try await pipeline.finish()
    }

    /// Sends one prepared batch without waiting: the future completes with its ack. No retry on failure.
    /// For paced publishers (benchmarks, latency probes) that keep many single batches in flight.
    public func startPublish(_ batch: PreparedBatch) async throws -> EventLoopFuture<PublishAck> {
        try await currentConnection().send(.publish(topic: batch.topic, batch: batch.bytes)).flatMapThrowing { reply in
            guard case .publishAck(let topic, let baseOffset, let recordCount, let duplicate) = reply else {
                throw TelexError(.malformedFrame, "expected PUBLISH_ACK, got \(reply.type.name)")
            }
            return PublishAck(topic: topic, baseOffset: baseOffset, recordCount: recordCount, duplicate: duplicate)
        }
    }

    /// After a failed request: forget the connection if it is dead, or if it stopped answering (a timeout).
    func discardConnection(after error: TelexError) async {
        guard let current = lock.withLock({ connection }) else { return }
        if !current.isActive || error.code == .timeout { await dropConnection(current) }
    }

    func dropConnection(_ stale: Connection) async {
        let drop = lock.withLock { () -> Bool in
            guard connection === stale else { return false }
            connection = nil
            return true
        }
        if drop { await stale.close() }
    }

    /// Round-trip time of a PING.
    public func ping() async throws -> Duration {
        let clock = ContinuousClock()
        let start = clock.now
        let nonce = UInt64.random(in: 0...UInt64.max)
        let reply = try await currentConnection().request(.ping(nonce: nonce))
        guard case .pong(nonce) = reply else { throw TelexError(.malformedFrame, "PING answered with \(reply.type.name)") }
        return clock.now - start
    }

    // MARK: Subscribing

    /// Subscribes to a topic or pattern (`news.*`, `news.>`). With a `consumer` name, committed positions
    /// override `start` for topics that have one. With `untilCaughtUp`, the sequence ends once everything stored
    /// at subscribe time has been delivered (the index-rebuild mode).
    public func subscribe(
        _ pattern: String, from start: StartPosition = .end, consumer: String? = nil, untilCaughtUp: Bool = false
    ) async throws -> TelexSubscription {
        try TopicName.validatePattern(pattern)
        let subscription = TelexSubscription(client: self, pattern: pattern, start: start, consumer: consumer,
                                             untilCaughtUp: untilCaughtUp, credit: configuration.subscriptionCredit)
        try await subscription.open(resume: [:])
        return subscription
    }

    func makeSubscriptionID() -> UInt32 {
        lock.withLock {
            defer { nextSubscriptionID &+= 1 }
            return nextSubscriptionID
        }
    }

    /// Closes the connection and releases the client's thread.
    public func close() async {
        let (current, connecting) = lock.withLock { () -> (Connection?, Task<Connection, Error>?) in
            isClosed = true
            defer {
                connection = nil
                self.connecting = nil
            }
            return (connection, self.connecting)
        }
        connecting?.cancel()
        await current?.close()
        try? await group.shutdownGracefully()
    }
}

/// Keeps up to `publishWindow` batches awaiting acks, in order; on a lost connection it reconnects and
/// re-sends every unacknowledged batch unchanged (idempotent: the broker recognises what it already stored).
/// Used by one task at a time.
final class PublishPipeline {
    private let client: TelexClient
    private var unacked: [(batch: PreparedBatch, reply: EventLoopFuture<BrokerMessage>)] = []
    private var head = 0
    private var acks: [PublishAck] = []
    private var failures = 0

    init(client: TelexClient) {
        self.client = client
    }

    /// Sends `batch`, first waiting for the oldest ack if the window is full.
    func submit(_ batch: PreparedBatch) async throws {
        while unacked.count - head >= client.configuration.publishWindow { try await awaitOldest() }
        let connection = try await client.currentConnection()
        unacked.append((batch, connection.send(.publish(topic: batch.topic, batch: batch.bytes))))
    }

    /// Waits for every outstanding ack; returns all acks in submission order.
    func finish() async throws -> [PublishAck] {
        while head < unacked.count { try await awaitOldest() }
        return acks
    }

    private func awaitOldest() async throws {
        do {
            let reply = try await unacked[head].reply.get()
            guard case .publishAck(let topic, let baseOffset, let recordCount, let duplicate) = reply else {
                throw TelexError(.malformedFrame, "expected PUBLISH_ACK, got \(reply.type.name)")
            }
            acks.append(PublishAck(topic: topic, baseOffset: baseOffset, recordCount: recordCount, duplicate: duplicate))
            head += 1
            failures = 0
            if head >= 1024 {
                unacked.removeFirst(head)
                head = 0
            }
        } catch let error as TelexError where error.code == .connectionFailed || error.code == .timeout {
            failures += 1
            guard failures <= client.configuration.maxReconnectAttempts else { throw error }
            client.logger.warning("publish interrupted; re-sending unacknowledged batches", metadata: ["error": "\(error)"])
            await client.discardConnection(after: error)
            let connection = try await client.currentConnection()
            for index in head..<unacked.count {
                let batch = unacked[index].batch
                unacked[index].reply = connection.send(.publish(topic: batch.topic, batch: batch.bytes))
            }
        }
    }
}
