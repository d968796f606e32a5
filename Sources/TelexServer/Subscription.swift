import Logging
import NIOConcurrencyHelpers
import NIOCore
import TelexProtocol
import TelexStorage

/// One subscription on one connection: a cursor per matched topic, credit, and the pump that sends
/// stored batches from the log files. Replay and live delivery are the same loop, so there is no handover gap.
///
/// All state except `pumpScheduled` is confined to the connection's event loop.
final class Subscription: TopicListener, @unchecked Sendable {
    struct Cursor {
        let log: TopicLog
        var next: Int64
        /// The log end when the subscription began; reaching it on every initial topic sends CAUGHT_UP.
        let caughtUpAt: Int64?
    }

    let id: UInt32
    let requestID: UInt32
    let pattern: String
    let consumer: String?
    let eventLoop: EventLoop
    private unowned let connection: ConnectionHandler
    private let store: TopicStore
    private let logger: Logger
    private let maxDeliverBytes: Int
    private let maxCredit: UInt32

    private var cursors: [String: Cursor] = [:]
    private var order: [String] = []
    private var nextIndex = 0
    private(set) var credit: UInt32
    private var caughtUpSent = false
    private(set) var active = true
    private let pumpScheduled = NIOLockedValueBox(false)

    init(id: UInt32, requestID: UInt32, pattern: String, consumer: String?, credit: UInt32,
         connection: ConnectionHandler, eventLoop: EventLoop, store: TopicStore, logger: Logger,
         maxDeliverBytes: Int, maxCredit: UInt32) {
        self.id = id
        self.requestID = requestID
        self.pattern = pattern
        self.consumer = consumer
        self.credit = min(credit, maxCredit)
        self.connection = connection
        self.eventLoop = eventLoop
        self.store = store
        self.logger = logger
        self.maxDeliverBytes = maxDeliverBytes
        self.maxCredit = maxCredit
    }

    /// Adds a topic cursor starting at `offset`.
    func add(topic: String, log: TopicLog, from offset: Int64, caughtUpAt: Int64?) {
        eventLoop.preconditionInEventLoop()
        guard cursors[topic] == nil else { return }
        cursors[topic] = Cursor(log: log, next: offset, caughtUpAt: caughtUpAt)
        order.append(topic)
    }

    func addCredit(_ batches: UInt32) {
        credit = UInt32(min(UInt64(credit) + UInt64(batches), UInt64(maxCredit)))
        pump()
    }

    func cancel() {
        active = false
    }

    /// The next offset this subscription will send for `topic`.
    func position(_ topic: String) -> Int64? { cursors[topic]?.next }

    // MARK: TopicListener (any thread)

    func topicReadable(_ topic: String) {
        schedulePump()
    }

    func topicCreated(_ topic: String) {
        eventLoop.execute {
            guard self.active, self.cursors[topic] == nil, let log = self.store.log(topic) else { return }
            // A topic born after the subscription began is new in its entirety: start at its beginning,
            // or where a durable consumer left it.
            let committed = self.consumer.flatMap { self.store.consumerOffsets.committed($0)[topic] }
            self.add(topic: topic, log: log, from: committed ?? log.startOffset, caughtUpAt: nil)
            self.connection.hub.add(self, topic: topic)
            self.pump()
        }
    }

    func schedulePump() {
        let alreadyScheduled = pumpScheduled.withLockedValue { scheduled in
            defer { scheduled = true }
            return scheduled
        }
        guard !alreadyScheduled else { return }
        eventLoop.execute {
            self.pumpScheduled.withLockedValue { $0 = false }
            self.pump()
        }
    }

    // MARK: Delivery (event loop)

    /// Sends whatever is readable, topic by topic in turn, while there is credit and the socket keeps up.
    func pump() {
        eventLoop.preconditionInEventLoop()
        guard active else { return }
        var wrote = false
        var progressed = true
        while active, credit > 0, connection.isWritable, progressed, !order.isEmpty {
            progressed = false
            for _ in 0..<order.count where credit > 0 && connection.isWritable {
                let topic = order[nextIndex % order.count]
                nextIndex = (nextIndex + 1) % order.count
                guard var cursor = cursors[topic] else { continue }
                let slice: LogSlice?
                do {
                    slice = try cursor.log.read(from: cursor.next, maxBytes: maxDeliverBytes, maxBatches: Int(credit))
                } catch {
                    fail(error)
                    return
                }
                guard let slice else { continue }
                do {
                    try connection.writeDeliver(subscriptionID: id, topic: topic, slice: slice)
                } catch {
                    fail(error)
                    return
                }
                cursor.next = slice.nextOffset
                cursors[topic] = cursor
                credit -= UInt32(min(slice.batchCount, Int(credit)))
                progressed = true
                wrote = true
            }
        }
        if !caughtUpSent, cursors.values.allSatisfy({ cursor in cursor.caughtUpAt.map { cursor.next >= $0 } ?? true }) {
            caughtUpSent = true
            connection.write(.caughtUp(subscriptionID: id), requestID: 0)
            wrote = true
        }
        if wrote { connection.flush() }
    }

    private func fail(_ error: TelexError) {
        logger.warning("subscription ended", metadata: ["subscription": "\(id)", "error": "\(error)"])
        connection.endSubscription(self, error: error)
    }
}
