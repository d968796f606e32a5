import NIOCore
import TelexProtocol

/// The broker's acknowledgement of one published batch.
public struct PublishAck: Sendable, Equatable {
    public var topic: String
    public var baseOffset: Int64
    public var recordCount: UInt32
    /// True when the broker had already stored this batch (an idempotent retry) and returned its original offsets.
    public var duplicate: Bool

    public init(topic: String, baseOffset: Int64, recordCount: UInt32, duplicate: Bool) {
        self.topic = topic
        self.baseOffset = baseOffset
        self.recordCount = recordCount
        self.duplicate = duplicate
    }
}

/// A batch encoded and compressed once, ready to publish (and to re-send unchanged on retry).
public struct PreparedBatch: Sendable {
    public let topic: String
    public let bytes: ByteBuffer
    public let recordCount: Int
}

/// A publish that stopped before every batch was acknowledged (cancelled, or failed after its retries):
/// exactly what the broker acknowledged, and what it may not have stored.
///
/// `acknowledged` holds the acks of the first batches, in order; they cover the first
/// `acknowledgedRecordCount` records. Re-publishing `unacknowledged` with `publish(prepared:)` on the same
/// client is safe: a batch the broker did store is answered with its original offsets (`duplicate`),
/// never stored twice.
public struct PublishError: Error, Sendable, CustomStringConvertible {
    /// Why publishing stopped: `CancellationError` or a `TelexError`.
    public var underlying: any Error
    public var acknowledged: [PublishAck]
    public var unacknowledged: [PreparedBatch]
    /// With `publish(_:to:)`: the input records in neither list, never sent (empty for `publish(prepared:)`).
    /// Publish them again as new records; unlike `unacknowledged`, they cannot have been stored.
    public var unsentRecords: Range<Int> = 0..<0

    public var acknowledgedRecordCount: Int { acknowledged.reduce(0) { $0 + Int($1.recordCount) } }
    /// The underlying `TelexError`, if that is what stopped the publish.
    public var telexError: TelexError? { underlying as? TelexError }

    public var description: String {
        "\(underlying) (\(acknowledged.count) batch(es) acknowledged, \(unacknowledged.count) not)"
    }
}

/// One batch sent without waiting; `ack()` waits for the broker's acknowledgement.
public struct PendingAck: Sendable {
    let reply: EventLoopFuture<BrokerMessage>
    let connection: Connection
    let requestID: UInt32

    /// Waits for the acknowledgement. Cancelling the task ends the wait with `CancellationError` (the batch may
    /// still be stored).
    public func ack() async throws -> PublishAck {
        let reply = try await reply.getCancellable { [connection, requestID] in connection.abandon(requestID: requestID) }
        return try PublishAck(reply: reply)
    }
}

extension PublishAck {
    init(reply: BrokerMessage) throws(TelexError) {
        guard case .publishAck(let topic, let baseOffset, let recordCount, let duplicate) = reply else {
            throw TelexError(.malformedFrame, "expected PUBLISH_ACK, got \(reply.type.name)")
        }
        // Offsets are at least 0 and every record's fits in an i64: a broken broker must not make a client trap.
        guard baseOffset >= 0, baseOffset <= Int64.max - Int64(recordCount) else {
            throw TelexError(.malformedFrame,
                "PUBLISH_ACK for \(topic) names offsets \(baseOffset) + \(recordCount) records, outside 0...\(Int64.max)",
                topic: topic)
        }
        self.init(topic: topic, baseOffset: baseOffset, recordCount: recordCount, duplicate: duplicate)
    }
}

extension TelexClient {
    /// Encodes `records` for `topic` into batches (up to `maxBatchRecords` / `maxBatchBytes` each), compressed
    /// with the configured codec on the available cores, each with this producer's next sequence number.
    public func prepare(_ records: [Record], topic: String) async throws -> [PreparedBatch] {
        try TopicName.validate(topic)
        var ranges: [Range<Int>] = []
        var sizes: [Int] = []
        var start = 0
        var bytes = 0
        for (index, record) in records.enumerated() {
            try RecordBatchBuilder.check(record, index: index)
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
        let firstSequence = reserveSequences(chunks.count, topic: topic)
        let build = { @Sendable (index: Int) -> PreparedBatch in
            var builder = RecordBatchBuilder(reservingCapacity: chunkBytes[index])
            for record in records[chunks[index]] { builder.append(record) }
            let sequence = firstSequence &+ Int32(truncatingIfNeeded: index)
            let bytes: ByteBuffer
            if self.configuration.codec == .zlib {
                bytes = self.codecs.withCompressor { compressor in
                    builder.build(codec: .zlib, compressor: compressor, producerID: self.producerID, producerSequence: sequence)
                }
            } else {
                bytes = builder.build(codec: self.configuration.codec, producerID: self.producerID, producerSequence: sequence)
            }
            return PreparedBatch(topic: topic, bytes: bytes, recordCount: builder.count)
        }
        // One batch: compress it right here rather than pay for a task group.
        if chunks.count <= 1 { return chunks.isEmpty ? [] : [build(0)] }
        let workers = max(1, min(System.coreCount, chunks.count))
        var batches = [PreparedBatch?](repeating: nil, count: chunks.count)
        try await withThrowingTaskGroup(of: [(Int, PreparedBatch)].self) { group in
            for worker in 0..<workers {
                group.addTask {
                    var built: [(Int, PreparedBatch)] = []
                    for index in stride(from: worker, to: chunks.count, by: workers) {
                        try Task.checkCancellation()
                        built.append((index, build(index)))
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
    ///
    /// Compression runs ahead of sending: while one group of batches is in flight the next is being compressed.
    /// If the publish is cancelled or fails part-way, it throws `PublishError`, which says what was acknowledged.
    public func publish(_ records: [Record], to topic: String) async throws -> [PublishAck] {
        try TopicName.validate(topic)
        let groupSize = configuration.maxBatchRecords * max(2, min(configuration.publishWindow, 16))
        let groups = stride(from: 0, to: records.count, by: groupSize).map { $0..<min($0 + groupSize, records.count) }
        var pipeline = PublishPipeline(client: self)
        var preparing: Task<[PreparedBatch], any Error>? = groups.first.map { first in
            Task { try await self.prepare(Array(records[first]), topic: topic) }
        }
        defer { preparing?.cancel() }
        for index in groups.indices {
            do {
                let batches = try await valueCancellable(of: preparing!)
                preparing = index + 1 < groups.count
                    ? Task { [groups] in try await self.prepare(Array(records[groups[index + 1]]), topic: topic) } : nil
                do {
                    try await pipeline.submit(batches)
                } catch var error as PublishError {
                    // Every batch of this group is acknowledged or listed as unacknowledged; later groups were not sent.
                    error.unsentRecords = groups[index].upperBound..<records.count
                    throw error
                }
            } catch let error as PublishError {
                throw error
            } catch {
                var interrupted = await pipeline.interrupted(by: error)
                interrupted.unsentRecords = groups[index].lowerBound..<records.count
                throw interrupted
            }
        }
        return try await pipeline.finish()
    }

    /// Publishes prepared batches in order with at most `publishWindow` awaiting acks. If the connection drops,
    /// it reconnects and re-sends every unacknowledged batch unchanged; the broker answers any it already
    /// stored with the original offsets, so nothing is stored twice. Throws `PublishError` if cancelled or if it
    /// fails part-way.
    public func publish(prepared batches: [PreparedBatch]) async throws -> [PublishAck] {
        var pipeline = PublishPipeline(client: self)
        try await pipeline.submit(batches)
        return try await pipeline.finish()
    }

    /// Sends one prepared batch without waiting for its ack, for paced publishers (benchmarks, latency probes)
    /// that keep many single batches in flight. No retry on failure.
    public func send(_ batch: PreparedBatch) async throws -> PendingAck {
        PendingAck(sending: batch, on: try await currentConnection())
    }
}

extension PendingAck {
    init(sending batch: PreparedBatch, on connection: Connection) {
        let requestID = connection.makeRequestID()
        self.init(reply: connection.send(.publish(topic: batch.topic, batch: batch.bytes), requestID: requestID),
                  connection: connection, requestID: requestID)
    }
}

/// Keeps up to `publishWindow` batches awaiting acks, in order; on a lost connection it reconnects and
/// re-sends every unacknowledged batch unchanged (idempotent: the broker recognises what it already stored).
/// A value used by one task.
struct PublishPipeline {
    private let client: TelexClient
    private var unacked: [(batch: PreparedBatch, pending: PendingAck)] = []
    private var head = 0
    private var acks: [PublishAck] = []
    private var failures = 0
    /// The connection the unacknowledged batches were sent on.
    private var connection: Connection?

    init(client: TelexClient) {
        self.client = client
    }

    /// Sends `batches` in order, waiting for the oldest ack whenever the window is full. A `PublishError` lists
    /// every batch not acknowledged, sent or not.
    mutating func submit(_ batches: [PreparedBatch]) async throws {
        for (index, batch) in batches.enumerated() {
            do {
                while unacked.count - head >= client.configuration.publishWindow { try await awaitOldest() }
                let connection = try await currentConnection()
                unacked.append((batch, PendingAck(sending: batch, on: connection)))
            } catch var error as PublishError {
                error.unacknowledged += batches[index...]
                throw error
            } catch {
                throw await interrupted(by: error, notSent: Array(batches[index...]))
            }
        }
    }

    /// Waits for every outstanding ack; returns all acks in submission order.
    mutating func finish() async throws -> [PublishAck] {
        while head < unacked.count { try await awaitOldest() }
        return acks
    }

    /// The error that reports what was and was not acknowledged when publishing stops.
    ///
    /// Acks that arrived before the failure but were not awaited yet (the window was not full) are collected first,
    /// in order up to the first batch without one: they count as acknowledged. Their futures are already complete
    /// when the connection failed, and a cancelled task fails the others at once, so this does not wait long.
    mutating func interrupted(by error: any Error, notSent: [PreparedBatch] = []) async -> PublishError {
        while head < unacked.count, let ack = try? await unacked[head].pending.ack() {
            acks.append(ack)
            head += 1
        }
        return PublishError(underlying: error, acknowledged: acks, unacknowledged: unacked[head...].map(\.batch) + notSent)
    }

    private mutating func awaitOldest() async throws {
        do {
            acks.append(try await unacked[head].pending.ack())
            head += 1
            failures = 0
            if head >= 1024 {
                unacked.removeFirst(head)
                head = 0
            }
        } catch let error as TelexError where [.connectionFailed, .timeout, .shuttingDown].contains(error.code) {
            failures += 1
            guard failures <= client.configuration.maxReconnectAttempts else { throw await interrupted(by: error) }
            client.logger.warning("publish interrupted; re-sending unacknowledged batches", metadata: ["error": "\(error)"])
            // A dead connection, or one that stopped answering or is shutting down, is not used again.
            await client.dropConnection(unacked[head].pending.connection)
            do {
                _ = try await currentConnection()
            } catch {
                throw await interrupted(by: error)
            }
        } catch {
            throw await interrupted(by: error)
        }
    }

    /// The client's live connection. If it is not the one the unacknowledged batches went out on (it dropped and
    /// the client reconnected), those are re-sent on it first, in order, so that no newer batch is stored
    /// before an older one of the same topic.
    private mutating func currentConnection() async throws -> Connection {
        let current = try await client.currentConnection()
        if let previous = connection, previous !== current {
            for index in head..<unacked.count {
                unacked[index].pending = PendingAck(sending: unacked[index].batch, on: current)
            }
        }
        connection = current
        return current
    }
}
