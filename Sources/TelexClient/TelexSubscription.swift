import NIOConcurrencyHelpers
import NIOCore
import TelexProtocol

/// One record as delivered: where it is stored and when the broker appended it.
public struct DeliveredRecord: Sendable {
    public var topic: String
    public var offset: Int64
    /// Broker append time of the record's batch, milliseconds since the epoch.
    public var brokerTime: Int64
    public var record: Record
}

/// A live subscription: an `AsyncSequence` of delivered records, in offset order per topic.
///
/// Credit-based: the broker sends at most `credit` batches ahead of the consumer, so a slow consumer holds
/// a bounded amount of memory. If the connection drops, iteration reconnects with backoff and resumes from
/// the offset after the last record it returned, per topic: no gap, no duplicate.
/// Iterate from one task at a time.
public final class TelexSubscription: AsyncSequence, @unchecked Sendable {
    public typealias Element = DeliveredRecord

    public let pattern: String
    public let start: StartPosition
    public let consumer: String?
    public let untilCaughtUp: Bool
    private let client: TelexClient
    private let credit: UInt32
    private let lock = NIOLock()
    private var sink = SubscriptionSink()
    private var connection: Connection?
    private var subscriptionID: UInt32 = 0
    private var positions: [String: Int64] = [:]
    private var ranges: [TopicRange] = []
    /// With `untilCaughtUp`: the end of each topic when the subscription first began; nothing past it is returned.
    private var snapshotEnds: [String: Int64]?
    private var currentTopic: String?
    private var currentNext: Int64 = 0
    private var cancelled = false

    init(client: TelexClient, pattern: String, start: StartPosition, consumer: String?, untilCaughtUp: Bool, credit: UInt32) {
        self.client = client
        self.pattern = pattern
        self.start = start
        self.consumer = consumer
        self.untilCaughtUp = untilCaughtUp
        self.credit = Swift.max(1, credit)
    }

    /// Topics matched when the subscription (re)started, with their start and end offsets.
    public var topics: [TopicRange] { lock.withLock { ranges } }

    /// The next offset this subscription will return, per topic it has returned records from.
    public var nextOffsets: [String: Int64] {
        lock.withLock {
            settlePositions()
            return positions
        }
    }

    /// Sends SUBSCRIBE on the current connection, resuming topics at `resume`.
    func open(resume: [String: Int64]) async throws {
        let connection = try await client.currentConnection()
        let id = client.makeSubscriptionID()
        let sink = SubscriptionSink()
        let reply = try await connection.request(
            .subscribe(subscriptionID: id, pattern: pattern, start: start, consumerName: consumer ?? "",
                       initialCredit: credit, resume: resume.map { TopicOffset(topic: $0.key, offset: $0.value) }
                        .sorted { $0.topic < $1.topic }),
            subscriptionSink: (id, sink))
        guard case .subscribed(_, let topics) = reply else {
            connection.forget(subscriptionID: id, sink: sink)
            throw TelexError(.malformedFrame, "SUBSCRIBE answered with \(reply.type.name)")
        }
        lock.withLock {
            self.connection = connection
            self.subscriptionID = id
            self.sink = sink
            self.ranges = topics
            // Every matched topic gets a position, so a reconnect resumes each one exactly where it was.
            settlePositions()
            for range in topics where positions[range.topic] == nil { positions[range.topic] = range.startOffset }
            if untilCaughtUp, snapshotEnds == nil {
                snapshotEnds = Dictionary(topics.map { ($0.topic, $0.endOffset) }, uniquingKeysWith: { $1 })
            }
        }
    }

    /// Commits, for this subscription's consumer, the next offset of every topic it has returned records from.
    public func commit() async throws {
        for (topic, offset) in nextOffsets.sorted(by: { $0.key < $1.key }) {
            try await commit(topic: topic, offset: offset)
        }
    }

    /// Commits `offset` as the next offset `consumer` reads in `topic`; returns once the broker has it on disk.
    public func commit(topic: String, offset: Int64) async throws {
        guard consumer != nil else {
            throw TelexError(.invalidRequest, "commit needs a consumer name: subscribe with consumer: \"NAME\"")
        }
        let (connection, id) = lock.withLock { (self.connection, subscriptionID) }
        guard let connection else { throw TelexError(.closed, "the subscription is not connected") }
        let reply = try await connection.request(.commit(subscriptionID: id, topic: topic, offset: offset))
        guard case .commitAck = reply else { throw TelexError(.malformedFrame, "COMMIT answered with \(reply.type.name)") }
    }

    /// Stops the subscription on the broker.
    public func cancel() async {
        let (connection, id, sink) = lock.withLock { () -> (Connection?, UInt32, SubscriptionSink) in
            cancelled = true
            return (self.connection, subscriptionID, self.sink)
        }
        guard let connection else { return }
        _ = try? await connection.request(.unsubscribe(subscriptionID: id))
        connection.forget(subscriptionID: id, sink: sink)
        sink.push(.ended)
    }

    public func makeAsyncIterator() -> Iterator {
        Iterator(subscription: self)
    }

    public struct Iterator: AsyncIteratorProtocol {
        let subscription: TelexSubscription
        var pending: [DeliveredRecord] = []
        var pendingIndex = 0
        var consumedBatches: UInt32 = 0
        var finished = false
        let decompressor = ZlibDecompressor()
        let secondDecompressor = ZlibDecompressor()
        var scratch: [ByteBuffer] = []

        init(subscription: TelexSubscription) {
            self.subscription = subscription
        }

        public mutating func next() async throws -> DeliveredRecord? {
            while true {
                if pendingIndex < pending.count {
                    let record = pending[pendingIndex]
                    pendingIndex += 1
                    subscription.advance(record.topic, to: record.offset + 1)
                    return record
                }
                if finished { return nil }
                pending.removeAll(keepingCapacity: true)
                pendingIndex = 0
                let (sink, connection, id) = subscription.current()
                switch await sink.next() {
                case .batches(let topic, let buffer):
                    let batches = try RecordBatch.split(buffer, context: "DELIVER for \(topic)")
                    let decoded = try await TelexSubscription.decode(
                        batches, topic: topic, decompressor: decompressor, secondDecompressor: secondDecompressor,
                        pool: &scratch)
                    let from = subscription.position(topic)
                    let until = subscription.snapshotEnd(topic)
                    for (header, records) in decoded {
                        for (index, record) in records.enumerated() {
                            let offset = header.baseOffset + Int64(index)
                            if let from, offset < from { continue }
                            if let until, offset >= until { break }
                            pending.append(DeliveredRecord(topic: topic, offset: offset, brokerTime: header.appendTime, record: record))
                        }
                    }
                    consumedBatches += UInt32(batches.count)
                    if consumedBatches * 2 >= subscription.credit, let connection {
                        connection.post(.credit(subscriptionID: id, batches: consumedBatches))
                        consumedBatches = 0
                    }
                case .caughtUp:
                    if subscription.untilCaughtUp { finished = true }
                case .failed(let error):
                    finished = true
                    throw error
                case .ended:
                    finished = true
                case .disconnected(let error):
                    if subscription.isCancelled {
                        finished = true
                        continue
                    }
                    subscription.client.logger.info("subscription disconnected; resuming", metadata: ["error": "\(error)"])
                    if let connection { await subscription.client.dropConnection(connection) }
                    consumedBatches = 0
                    try await subscription.open(resume: subscription.nextOffsets)
                }
            }
        }
    }

    /// Inflate buffers reused from one delivery to the next, so replay does not fault in fresh pages per batch.
    final class ScratchBuffers: @unchecked Sendable {
        var buffers: [ByteBuffer]
        init(_ buffers: [ByteBuffer]) { self.buffers = buffers }
    }

    /// Inflates and decodes batches; a run of several is split across two tasks so inflating uses two cores.
    fileprivate static func decode(
        _ batches: [ByteBuffer], topic: String, decompressor: ZlibDecompressor, secondDecompressor: ZlibDecompressor,
        pool: inout [ByteBuffer]
    ) async throws -> [(RecordBatchHeader, [Record])] {
        @Sendable func decodeAll(
            _ slice: ArraySlice<ByteBuffer>, _ decompressor: ZlibDecompressor, _ scratch: ScratchBuffers
        ) throws -> [(RecordBatchHeader, [Record])] {
            var decoded: [(RecordBatchHeader, [Record])] = []
            decoded.reserveCapacity(slice.count)
            for (index, batch) in slice.enumerated() {
                decoded.append(try RecordBatch.decodeRecords(
                    batch, decompressor: decompressor, context: "batch from \(topic)", scratch: &scratch.buffers[index]))
            }
            return decoded
        }
        while pool.count < batches.count { pool.append(ByteBuffer()) }
        let middle = batches.count >= 2 ? batches.count / 2 : batches.count
        // Move the buffers out of the pool so each is uniquely referenced while it is written.
        let first = ScratchBuffers(Array(pool[0..<middle]))
        let second = ScratchBuffers(Array(pool[middle..<batches.count]))
        pool.removeFirst(batches.count)
        defer { pool.append(contentsOf: first.buffers + second.buffers) }
        guard middle < batches.count else { return try decodeAll(batches[...], decompressor, first) }
        let secondHalf = Task.detached { try decodeAll(batches[middle...], secondDecompressor, second) }
        let firstHalf: [(RecordBatchHeader, [Record])]
        do {
            firstHalf = try decodeAll(batches[..<middle], decompressor, first)
        } catch {
            secondHalf.cancel()
            _ = try? await secondHalf.value
            throw error
        }
        return firstHalf + (try await secondHalf.value)
    }

    fileprivate func current() -> (SubscriptionSink, Connection?, UInt32) {
        lock.withLock { (sink, connection, subscriptionID) }
    }

    fileprivate var isCancelled: Bool { lock.withLock { cancelled } }

    fileprivate func position(_ topic: String) -> Int64? {
        lock.withLock {
            settlePositions()
            return positions[topic] ?? ranges.first { $0.topic == topic }?.startOffset
        }
    }

    /// With `untilCaughtUp`, the offset where `topic` ended at subscribe time (0 for topics born later).
    fileprivate func snapshotEnd(_ topic: String) -> Int64? {
        lock.withLock { snapshotEnds.map { $0[topic] ?? 0 } }
    }

    /// Records that the next offset of `topic` is `offset`. Called per record, so the common case (same topic
    /// as the last call) touches two fields instead of hashing the topic; `positions` catches up lazily.
    fileprivate func advance(_ topic: String, to offset: Int64) {
        lock.lock()
        if let current = currentTopic, current != topic { positions[current] = currentNext }
        currentTopic = topic
        currentNext = offset
        lock.unlock()
    }

    /// Folds the latest `advance` into `positions`. Caller holds the lock.
    private func settlePositions() {
        if let current = currentTopic { positions[current] = currentNext }
    }
}
