import NIOCore
import NIOPosix
import TelexProtocol
import TelexStorage

/// Publishing and committing: the append happens on the loop (page cache only); topic creation and commits
/// (directory work and fsyncs) run on the thread pool, and their answers hop back to the loop. Every PUBLISH ends
/// in `publishAnswered(bytes:)`, which gives its bytes back to the connection's unacknowledged budget.
extension ConnectionHandler {
    func publish(topic: String, batch: ByteBuffer, requestID: UInt32) {
        let reservation: TopicCreationLimiter.Reservation
        do throws(TelexError) {
            try TopicName.validate(topic)
            if let replica = configuration.replica {
                throw replica.refusal("PUBLISH to '\(topic)'", action: "publish to")
            }
            // Checked before the topic exists: a refused PUBLISH creates nothing.
            try authorizePublish(to: topic)
            if let log = store.log(topic) {
                return append(batch, to: log, topic: topic, requestID: requestID)
            }
            guard configuration.allowTopicCreation else {
                throw TelexError(.topicNotFound, "topic '\(topic)' does not exist and this broker does not create topics on publish")
            }
            // A rejected batch must not leave an empty topic behind.
            _ = try RecordBatch.validate(
                batch, limits: configuration.log.batchLimits, requireKeyTable: true, context: "batch for \(topic)")
            reservation = try topicCreationLimiter.reserve(topic, principal: principalName)
        } catch {
            reply(error, requestID)
            return publishAnswered(bytes: batch.readableBytes)
        }
        createTopic(topic, reservation: reservation, thenAppend: batch, requestID: requestID)
    }

    /// Creates the topic on the thread pool; requests arriving meanwhile wait, so acks stay in request order.
    /// The reservation is released unless this call created the topic.
    private func createTopic(
        _ topic: String, reservation: TopicCreationLimiter.Reservation, thenAppend batch: ByteBuffer, requestID: UInt32
    ) {
        let store = self.store
        let hub = self.hub
        let started = runBlocking({ () throws -> (TopicLog, Bool) in
            let (log, isNew) = try store.createLog(topic)
            if isNew { hub.created(topic) }
            return (log, isNew)
        }, then: { result in
            switch result {
            case .success((let log, let isNew)):
                if !isNew { self.topicCreationLimiter.release(reservation) }
                if case .closed = self.state { break }
                self.append(batch, to: log, topic: topic, requestID: requestID)
            case .failure(let error):
                self.topicCreationLimiter.release(reservation)
                self.reply(Self.storageError(error, doing: "creating topic '\(topic)'"), requestID)
                self.publishAnswered(bytes: batch.readableBytes)
            }
        })
        if !started { topicCreationLimiter.release(reservation) }
    }

    private func append(_ batch: ByteBuffer, to log: TopicLog, topic: String, requestID: UInt32) {
        guard let loop = context?.eventLoop else { return }
        let result: AppendResult
        let bytes = batch.readableBytes
        if TestFault.active == .ackBeforeWrite,
            let early = TestFault.acknowledgeBeforeWriting(batch, to: log, durable: { [hub] in hub.readable(topic) })
        {
            write(.publishAck(topic: topic, baseOffset: early.offset, recordCount: early.count, duplicate: false),
                  requestID: requestID)
            publishAnswered(bytes: bytes)
            return scheduleFlush()
        }
        do {
            result = try log.append(batch)
        } catch {
            reply(error, requestID)
            return publishAnswered(bytes: bytes)
        }
        inFlight += 1
        let connection = NIOLoopBound(self, eventLoop: loop)
        let hub = self.hub
        let appended = NIODeadline.now()
        log.whenDurable(result) { outcome in
            // Under `interval` and `never` the log answers at once, on this loop: the ack goes out in this tick.
            // Under `always` it answers from its fsync queue, in append order, and the hop keeps that order.
            if loop.inEventLoop {
                connection.value.countPublished(result, log: log, outcome: outcome, bytes: bytes, appended: appended)
                connection.value.published(result, topic: topic, outcome: outcome, bytes: bytes, requestID: requestID)
            } else {
                loop.execute {
                    connection.value.countPublished(result, log: log, outcome: outcome, bytes: bytes, appended: appended)
                    connection.value.published(result, topic: topic, outcome: outcome, bytes: bytes, requestID: requestID)
                }
            }
            if case .success = outcome, !result.duplicate { hub.readable(topic) }
        }
    }

    private func published(
        _ result: AppendResult, topic: String, outcome: Result<Void, TelexError>, bytes: Int, requestID: UInt32
    ) {
        inFlight -= 1
        switch outcome {
        case .success:
            write(.publishAck(topic: topic, baseOffset: result.baseOffset, recordCount: result.recordCount,
                              duplicate: result.duplicate), requestID: requestID)
        case .failure(let error):
            reply(error, requestID)
        }
        publishAnswered(bytes: bytes)
        scheduleFlush()
        closeIfQuiesced()
    }

    func commit(subscriptionID: UInt32, topic: String, offset: Int64, requestID: UInt32) {
        if let replica = configuration.replica {
            return reply(replica.refusal("COMMIT for '\(topic)'", action: "commit to"), requestID)
        }
        guard let subscription = subscriptions[subscriptionID] else {
            return reply(TelexError(.unknownSubscription, "COMMIT for subscription \(subscriptionID), which is not active"), requestID)
        }
        guard let consumer = subscription.consumer else {
            return reply(TelexError(.invalidRequest,
                "COMMIT on subscription \(subscriptionID), which has no consumer name; subscribe with one to commit"), requestID)
        }
        guard offset >= 0 else {
            return reply(TelexError(.invalidRequest, "COMMIT offset \(offset) is negative"), requestID)
        }
        do throws(TelexError) {
            try authorizeCommit(consumer: consumer, topic: topic)
        } catch {
            return reply(error, requestID)
        }
        let pattern = subscription.listener.pattern
        guard TopicName.matches(pattern: pattern, topic: topic) else {
            return reply(TelexError(.invalidRequest,
                "COMMIT for topic '\(topic)' on subscription \(subscriptionID), whose pattern '\(pattern)' does not match it; commit only topics the subscription covers"), requestID)
        }
        guard let loop = context?.eventLoop else { return }
        inFlight += 1
        let offsets = store.consumerOffsets
        let threadPool = self.threadPool
        // The commit fsyncs a file: off the loop, after this connection's previous commit.
        let committed = (lastCommit ?? loop.makeSucceededVoidFuture()).flatMap {
            threadPool.runIfActive(eventLoop: loop) { try offsets.commit(consumer, topic: topic, offset: offset) }
        }
        lastCommit = committed.recover { _ in }
        committed.assumeIsolated().whenComplete { result in
            self.inFlight -= 1
            switch result {
            case .success: self.write(.commitAck(topic: topic, offset: offset), requestID: requestID)
            case .failure(let error): self.reply(Self.storageError(error, doing: "committing \(topic)@\(offset)"), requestID)
            }
            self.scheduleFlush()
            self.closeIfQuiesced()
        }
    }

    /// The error to send for a failed piece of thread-pool work.
    static func storageError(_ error: any Error, doing work: String) -> TelexError {
        if let error = error as? TelexError { return error }
        if error is NIOThreadPoolError.ThreadPoolInactive {
            return TelexError(.shuttingDown, "the broker is shutting down; \(work) was not done")
        }
        return TelexError(.storageFailure, "\(work) failed: \(error)")
    }
}
