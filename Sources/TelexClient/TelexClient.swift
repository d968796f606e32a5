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
        var chunks: [Range<Int>] = []
        var start = 0
        var bytes = 0
        for (index, record) in records.enumerated() {
            let size = 16 + record.key.readableBytes + record.value.readableBytes
                + record.headers.reduce(0) { $0 + 6 + $1.name.utf8.count + $1.value.readableBytes }
            if index > start, index - start >= configuration.maxBatchRecords || bytes + size > configuration.maxBatchBytes {
                chunks.append(start..<index)
                start = index
                bytes = 0
            }
            bytes += size
        }
        if start < records.count { chunks.append(start..<records.count) }
        let firstSequence: Int32 = lock.withLock {
            let first = sequences[topic, default: 0]
            sequences[topic] = first &+ Int32(chunks.count)
            return first
        }
        let configuration = self.configuration
        let producerID = self.producerID
        let workers = max(1, min(System.coreCount, chunks.count))
        var batches = [PreparedBatch?](repeating: nil, count: chunks.count)
        try await withThrowingTaskGroup(of: [(Int, PreparedBatch)].self) { group in
            for worker in 0..<workers {
                group.addTask {
                    let compressor = configuration.codec == .zlib ? ZlibCompressor(level: configuration.compressionLevel) : nil
                    var built: [(Int, PreparedBatch)] = []
                    for index in stride(from: worker, to: chunks.count, by: workers) {
                        var builder = RecordBatchBuilder(reservingCapacity: 64 << 10)
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

    /// Publishes records to `topic` and returns one ack per batch, in order, once each is durable on the broker.
    public func publish(_ records: [Record], to topic: String) async throws -> [PublishAck] {
        try await publish(prepared: try await prepare(records, topic: topic))
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
    public func publish(prepared batches: [PreparedBatch], onAck: ((Int, PublishAck) -> Void)? = nil) async throws -> [PublishAck] {
        var acks = [PublishAck?](repeating: nil, count: batches.count)
        var nextToSend = 0
        var inFlight: [(index: Int, future: EventLoopFuture<Message>)] = []
        var inFlightHead = 0
        var failures = 0
        while nextToSend < batches.count || inFlightHead < inFlight.count {
            let connection = try await currentConnection()
            do {
                while nextToSend < batches.count, inFlight.count - inFlightHead < configuration.publishWindow {
                    let batch = batches[nextToSend]
                    inFlight.append((nextToSend, connection.send(.publish(topic: batch.topic, batch: batch.bytes))))
                    nextToSend += 1
                }
                let (index, future) = inFlight[inFlightHead]
                let reply = try await future.get()
                guard case .publishAck(let topic, let baseOffset, let recordCount, let duplicate) = reply else {
                    throw TelexError(.malformedFrame, "expected PUBLISH_ACK, got \(reply.type.name)")
                }
                let ack = PublishAck(topic: topic, baseOffset: baseOffset, recordCount: recordCount, duplicate: duplicate)
                acks[index] = ack
                onAck?(index, ack)
                inFlightHead += 1
                failures = 0
                if inFlightHead > 1024 {
                    inFlight.removeFirst(inFlightHead)
                    inFlightHead = 0
                }
            } catch let error as TelexError where error.code == .connectionFailed || error.code == .timeout {
                failures += 1
                guard failures <= configuration.maxReconnectAttempts else { throw error }
                logger.warning("publish interrupted; re-sending unacknowledged batches", metadata: ["error": "\(error)"])
                // Everything not yet acknowledged is sent again, in order, on the next connection.
                nextToSend = inFlight[inFlightHead].index
                inFlight = []
                inFlightHead = 0
                await dropConnection(connection)
            }
        }
        return acks.map { $0! }
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
