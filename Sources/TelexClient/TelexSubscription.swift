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
    /// With `skipDamaged`: the offsets of this topic the broker stepped over right before this record (damaged on
    /// its disk, never stored, or removed by compaction or a purge: the broker does not say which); nil when the
    /// record follows on from the previous one, and always nil without `skipDamaged` (a compacted topic's gaps are
    /// not damage).
    public var skippedBefore: Range<Int64>? = nil
}

/// A live subscription: an `AsyncSequence` of delivered records, in offset order per topic.
///
/// Credit-based: the broker sends at most `credit` batches ahead of the consumer, so a slow consumer holds
/// a bounded amount of memory. If the connection drops, iteration reconnects with backoff and resumes from
/// the offset after the last record it returned, per topic: no gap, no duplicate.
///
/// Iterate it once, from one task. Iteration ends — and the broker is sent UNSUBSCRIBE — when the iterating task
/// is cancelled (promptly, even while waiting for a delivery), when the loop breaks, on an error, on `cancel()`,
/// or when the subscription is deinitialized. `TelexClient.withSubscription` scopes one to a closure.
public final class TelexSubscription: AsyncSequence, Sendable {
    public typealias Element = DeliveredRecord

    public let pattern: String
    public let start: StartPosition
    public let consumer: String?
    public let untilCaughtUp: Bool
    /// Whether the broker delivers on after damaged stored ranges (reported in `DeliveredRecord.skippedBefore`)
    /// instead of ending the subscription with DATA_LOSS.
    public let skipDamaged: Bool
    let client: TelexClient
    let credit: UInt32
    private let state = NIOLockedValueBox(State())

    private struct State: Sendable {
        var sink = SubscriptionSink()
        var connection: Connection?
        var subscriptionID: UInt32 = 0
        var positions: [String: Int64] = [:]
        var ranges: [TopicRange] = []
        /// With `untilCaughtUp`: the end of each topic when the subscription first began; nothing past it is returned.
        var snapshotEnds: [String: Int64]?
        var currentTopic: String?
        var currentNext: Int64 = 0
        var ended = false
        /// A latest or history subscription received its (first) CAUGHT_UP: its selection is delivered.
        var selectionDone = false

        /// Folds the latest `advance` into `positions`.
        mutating func settlePositions() {
            if let current = currentTopic { positions[current] = currentNext }
        }
    }

    init(
        client: TelexClient, pattern: String, start: StartPosition, consumer: String?, untilCaughtUp: Bool,
        skipDamaged: Bool = false, credit: UInt32
    ) {
        self.client = client
        self.skipDamaged = skipDamaged
        self.pattern = pattern
        self.start = start
        self.consumer = consumer
        self.untilCaughtUp = untilCaughtUp
        self.credit = Swift.max(1, credit)
    }

    deinit {
        endLocally()
    }

    /// Topics matched when the subscription (re)started, with their start and end offsets.
    public var topics: [TopicRange] { state.withLockedValue { $0.ranges } }

    /// The next offset this subscription will return, per topic it has matched.
    public var nextOffsets: [String: Int64] {
        state.withLockedValue { state in
            state.settlePositions()
            return state.positions
        }
    }

    /// Whether the subscription has ended (cancelled, broken out of, failed, or finished catching up).
    public var isEnded: Bool { state.withLockedValue { $0.ended } }

    /// Subscribes again after a lost connection. Every topic matched so far resumes at its next offset; any other
    /// topic matching the pattern was created since, so it starts at its beginning — as a topic born during a live
    /// subscription does — unless the consumer committed a position for it.
    func reopen() async throws {
        try await open(resume: nextOffsets, start: .beginning)
    }

    /// Sends SUBSCRIBE on the current connection, resuming topics at `resume`.
    func open(resume: [String: Int64], start: StartPosition? = nil) async throws {
        let start = start ?? self.start
        let connection = try await client.currentConnection()
        let id = client.makeSubscriptionID()
        let sink = SubscriptionSink()
        let reply: BrokerMessage
        do {
            reply = try await connection.request(
                .subscribe(subscriptionID: id, pattern: pattern, start: start, consumerName: consumer ?? "",
                           initialCredit: credit, resume: resume.map { TopicOffset(topic: $0.key, offset: $0.value) }
                            .sorted { $0.topic < $1.topic },
                           options: skipDamaged ? .skipDamaged : []),
                subscriptionSink: (id, sink))
        } catch {
            // A SUBSCRIBE that was cancelled or timed out may still succeed on the broker: end it there too (an
            // UNKNOWN_SUBSCRIPTION answer is ignored).
            connection.post(.unsubscribe(subscriptionID: id))
            connection.forget(subscriptionID: id, sink: sink)
            throw error
        }
        guard case .subscribed(_, let topics) = reply else {
            connection.forget(subscriptionID: id, sink: sink)
            throw TelexError(.malformedFrame, "SUBSCRIBE answered with \(reply.type.name)")
        }
        let untilCaughtUp = self.untilCaughtUp
        let alreadyEnded = state.withLockedValue { state -> Bool in
            guard !state.ended else { return true }
            state.connection = connection
            state.subscriptionID = id
            state.sink = sink
            state.ranges = topics
            // Every matched topic gets a position, so a reconnect resumes each one exactly where it was.
            state.settlePositions()
            for range in topics where state.positions[range.topic] == nil { state.positions[range.topic] = range.startOffset }
            if untilCaughtUp, state.snapshotEnds == nil {
                state.snapshotEnds = Dictionary(topics.map { ($0.topic, $0.endOffset) }, uniquingKeysWith: { $1 })
            }
            return false
        }
        if alreadyEnded {
            connection.post(.unsubscribe(subscriptionID: id))
            connection.forget(subscriptionID: id, sink: sink)
        }
    }

    /// Commits, for this subscription's consumer, the next offset of every topic it has matched: where a restart
    /// with this consumer name resumes. Works after the subscription has ended too (see `commit(topic:offset:)`).
    public func commit() async throws {
        try await commit(nextOffsets)
    }

    /// Commits `offset` as the next offset `consumer` reads in `topic`; returns once the broker has it on disk.
    ///
    /// A COMMIT names a live subscription, so once this one has ended (a `break`, a cancelled task) the client
    /// briefly subscribes again with zero credit — nothing is delivered — commits, and unsubscribes.
    public func commit(topic: String, offset: Int64) async throws {
        try await commit([topic: offset])
    }

    private func commit(_ offsets: [String: Int64]) async throws {
        guard let consumer else {
            throw TelexError(.invalidRequest, "commit needs a consumer name: subscribe with consumer: \"NAME\"")
        }
        guard !offsets.isEmpty else { return }
        let (connection, id, ended) = state.withLockedValue { ($0.connection, $0.subscriptionID, $0.ended) }
        if !ended, let connection, connection.isActive {
            for (topic, offset) in offsets.sorted(by: { $0.key < $1.key }) {
                try await Self.commit(on: connection, subscriptionID: id, topic: topic, offset: offset)
            }
            return
        }
        let current = try await client.currentConnection()
        let detachedID = client.makeSubscriptionID()
        let sink = SubscriptionSink()
        let resume = offsets.map { TopicOffset(topic: $0.key, offset: $0.value) }.sorted { $0.topic < $1.topic }
        defer { current.forget(subscriptionID: detachedID, sink: sink) }
        do {
            let reply = try await current.request(
                .subscribe(subscriptionID: detachedID, pattern: pattern, start: .end, consumerName: consumer,
                           initialCredit: 0, resume: resume),
                subscriptionSink: (detachedID, sink))
            guard case .subscribed = reply else {
                throw TelexError(.malformedFrame, "SUBSCRIBE answered with \(reply.type.name)")
            }
            for entry in resume {
                try await Self.commit(on: current, subscriptionID: detachedID, topic: entry.topic, offset: entry.offset)
            }
        } catch {
            current.post(.unsubscribe(subscriptionID: detachedID))
            throw error
        }
        current.post(.unsubscribe(subscriptionID: detachedID))
    }

    private static func commit(on connection: Connection, subscriptionID: UInt32, topic: String, offset: Int64) async throws {
        let reply = try await connection.request(.commit(subscriptionID: subscriptionID, topic: topic, offset: offset))
        guard case .commitAck = reply else { throw TelexError(.malformedFrame, "COMMIT answered with \(reply.type.name)") }
    }

    /// Ends the subscription and waits until the broker confirms (UNSUBSCRIBED). Iteration then ends.
    public func cancel() async {
        let taken = state.withLockedValue { state -> (Connection, UInt32, SubscriptionSink)? in
            guard !state.ended, let connection = state.connection else {
                state.ended = true
                return nil
            }
            state.ended = true
            return (connection, state.subscriptionID, state.sink)
        }
        guard let (connection, id, sink) = taken else { return }
        _ = try? await connection.request(.unsubscribe(subscriptionID: id))
        connection.forget(subscriptionID: id, sink: sink)
        sink.push(.ended)
    }

    /// Ends the subscription without waiting: sends UNSUBSCRIBE (if it is still live) and stops routing deliveries.
    /// Safe from any context, including a cancelled task and `deinit`.
    func endLocally() {
        let taken = state.withLockedValue { state -> (Connection, UInt32, SubscriptionSink)? in
            defer { state.ended = true }
            guard !state.ended, let connection = state.connection else { return nil }
            return (connection, state.subscriptionID, state.sink)
        }
        guard let (connection, id, sink) = taken else { return }
        connection.post(.unsubscribe(subscriptionID: id))
        connection.forget(subscriptionID: id, sink: sink)
        // Wakes an iteration waiting in another task: it ends instead of waiting for an UNSUBSCRIBED it will not get.
        sink.push(.ended)
    }

    /// Marks the subscription ended because the broker ended it (UNSUBSCRIBED or an ERROR about it).
    fileprivate func endedByBroker() {
        state.withLockedValue { $0.ended = true }
    }

    public func makeAsyncIterator() -> Iterator {
        Iterator(subscription: self)
    }

    /// Iterates the subscription; when the last copy is dropped (a `break` out of the loop) the subscription ends.
    /// Sendable so that it can be handed to another task, as long as one task at a time calls `next()`.
    public struct Iterator: AsyncIteratorProtocol, Sendable {
        private let subscription: TelexSubscription
        private let endGuard: EndOnDeinit
        private var pending: [DeliveredRecord] = []
        private var pendingIndex = 0
        private var consumedBatches: UInt32 = 0
        private var finished = false

        init(subscription: TelexSubscription) {
            self.subscription = subscription
            endGuard = EndOnDeinit(subscription)
        }

        public mutating func next() async throws -> DeliveredRecord? {
            while true {
                if Task.isCancelled { return finish() }
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
                case .batches(let topic, let buffer, let selected):
                    let batches: [ByteBuffer]
                    do {
                        batches = try RecordBatch.split(buffer, context: "DELIVER for \(topic)")
                        try await decode(batches, topic: topic, selected: selected)
                    } catch {
                        finish()
                        throw error
                    }
                    consumedBatches += UInt32(batches.count)
                    if consumedBatches * 2 >= subscription.credit, let connection {
                        connection.post(.credit(subscriptionID: id, batches: consumedBatches))
                        consumedBatches = 0
                    }
                case .caughtUp:
                    subscription.caughtUpReceived()
                    if subscription.untilCaughtUp { return finish() }
                case .failed(let error):
                    subscription.endedByBroker()
                    finished = true
                    throw error
                case .ended:
                    subscription.endedByBroker()
                    finished = true
                case .cancelled:
                    return finish()
                case .disconnected(let error):
                    if subscription.isEnded {
                        finished = true
                        continue
                    }
                    if let interrupted = subscription.interruptedSelection(by: error) {
                        finish()
                        throw interrupted
                    }
                    subscription.client.logger.info("subscription disconnected; resuming", metadata: ["error": "\(error)"])
                    if let connection { await subscription.client.dropConnection(connection) }
                    consumedBatches = 0
                    do {
                        try await subscription.reopen()
                    } catch is CancellationError {
                        return finish()
                    } catch {
                        finish()
                        throw error
                    }
                }
            }
        }

        /// Ends iteration here and the subscription on the broker.
        @discardableResult
        private mutating func finish() -> DeliveredRecord? {
            finished = true
            pending.removeAll()
            pendingIndex = 0
            subscription.endLocally()
            return nil
        }

        /// Inflates and decodes delivered batches into `pending`, skipping records before the resume position,
        /// outside `selected` (DELIVER_SELECTED) and, with `untilCaughtUp`, past the snapshot end.
        private mutating func decode(_ batches: [ByteBuffer], topic: String, selected: [Range<Int64>]?) async throws {
            let decoded = try await BatchDecoder.decode(batches, topic: topic, codecs: subscription.client.codecs)
            let from = subscription.position(topic)
            let until = subscription.snapshotEnd(topic)
            // Batches follow on from the expected offset unless the broker stepped over a range: damaged ones only
            // with skip-damaged (reported), compaction's gaps on any subscription (not damage: never reported
            // alone); a selection jumps by design, so its jumps are not reported.
            var expected = selected == nil ? from : nil
            var nextRange = 0
            for (header, records) in decoded {
                var skipped = subscription.skipDamaged
                    ? expected.flatMap { $0 < header.baseOffset ? $0..<header.baseOffset : nil } : nil
                for (index, record) in records.enumerated() {
                    let offset = header.baseOffset + Int64(index)
                    if let from, offset < from { continue }
                    if let until, offset >= until { break }
                    if let selected {
                        while nextRange < selected.count, selected[nextRange].upperBound <= offset { nextRange += 1 }
                        guard nextRange < selected.count, selected[nextRange].contains(offset) else { continue }
                    }
                    pending.append(DeliveredRecord(topic: topic, offset: offset, brokerTime: header.appendTime,
                                                   record: record, skippedBefore: skipped))
                    skipped = nil
                }
                expected = expected.map { Swift.max($0, header.nextOffset) }
            }
        }
    }

    /// Ends the subscription when the last copy of an iterator goes away (a `break` out of a `for try await`).
    private final class EndOnDeinit: Sendable {
        let subscription: TelexSubscription
        init(_ subscription: TelexSubscription) { self.subscription = subscription }
        deinit { subscription.endLocally() }
    }

    /// The error that ends a latest or history subscription whose connection was lost before its selection was
    /// delivered: its snapshot cannot be resumed on a new connection (a new one would select anew), so the caller
    /// starts it again. Nil when it can resume: every topic is past its snapshot end, and a latest subscription
    /// then continues as a plain one from its positions.
    fileprivate func interruptedSelection(by error: TelexError) -> TelexError? {
        guard start.selects else { return nil }
        let done = state.withLockedValue { $0.selectionDone }
        let isLatest = if case .latest = start { true } else { false }
        if done, isLatest { return nil }
        return TelexError(.connectionFailed,
            "the connection was lost during the \(isLatest ? "latest-version replay" : "history request") of '\(pattern)' (\(error.message)); it cannot resume on a new connection: start it again")
    }

    /// At a latest subscription's first CAUGHT_UP every topic is delivered up to its snapshot end, whether or not
    /// its last records there were selected: positions move to those ends, so that the live records after them are
    /// no jump (nothing is reported skipped) and a reconnect resumes there.
    fileprivate func caughtUpReceived() {
        guard start.selects else { return }
        state.withLockedValue { state in
            guard !state.selectionDone else { return }
            state.selectionDone = true
            state.settlePositions()
            state.currentTopic = nil
            for range in state.ranges {
                state.positions[range.topic] = Swift.max(state.positions[range.topic] ?? range.startOffset, range.endOffset)
            }
        }
    }

    /// Whether the broker's CAUGHT_UP for the current SUBSCRIBE has arrived (tests wait on it).
    var caughtUpArrived: Bool { current().0.caughtUpArrived }

    fileprivate func current() -> (SubscriptionSink, Connection?, UInt32) {
        state.withLockedValue { ($0.sink, $0.connection, $0.subscriptionID) }
    }

    fileprivate func position(_ topic: String) -> Int64? {
        state.withLockedValue { state in
            state.settlePositions()
            return state.positions[topic] ?? state.ranges.first { $0.topic == topic }?.startOffset
        }
    }

    /// With `untilCaughtUp`, the offset where `topic` ended at subscribe time (0 for topics born later).
    fileprivate func snapshotEnd(_ topic: String) -> Int64? {
        state.withLockedValue { state in state.snapshotEnds.map { $0[topic] ?? 0 } }
    }

    /// Records that the next offset of `topic` is `offset`. Called per record, so the common case (same topic
    /// as the last call) touches two fields instead of hashing the topic; `positions` catches up lazily.
    fileprivate func advance(_ topic: String, to offset: Int64) {
        state.withLockedValue { state in
            if let current = state.currentTopic, current != topic { state.positions[current] = state.currentNext }
            state.currentTopic = topic
            state.currentNext = offset
        }
    }
}

/// Inflates and decodes delivered batches; a run of several is split across two tasks so inflating uses two cores.
enum BatchDecoder {
    typealias Decoded = [(header: RecordBatchHeader, records: [Record])]

    static func decode(_ batches: [ByteBuffer], topic: String, codecs: CodecPool) async throws -> Decoded {
        @Sendable func decodeAll(_ slice: ArraySlice<ByteBuffer>) throws -> Decoded {
            try codecs.withInflater { inflater throws(TelexError) in
                while inflater.scratch.count < slice.count { inflater.scratch.append(ByteBuffer()) }
                var decoded: Decoded = []
                decoded.reserveCapacity(slice.count)
                for (index, batch) in slice.enumerated() {
                    do throws(TelexError) {
                        // Checks the CRC before any record is decoded: a damaged batch ends the iteration with
                        // CORRUPT_BATCH naming topic and offset, never records made of garbage.
                        let batch = try RecordBatch.decodeRecords(
                            batch, decompressor: inflater.decompressor, context: "batch from \(topic)",
                            scratch: &inflater.scratch[index])
                        // A broken broker must not make the client trap computing a record's offset.
                        let (base, count) = (batch.header.baseOffset, Int64(batch.header.recordCount))
                        guard base >= 0, base <= Int64.max - count else {
                            throw TelexError(.invalidBatch,
                                "batch from \(topic) names offsets \(base) + \(count) records, outside 0...\(Int64.max)",
                                offset: base)
                        }
                        decoded.append(batch)
                    } catch {
                        var error = error
                        error.topic = topic
                        throw error
                    }
                }
                return decoded
            }
        }
        guard batches.count >= 2 else { return try decodeAll(batches[...]) }
        let middle = batches.count / 2
        let secondHalf = Task.detached { try decodeAll(batches[middle...]) }
        let firstHalf: Decoded
        do {
            firstHalf = try decodeAll(batches[..<middle])
        } catch {
            secondHalf.cancel()
            _ = try? await secondHalf.value
            throw error
        }
        return firstHalf + (try await secondHalf.value)
    }
}
