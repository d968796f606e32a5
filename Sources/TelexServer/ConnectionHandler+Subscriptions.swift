import NIOCore
import TelexProtocol
import TelexStorage

/// One subscription as its connection keeps it: the state machine that decides, the logs it reads, and the
/// listener the hub notifies.
struct Subscription {
    let requestID: UInt32
    let consumer: String?
    /// The client asked to be delivered on after damaged stored ranges instead of DATA_LOSS.
    let skipDamaged: Bool
    let listener: SubscriptionListener
    var machine: SubscriptionStateMachine
    var logs: [String: TopicLog]
    /// A history delivers a snapshot and nothing after it, not even topics created later.
    let isHistory: Bool
    /// A segment is being CRC-checked on the thread pool before it is read (`checkBeforeReading`); no pump meanwhile.
    var checking = false
}

/// Subscriptions: SUBSCRIBE resolves start positions and builds the state machine; the pump performs the reads
/// and writes the machine asks for. Everything here runs on the connection's loop.
extension ConnectionHandler {
    func subscribe(
        id: UInt32, pattern: String, start: StartPosition, consumerName: String, credit: UInt32,
        resume: [TopicOffset], options: SubscribeOptions = [], requestID: UInt32
    ) throws(TelexError) {
        try TopicName.validatePattern(pattern)
        guard subscriptions[id] == nil else {
            throw TelexError(.duplicateSubscription, "subscription id \(id) is already active on this connection")
        }
        let maxSubscriptions = configuration.limits.maxSubscriptions
        guard subscriptions.count < maxSubscriptions else {
            throw TelexError(.tooManySubscriptions,
                "SUBSCRIBE to '\(pattern)' refused: this connection already has its maximum of \(maxSubscriptions) subscriptions; unsubscribe one or subscribe with a wider pattern")
        }
        guard let loop = context?.eventLoop else { return }
        let consumer = consumerName.isEmpty ? nil : consumerName
        if let consumer { try ConsumerOffsets.validateName(consumer) }
        if consumer != nil, let replica = configuration.replica {
            throw replica.refusal("SUBSCRIBE to '\(pattern)' with consumer '\(consumerName)'",
                                  action: "subscribe with a consumer name at")
        }
        if start.selects, consumer != nil || !resume.isEmpty {
            throw TelexError(.invalidRequest,
                "SUBSCRIBE to '\(pattern)': a latest or history start takes no consumer name and no resume entries (it delivers a snapshot of its own)")
        }
        if start.selects, !configuration.log.indexKeys {
            throw TelexError(.invalidRequest,
                "SUBSCRIBE to '\(pattern)': this broker runs without its key index (telexd --no-key-index), which latest and history starts need")
        }
        try authorizeSubscribe(pattern: pattern, consumer: consumer, resuming: !resume.isEmpty)
        let isPattern = TopicName.isPattern(pattern)
        let topics = isPattern ? store.topics.filter { TopicName.matches(pattern: pattern, topic: $0) } : [pattern]
        let listener = SubscriptionListener(
            subscriptionID: id, pattern: pattern, consumer: consumer, connection: NIOLoopBound(self, eventLoop: loop))
        // Register first: a batch made readable from here on triggers a pump, and the pump reads the log itself.
        hub.register(listener, topics: topics)
        let resolver = StartPositionResolver(
            start: start, isPattern: isPattern, committed: consumer.map { store.consumerOffsets.committed($0) } ?? [:],
            resume: resume)
        let pending = PendingSubscription(
            id: id, pattern: pattern, isPattern: isPattern, consumer: consumer, resuming: !resume.isEmpty, credit: credit,
            skipDamaged: options.contains(.skipDamaged), requestID: requestID, listener: listener, resolver: resolver)
        let logs = topics.compactMap { topic in store.log(topic).map { (topic, $0) } }
        if start.selects { return planSelection(pending, start: start, logs: logs) }
        let lookups = logs.compactMap { topic, log in resolver.timestampToLookUp(for: topic).map { (topic, log, $0) } }
        guard !lookups.isEmpty else { return finishSubscribing(pending, logs: logs, timestampOffsets: [:]) }
        // Finding a time means reading batch headers from the segments: on the thread pool, with later requests
        // waiting behind it so that replies stay in order.
        resolveOnThreadPool(pending, doing: "finding the start time for '\(pattern)'", { () throws -> [String: Int64] in
            var offsets: [String: Int64] = [:]
            for (topic, log, time) in lookups { offsets[topic] = try log.offset(atOrAfter: time) }
            return offsets
        }, then: { offsets in
            self.finishSubscribing(pending, logs: logs, timestampOffsets: offsets)
        })
    }

    /// Runs `work` for a pending SUBSCRIBE on the thread pool, later requests waiting behind it so that replies
    /// stay in order, then `finish`es on the loop; on an error it answers it, and either way a closed connection
    /// forgets the subscription.
    private func resolveOnThreadPool<Value: Sendable>(
        _ pending: PendingSubscription, doing: String, _ work: @escaping @Sendable () throws -> Value,
        then finish: @escaping (Value) -> Void
    ) {
        runBlocking(work, then: { result in
            switch result {
            case .success(let value):
                if case .closed = self.state { return self.hub.unregister(pending.listener) }
                finish(value)
            case .failure(let error):
                self.hub.unregister(pending.listener)
                self.reply(Self.storageError(error, doing: doing), pending.requestID)
            }
        })
    }

    /// What SUBSCRIBE established before its start positions could be resolved.
    struct PendingSubscription {
        let id: UInt32
        let pattern: String
        let isPattern: Bool
        let consumer: String?
        let resuming: Bool
        let credit: UInt32
        let skipDamaged: Bool
        let requestID: UInt32
        let listener: SubscriptionListener
        let resolver: StartPositionResolver
    }

    /// For a latest or history start: takes the snapshot (each topic's readable end) and reads the key indexes
    /// on the thread pool, with later requests waiting behind it, then finishes subscribing with the selection.
    private func planSelection(_ pending: PendingSubscription, start: StartPosition, logs: [(String, TopicLog)]) {
        resolveOnThreadPool(pending, doing: "reading the key index for '\(pending.pattern)'", { () -> [String: TopicSelection] in
            let ends = logs.map { topic, log in (topic, log, log.readableEndOffset) }
            let offsets: [String: [Int64]]
            var stopsAtEnd = false
            switch start {
            case .history(let key):
                stopsAtEnd = true
                let key = String(buffer: key)
                offsets = SelectionPlanner.history(try ends.map { topic, log, end in (topic, try log.versions(of: key, below: end)) })
            default:
                offsets = SelectionPlanner.latest(try ends.map { topic, log, end in (topic, try log.latestVersions(below: end)) })
            }
            return Dictionary(ends.map { topic, _, end in
                (topic, TopicSelection(offsets: offsets[topic] ?? [], end: end, stopsAtEnd: stopsAtEnd))
            }, uniquingKeysWith: { first, _ in first })
        }, then: { selections in
            self.finishSubscribing(pending, logs: logs, timestampOffsets: [:], selections: selections)
        })
    }

    /// Resolves the start positions, answers SUBSCRIBED (or the error) and starts delivering. Authorizes the
    /// subscription again: the users file may have been reloaded while its start times were looked up.
    /// `selections` (latest and history starts) fix each topic's end at the snapshot's.
    private func finishSubscribing(
        _ pending: PendingSubscription, logs: [(String, TopicLog)], timestampOffsets: [String: Int64],
        selections: [String: TopicSelection]? = nil
    ) {
        var ranges: [TopicRange] = []
        do throws(TelexError) {
            guard subscriptions[pending.id] == nil else {
                throw TelexError(.duplicateSubscription, "subscription id \(pending.id) is already active on this connection")
            }
            try authorizeSubscribe(pattern: pending.pattern, consumer: pending.consumer, resuming: pending.resuming)
            for (topic, log) in logs {
                var bounds = StartPositionResolver.TopicBounds(
                    topic: topic, logStart: log.startOffset,
                    readableEnd: selections?[topic]?.end ?? log.readableEndOffset, endOffset: log.endOffset)
                bounds.timestampOffset = timestampOffsets[topic]
                ranges.append(try pending.resolver.range(for: bounds))
            }
            guard ranges.count <= Int(UInt16.max) else {
                throw TelexError(.invalidRequest,
                    "pattern '\(pending.pattern)' matches \(ranges.count) topics; one subscription can cover at most \(UInt16.max)")
            }
        } catch {
            hub.unregister(pending.listener)
            return reply(error, pending.requestID)
        }
        var machine = SubscriptionStateMachine(credit: pending.credit, maxCredit: configuration.maxCredit)
        for range in ranges {
            machine.topicAdded(range.topic, from: range.startOffset, caughtUpAt: range.endOffset,
                               selection: selections?[range.topic])
        }
        subscriptions[pending.id] = Subscription(
            requestID: pending.requestID, consumer: pending.consumer, skipDamaged: pending.skipDamaged,
            listener: pending.listener, machine: machine,
            logs: Dictionary(logs, uniquingKeysWith: { first, _ in first }),
            isHistory: { if case .history = pending.resolver.start { true } else { false } }())
        store.metrics.activeSubscriptions.increment()
        logger.debug("subscribed", metadata: [
            "pattern": "\(pending.pattern)", "subscription": "\(pending.id)", "topics": "\(ranges.count)",
        ])
        write(.subscribed(subscriptionID: pending.id, topics: ranges), requestID: pending.requestID)
        // A topic created between the listing above and registration is picked up here, as `topicCreated` would.
        if pending.isPattern {
            for topic in store.topics where TopicName.matches(pattern: pending.pattern, topic: topic) && mayRead(topic) {
                addTopic(topic, to: pending.id)
            }
        }
        pump(pending.id)
    }

    func addCredit(_ batches: UInt32, subscriptionID: UInt32, requestID: UInt32) {
        guard let action = subscriptions[subscriptionID]?.machine.creditAdded(batches) else {
            return reply(TelexError(.unknownSubscription, "CREDIT for subscription \(subscriptionID), which is not active"), requestID)
        }
        switch action {
        case .pump: pump(subscriptionID)
        case .none: break
        }
    }

    func unsubscribe(_ subscriptionID: UInt32, requestID: UInt32) {
        guard let subscription = subscriptions.removeValue(forKey: subscriptionID) else {
            return reply(TelexError(.unknownSubscription, "UNSUBSCRIBE for subscription \(subscriptionID), which is not active"), requestID)
        }
        store.metrics.activeSubscriptions.decrement()
        hub.unregister(subscription.listener)
        write(.unsubscribed(subscriptionID: subscriptionID), requestID: requestID)
    }

    /// A topic matching `listener`'s pattern was created after the subscription began; it joins only if the
    /// principal may read it under the users file in force.
    func topicCreated(_ topic: String, listener: SubscriptionListener) {
        guard subscriptions[listener.subscriptionID]?.listener === listener, mayRead(topic) else { return }
        addTopic(topic, to: listener.subscriptionID)
        pump(listener.subscriptionID)
    }

    /// A topic of `listener`'s subscription has new readable batches.
    func topicReadable(listener: SubscriptionListener) {
        guard subscriptions[listener.subscriptionID]?.listener === listener else { return }
        pump(listener.subscriptionID)
    }

    /// Adds a topic born after the subscription began, if the subscription does not cover it yet.
    private func addTopic(_ topic: String, to id: UInt32) {
        guard let subscription = subscriptions[id], !subscription.isHistory, subscription.machine.position(topic) == nil,
            let log = store.log(topic)
        else { return }
        let committed = subscription.consumer.flatMap { store.consumerOffsets.committed($0)[topic] }
        let from = StartPositionResolver.startOfNewTopic(committed: committed, logStart: log.startOffset)
        guard subscriptions[id]?.machine.topicAdded(topic, from: from, caughtUpAt: nil) == true else { return }
        subscriptions[id]?.logs[topic] = log
        hub.add(subscription.listener, topic: topic)
    }

    /// Sends whatever the state machine asks for: reads from the logs, writes DELIVER frames, then CAUGHT_UP once.
    /// On TLS connections each slice is read on the thread pool and the pump resumes once it is written. While the
    /// connection's delivery budget is spent (`mayStartDelivery`), the subscription waits for its turn.
    func pump(_ id: UInt32) {
        guard let context, let subscription = subscriptions[id], !subscription.checking else { return }
        var wrote = false
        while mayStartDelivery, let read = subscriptions[id]?.machine.nextRead(writable: context.channel.isWritable) {
            let log = subscriptions[id]!.logs[read.topic]!
            do throws(TelexError) {
                // A damaged stored range ends the subscription with DATA_LOSS, or is stepped over if asked. A read
                // reaching a segment not CRC-checked yet waits for the check on the thread pool.
                let slice: LogSlice
                switch try log.readForDelivery(from: read.offset, maxBytes: configuration.maxDeliverBytes,
                                               maxBatches: read.maxBatches, skipDamaged: subscriptions[id]!.skipDamaged,
                                               continuing: subscriptions[id]!.machine.continuing(topic: read.topic)) {
                case .end: continue
                case .needsCheck(let offset):
                    subscriptions[id]?.machine.readPostponed()
                    if wrote { flushOutbound() }
                    return checkBeforeReading(id, log: log, topic: read.topic, offset: offset)
                case .needsFetch(let offset):
                    subscriptions[id]?.machine.readPostponed()
                    if wrote { flushOutbound() }
                    return fetchBeforeReading(id, log: log, topic: read.topic, offset: offset)
                case .slice(let found): slice = found
                }
                let selected = subscriptions[id]!.machine.selection(
                    topic: read.topic, first: slice.firstOffset, next: slice.nextOffset)
                subscriptions[id]?.machine.delivered(topic: read.topic, nextOffset: slice.nextOffset, batchCount: slice.batchCount)
                countDelivered(slice, log: log)
                if usesTLS {
                    if wrote { flushOutbound() }
                    return deliverFromThreadPool(slice, topic: read.topic, subscriptionID: id, selected: selected)
                }
                try writeDeliver(subscriptionID: id, topic: read.topic, slice: slice, selected: selected)
                wrote = true
            } catch {
                return endSubscription(id, error: error)
            }
        }
        if wrote { countCreditStall(id) }
        if !mayStartDelivery {
            waitForDeliveryTurn(id)
        } else if subscriptions[id]?.machine.shouldSendCaughtUp() == true {
            write(.caughtUp(subscriptionID: id), requestID: 0)
            flushOutbound()
            // A latest subscription's live records waited for CAUGHT_UP: deliver them now.
            if subscriptions[id]?.machine.releasesOnCaughtUp == true { pump(id) }
            return
        }
        if wrote { flushOutbound() }
    }

    /// CRC-checks, on the thread pool, the segment of `topic` that a read at `offset` would first have to check
    /// (one sealed before the broker started: Protocol/STORAGE.md §4), then pumps again. The subscription waits
    /// meanwhile; the check is remembered by the log, so it happens once per segment.
    private func checkBeforeReading(_ id: UInt32, log: TopicLog, topic: String, offset: Int64) {
        let threadPool = self.threadPool
        pumpAfter(id, doing: "checking \(topic) before delivering it") { eventLoop in
            threadPool.runIfActive(eventLoop: eventLoop) { () throws in try log.checkSegment(containing: offset) }
        }
    }

    /// Makes the archived segment of `topic` holding `offset` readable (fetched into the archive cache and
    /// CRC-checked: Protocol/STORAGE.md §4.1) in a task off the loop, then pumps again. The subscription waits
    /// meanwhile; a failed fetch or a damaged segment ends it with the error, which names the topic and offset.
    private func fetchBeforeReading(_ id: UInt32, log: TopicLog, topic: String, offset: Int64) {
        pumpAfter(id, doing: "fetching archived \(topic) at offset \(offset)") { eventLoop in
            eventLoop.makeFutureWithTask { () async throws in try await log.fetchArchived(containing: offset) }
        }
    }

    /// Holds subscription `id` while `work` runs off the loop, then pumps it again, or ends it with the error.
    private func pumpAfter(_ id: UInt32, doing: String, _ work: (any EventLoop) -> EventLoopFuture<Void>) {
        guard let context, let listener = subscriptions[id]?.listener else { return }
        subscriptions[id]?.checking = true
        work(context.eventLoop).assumeIsolated().whenComplete { result in
            guard self.subscriptions[id]?.listener === listener else { return }
            self.subscriptions[id]?.checking = false
            switch result {
            case .success: self.pump(id)
            case .failure(let error): self.endSubscription(id, error: Self.storageError(error, doing: doing))
            }
        }
    }

    /// Whether the connection may start another DELIVER: over TLS while no slice is being read (one slice in
    /// memory per connection, however many subscriptions), in plaintext while fewer than `maxFileRegionsInFlight`
    /// file regions are unsent (each holds a descriptor).
    var mayStartDelivery: Bool {
        usesTLS ? tlsReadsInFlight == 0 : fileRegionsInFlight < Self.maxFileRegionsInFlight
    }

    /// Queues subscription `id` for the delivery budget, once.
    func waitForDeliveryTurn(_ id: UInt32) {
        if !deliveryTurns.contains(id) { deliveryTurns.append(id) }
    }

    /// Pumps the waiting subscriptions in turn while the delivery budget lasts.
    func passDeliveryTurns() {
        while mayStartDelivery, let id = deliveryTurns.popFirst() { pump(id) }
    }

    /// Ends a subscription the broker can no longer serve, telling the client why.
    func endSubscription(_ id: UInt32, error: TelexError) {
        guard let subscription = subscriptions.removeValue(forKey: id) else { return }
        store.metrics.activeSubscriptions.decrement()
        logger.warning("subscription ended", metadata: ["subscription": "\(id)", "error": "\(error)"])
        hub.unregister(subscription.listener)
        store.metrics.errorSent(error.code.name)
        write(.error(code: error.code, message: "subscription \(id) ended: \(error.message)"), requestID: subscription.requestID)
        write(.unsubscribed(subscriptionID: id), requestID: subscription.requestID)
        scheduleFlush()
    }

    func endAllSubscriptions() {
        for subscription in subscriptions.values { hub.unregister(subscription.listener) }
        if !subscriptions.isEmpty { store.metrics.activeSubscriptions.decrement(by: Double(subscriptions.count)) }
        subscriptions = [:]
    }
}
