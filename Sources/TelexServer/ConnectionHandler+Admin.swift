import NIOCore
import TelexAuth
import TelexProtocol
import TelexStorage

/// What the admin commands need to know about the whole broker, beyond the store. Thread-safe.
final class AdminContext: Sendable {
    /// The broker software's version, reported by `telex-admin info`.
    static let version = "0.1"
    /// When the broker started serving.
    let startedAt: ContinuousClock.Instant
    /// Open client connections now.
    let connectionCount: @Sendable () -> Int

    init(startedAt: ContinuousClock.Instant = .now, connectionCount: @escaping @Sendable () -> Int = { 0 }) {
        self.startedAt = startedAt
        self.connectionCount = connectionCount
    }
}

/// ADMIN requests (PROTOCOL.md §5.17): allowed to admin principals only, audited, answered with ADMIN_RESULT.
/// Listings are read from memory on the loop; a reset, a deletion and the data directory's size run on the thread
/// pool, with later requests waiting behind them so that replies stay in order.
extension ConnectionHandler {
    /// Whether the connection's principal is an operator: every connection without authentication or with the shared
    /// token, and a principal marked `admin` in the users file in force (and still accepting the way it logged in).
    var isAdmin: Bool { access.isAdmin(identity) }

    func admin(_ request: AdminRequest, requestID: UInt32) {
        let command = request.command
        do throws(TelexError) {
            guard isAdmin else {
                throw refusal(action: "ADMIN \(command.name)", topic: "",
                    "principal '\(principalName)' may not send ADMIN \(command.name): it is not an admin principal")
            }
            switch request {
            case .info:
                let store = self.store
                let address = localAddressText
                runAdmin(request, requestID: requestID) { [adminContext, configuration] in
                    .info(Self.brokerInfo(store: store, context: adminContext, configuration: configuration,
                                          address: address))
                }
            case .topics(let pattern):
                if !pattern.isEmpty { try TopicName.validatePattern(pattern) }
                try answerAdmin(request, .topics(topicInfos(matching: pattern)), requestID: requestID)
            case .consumers(let consumer):
                if !consumer.isEmpty { try ConsumerOffsets.validateName(consumer) }
                try answerAdmin(request, .consumers(consumerPositions(consumer)), requestID: requestID)
            case .resetConsumer(let consumer, let pattern, let to, let force):
                try resetConsumer(consumer, pattern: pattern, to: to, force: force, request: request, requestID: requestID)
            case .deleteTopic(let topic):
                try TopicName.validate(topic)
                deleteTopic(topic, request: request, requestID: requestID)
            case .purge(let key, let pattern):
                try purge(key, pattern: pattern, request: request, requestID: requestID)
            }
        } catch {
            reply(error, requestID)
        }
    }

    /// The address this connection reached, as `host:port`.
    private var localAddressText: String { Self.addressText(context?.channel.localAddress) }

    /// `address` as `host:port` (`[v6]:port`), or `?` for the parts it lacks.
    static func addressText(_ address: SocketAddress?) -> String {
        guard let address else { return "?" }
        let host = address.ipAddress ?? "?"
        guard let port = address.port else { return host.contains(":") ? "[\(host)]:?" : "\(host):?" }
        return ServerConfiguration.hostAndPort(host, port)
    }

    static func brokerInfo(
        store: TopicStore, context: AdminContext, configuration: ServerConfiguration, address: String
    ) -> BrokerInfo {
        let uptime = ContinuousClock.now - context.startedAt
        return BrokerInfo(
            serverName: configuration.serverName, version: AdminContext.version,
            uptimeMilliseconds: uptime.components.seconds * 1000 + uptime.components.attoseconds / 1_000_000_000_000_000,
            address: address, fsyncPolicy: configuration.log.fsync.description, dataDirectory: store.directory,
            dataBytes: store.dataBytes(), topicCount: UInt32(clamping: store.topics.count),
            connectionCount: UInt32(clamping: context.connectionCount()))
    }

    private func topicInfos(matching pattern: String) -> [TopicInfo] {
        store.topics.compactMap { topic in
            guard pattern.isEmpty || TopicName.matches(pattern: pattern, topic: topic), let log = store.log(topic) else {
                return nil
            }
            return TopicInfo(
                topic: topic, startOffset: log.startOffset, endOffset: log.endOffset, bytes: Int64(log.sizeInBytes),
                segmentCount: UInt32(clamping: log.segmentCount), lastAppendTime: log.lastAppendTime)
        }
    }

    private func consumerPositions(_ only: String) -> [ConsumerPosition] {
        var positions: [ConsumerPosition] = []
        for (consumer, topics) in store.consumerOffsets.all.sorted(by: { $0.key < $1.key })
        where only.isEmpty || consumer == only {
            for (topic, position) in topics.sorted(by: { $0.key < $1.key }) {
                let log = store.log(topic)
                positions.append(ConsumerPosition(
                    consumer: consumer, topic: topic, committed: position.offset, endOffset: log?.readableEndOffset ?? -1,
                    lag: log?.lag(ofCommitted: position.offset) ?? 0, lastCommitTime: position.commitTime))
            }
        }
        return positions
    }

    private func resetConsumer(
        _ consumer: String, pattern: String, to: StartPosition, force: Bool, request: AdminRequest, requestID: UInt32
    ) throws(TelexError) {
        try Self.validateReset(
            consumer, pattern: pattern, to: to, force: force, active: hub.subscriptions(ofConsumer: consumer),
            forceName: "--force")
        let store = self.store
        let topics = Self.resetTopics(store: store, consumer: consumer, pattern: pattern)
        runAdmin(request, requestID: requestID) {
            .resetConsumer(try Self.reset(store: store, consumer: consumer, topics: topics, to: to))
        }
    }

    /// Refuses a reset of `consumer` with a bad name, pattern or target, or while it has `active` subscriptions
    /// unless `force` (`forceName` is how the asker says force: telex-admin's `--force`, the console API's `"force": true`).
    static func validateReset(
        _ consumer: String, pattern: String, to: StartPosition, force: Bool, active: Int, forceName: String
    ) throws(TelexError) {
        try ConsumerOffsets.validateName(consumer)
        if !pattern.isEmpty { try TopicName.validatePattern(pattern) }
        switch to {
        case .offset(let offset) where offset < 0:
            throw TelexError(.invalidRequest, "reset-consumer: offset \(offset) is negative")
        case .latest, .history:
            throw TelexError(.invalidRequest, "a consumer cannot be reset to a latest or history start")
        default:
            break
        }
        guard active == 0 || force else {
            throw TelexError(.invalidRequest,
                "consumer '\(consumer)' is subscribed (\(active) subscription\(active == 1 ? "" : "s")); stop it first, or reset with \(forceName) (its running subscriptions then keep their own positions and may commit over the reset)")
        }
    }

    /// The topics a reset of `consumer` applies to: those it has committed in without a pattern, else the matching ones.
    static func resetTopics(store: TopicStore, consumer: String, pattern: String) -> [String] {
        pattern.isEmpty
            ? store.consumerOffsets.committed(consumer).keys.sorted()
            : store.topics.filter { TopicName.matches(pattern: pattern, topic: $0) }
    }

    /// Sets `consumer`'s committed offset in each of `topics` to `to` (clamped to the log); blocking (it commits to
    /// the offsets file): call off the event loop.
    static func reset(
        store: TopicStore, consumer: String, topics: [String], to: StartPosition
    ) throws(TelexError) -> [ConsumerReset] {
        let previous = store.consumerOffsets.committed(consumer)
        var targets: [String: Int64] = [:]
        var resets: [ConsumerReset] = []
        for topic in topics {
            guard let log = store.log(topic) else { continue }
            let start = log.startOffset
            let end = log.readableEndOffset
            let target: Int64
            switch to {
            case .beginning: target = start
            case .end: target = end
            case .offset(let offset): target = min(max(offset, start), end)
            case .timestamp(let time): target = try log.offset(atOrAfter: time)
            case .latest, .history:
                // ADMIN decoding refuses these kinds; kept exhaustive for the compiler.
                throw TelexError(.invalidRequest, "a consumer cannot be reset to a latest or history start")
            }
            targets[topic] = target
            resets.append(ConsumerReset(topic: topic, previous: previous[topic] ?? -1, committed: target))
        }
        if !targets.isEmpty { try store.consumerOffsets.commit(consumer, offsets: targets) }
        return resets
    }

    private func deleteTopic(_ topic: String, request: AdminRequest, requestID: UInt32) {
        let store = self.store
        let hub = self.hub
        let limiter = topicCreationLimiter
        // A replica's topics are the archive's: deleting one here would hide its history until a restart.
        if let replica = configuration.replica {
            return reply(replica.refusal("ADMIN delete-topic '\(topic)'", action: "delete topics at"), requestID)
        }
        runAdmin(request, requestID: requestID) {
            guard try store.deleteLog(topic) else {
                throw TelexError(.topicNotFound, "topic '\(topic)' does not exist", topic: topic)
            }
            limiter.topicDeleted()
            hub.deleted(topic)
            return .deleteTopic(topic: topic)
        }
    }

    /// Legal erasure (STORAGE.md §15.4): every record of `key` in the matching topics is removed from their segments,
    /// on the thread pool, and with an archive from the segments only the archive holds (§16.2), in a task off the
    /// loop. The result (and the audit record) name the offsets removed, never the content.
    private func purge(_ key: String, pattern: String, request: AdminRequest, requestID: UInt32) throws(TelexError) {
        guard !key.isEmpty else { throw TelexError(.invalidRequest, "purge: the key (the article's uri) is empty") }
        if !pattern.isEmpty { try TopicName.validatePattern(pattern) }
        let store = self.store
        let threadPool = self.threadPool
        let topics = store.topics.filter { pattern.isEmpty || TopicName.matches(pattern: pattern, topic: $0) }
        // Every topic is tried even when one fails, and whatever was erased is audited and reported either way: an
        // erasure must never go unrecorded.
        let work: @Sendable () async throws -> PurgeOutcome = {
            var outcome = PurgeOutcome()
            for topic in topics {
                guard let log = store.log(topic) else { continue }
                var offsets: [Int64] = []
                do {
                    offsets = try await threadPool.runIfActive { try log.purge(key: key) }.flatMap(\.removedOffsets)
                    if let archive = store.archive {
                        // After the local purge: segments retention deleted meanwhile are below the local start.
                        let archived = try await archive.purgeArchived(
                            topic: topic, key: key, below: log.localStartOffset)
                        offsets = (archived.flatMap(\.removedOffsets) + offsets).sorted()
                    }
                } catch let error as TelexError {
                    outcome.failures.append("\(topic): \(error.message)")
                } catch {
                    // Not a TelexError (the thread pool stopped): still a failure of this topic, and what the other
                    // topics erased is still answered and audited.
                    outcome.failures.append("\(topic): \(error)")
                }
                if !offsets.isEmpty { outcome.purged.append(PurgedTopic(topic: topic, offsets: offsets)) }
            }
            return outcome
        }
        runAsync(work) { result in
            switch result {
            case .success(let outcome): self.answerPurge(key, outcome, request: request, requestID: requestID)
            // Not a TelexError (the thread pool stopped under the purge): still an answer, never silence.
            case .failure(let error): self.reply(TelexError(.storageFailure, "purge of '\(key)' stopped: \(error)"), requestID)
            }
        }
    }

    /// What a purge did in every topic it tried.
    struct PurgeOutcome: Sendable {
        var purged: [PurgedTopic] = []
        var failures: [String] = []
    }

    private func answerPurge(_ key: String, _ outcome: PurgeOutcome, request: AdminRequest, requestID: UInt32) {
        guard outcome.failures.isEmpty else {
            let failures = outcome.failures.joined(separator: "; ")
            audit(request, .purge(outcome.purged), reason: "purge incomplete: \(failures)")
            let done = outcome.purged.map { "\($0.topic) (\($0.offsets.count) records)" }.joined(separator: ", ")
            return reply(TelexError(.storageFailure,
                "purge of '\(key)' incomplete: erased from \(done.isEmpty ? "no topic" : done); failed in \(failures); run it again once the cause is fixed"),
                requestID)
        }
        do {
            try answerAdmin(request, .purge(outcome.purged), requestID: requestID)
        } catch {
            reply(error, requestID)
        }
    }

    /// A subscription reading `topic` ends: the topic was deleted.
    func topicDeleted(_ topic: String, listener: SubscriptionListener) {
        guard subscriptions[listener.subscriptionID]?.listener === listener else { return }
        endSubscription(listener.subscriptionID, error: TelexError(.topicNotFound,
            "topic '\(topic)' was deleted by an operator; subscribe again (a pattern's other topics are still there)",
            topic: topic))
        flushOutbound()
    }

    /// Runs `work` on the thread pool, later requests waiting behind it, then answers with its result or error.
    private func runAdmin(
        _ request: AdminRequest, requestID: UInt32, _ work: @escaping @Sendable () throws -> AdminResult
    ) {
        runBlocking(work) { result in
            do {
                try self.answerAdmin(request, try result.get(), requestID: requestID)
            } catch {
                self.reply(Self.storageError(error, doing: "ADMIN \(request.command.name)"), requestID)
            }
        }
    }

    /// Audits the command and writes its result, or refuses a result too large for one frame.
    private func answerAdmin(_ request: AdminRequest, _ result: AdminResult, requestID: UInt32) throws(TelexError) {
        var encoded = ByteBuffer()
        let size = encoded.writeMessage(BrokerMessage.adminResult(result), requestID: requestID)
        guard size - 4 <= configuration.maxFrameSize else {
            // A purge has erased already: its record must not be lost with the answer.
            if case .purge = request { audit(request, result, reason: result.auditSummary + "; the answer was too large to send") }
            throw TelexError(.invalidRequest,
                "the answer to ADMIN \(request.command.name) would take \(size) bytes, more than one frame (\(configuration.maxFrameSize)); ask with a narrower pattern or name")
        }
        logger.info("admin command", metadata: ["command": "\(request.command.name)"])
        audit(request, result, reason: result.auditSummary)
        // Already encoded to check its size: queue those bytes rather than encoding the result again.
        outbound.writeBuffer(&encoded)
    }
}

extension ConnectionHandler {
    /// Writes the audit record of an ADMIN command; a purge's names the key and the offsets removed per topic.
    fileprivate func audit(_ request: AdminRequest, _ result: AdminResult, reason: String) {
        var audit = AuditRecord(
            event: .admin, peer: context?.channel.remoteAddress?.description, principal: principalName,
            action: request.command.name, topic: request.auditTopic, consumer: request.auditConsumer, reason: reason)
        if case .purge(let key, _) = request, case .purge(let topics) = result {
            audit.key = key
            audit.offsets = Dictionary(uniqueKeysWithValues: topics.map { ($0.topic, $0.offsets) })
        }
        access.auditLog?.record(audit)
    }
}

extension AdminRequest {
    fileprivate var auditTopic: String? {
        switch self {
        case .topics(let pattern), .resetConsumer(_, let pattern, _, _), .purge(_, let pattern):
            pattern.isEmpty ? nil : pattern
        case .deleteTopic(let topic): topic
        case .info, .consumers: nil
        }
    }

    fileprivate var auditConsumer: String? {
        switch self {
        case .consumers(let consumer), .resetConsumer(let consumer, _, _, _): consumer.isEmpty ? nil : consumer
        case .info, .topics, .deleteTopic, .purge: nil
        }
    }
}

extension AdminResult {
    /// What the command changed or returned, in words, for the audit log.
    fileprivate var auditSummary: String {
        switch self {
        case .info: "info"
        case .topics(let topics): "\(topics.count) topics listed"
        case .consumers(let positions): "\(positions.count) positions listed"
        case .resetConsumer(let resets):
            "reset " + resets.map { "\($0.topic) \($0.previous) -> \($0.committed)" }.joined(separator: ", ")
        case .deleteTopic(let topic): "deleted topic \(topic)"
        case .purge(let topics):
            "purged \(topics.reduce(0) { $0 + $1.offsets.count }) records from \(topics.count) topics"
        }
    }
}
