import Foundation
import Logging
import NIOPosix
import Synchronization
import TelexAuth
import TelexEvents
import TelexProtocol
import TelexServer
import TelexStorage

/// The console's data from a running `TelexServer`: topics, events, articles and consumers as the user may see them
/// now (rights are looked up on every call), plus the rate and lag samples behind the charts. Log reads run on
/// `NIOThreadPool.singleton`.
public final class BrokerConsoleData: ConsoleDataSource {
    let server: TelexServer
    let configuration: ConsoleConfiguration
    let logger: Logger
    let clock: ConsoleClock
    private let samplers: Mutex<Samplers>

    struct Samplers {
        var rates: TopicRateSampler
        var lags: ConsumerLagSampler
    }

    public init(
        server: TelexServer, configuration: ConsoleConfiguration, logger: Logger, clock: ConsoleClock = .system
    ) {
        self.server = server
        self.configuration = configuration
        self.logger = logger
        self.clock = clock
        samplers = Mutex(Samplers(
            rates: TopicRateSampler(interval: configuration.sampleInterval, maxTopics: configuration.maxSampledTopics),
            lags: ConsumerLagSampler(interval: configuration.lagSampleInterval, history: configuration.lagHistory,
                                     maxConsumers: configuration.maxSampledConsumers)))
    }

    public func overview(for user: ConsoleUser) async throws(TelexError) -> OverviewJSON {
        let server = self.server
        // It sums the data directory's files: blocking.
        guard let info = try await Self.offload({ () throws(TelexError) in server.brokerInfo() }) else {
            throw Self.notServing
        }
        return OverviewJSON(
            serverName: info.serverName, version: info.version, uptimeMilliseconds: info.uptimeMilliseconds,
            address: info.address, fsyncPolicy: info.fsyncPolicy, dataBytes: info.dataBytes,
            topicCount: Int(info.topicCount), connectionCount: Int(info.connectionCount),
            tls: server.configuration.tls != nil)
    }

    public func topics(matching pattern: String, for user: ConsoleUser) async throws(TelexError) -> TopicsJSON {
        if !pattern.isEmpty { try TopicName.validatePattern(pattern) }
        let store = try store()
        let rights = server.permissions(of: user.identity)
        let rates = samplers.withLock { $0.rates }
        let topics = store.topics.compactMap { topic -> TopicJSON? in
            guard pattern.isEmpty || TopicName.matches(pattern: pattern, topic: topic), rights.maySubscribe(to: topic),
                let log = store.log(topic)
            else { return nil }
            return TopicJSON(
                topic: topic, startOffset: log.startOffset, endOffset: log.endOffset, bytes: Int64(log.sizeInBytes),
                segmentCount: log.segmentCount, lastAppendTime: log.lastAppendTime,
                eventsPerSecond: rates.eventsPerSecond(of: topic), rateHistory: rates.rateHistory(of: topic))
        }
        return TopicsJSON(topics: topics, sampleIntervalSeconds: configuration.sampleInterval.seconds)
    }

    public func consumers(for user: ConsoleUser) async throws(TelexError) -> ConsumersJSON {
        let store = try store()
        let rights = server.permissions(of: user.identity)
        let lags = samplers.withLock { $0.lags }
        var consumers: [ConsumerJSON] = []
        for (consumer, positions) in store.consumerOffsets.all.sorted(by: { $0.key < $1.key })
        where rights.mayUse(consumer: consumer) {
            let topics = positions.sorted { $0.key < $1.key }.filter { rights.maySubscribe(to: $0.key) }.map {
                topic, position in
                let log = store.log(topic)
                return ConsumerTopicJSON(
                    topic: topic, committed: position.offset, endOffset: log?.readableEndOffset ?? -1,
                    lag: log?.lag(ofCommitted: position.offset) ?? 0, lastCommitTime: position.commitTime)
            }
            // The sampled total covers every topic of the consumer: shown only to a user who may read them all.
            let history = topics.count == positions.count ? lags.lagHistory(of: consumer) : []
            consumers.append(ConsumerJSON(
                consumer: consumer, activeSubscriptions: server.subscriptionCount(ofConsumer: consumer), topics: topics,
                totalLag: topics.reduce(0) { $0 + $1.lag }, lagHistory: history))
        }
        return ConsumersJSON(consumers: consumers, sampleIntervalSeconds: configuration.lagSampleInterval.seconds)
    }

    public func resetConsumer(
        _ consumer: String, _ request: ResetRequestJSON, for user: ConsoleUser
    ) async throws(TelexError) -> ResetJSON {
        // The admin check first: the server audits its refusal (the checks below are not audited).
        try server.requireConsoleAdmin(user.identity, resetting: consumer, peer: user.peer)
        let rights = server.permissions(of: user.identity)
        guard rights.mayUse(consumer: consumer) else {
            throw TelexError(.notAuthorized,
                "principal '\(user.identity.name)' may not use consumer name '\(consumer)'")
        }
        let pattern = request.pattern ?? ""
        if !pattern.isEmpty { try TopicName.validatePattern(pattern) }
        // A reset moves the consumer through topics: only through ones the user may read.
        let store = try store()
        let unreadable = pattern.isEmpty
            ? store.consumerOffsets.committed(consumer).keys.sorted().first { !rights.maySubscribe(to: $0) }
            : rights.maySubscribe(to: pattern) ? nil : pattern
        if let unreadable {
            throw TelexError(.notAuthorized,
                "principal '\(user.identity.name)' may not read '\(unreadable)' (reset of consumer '\(consumer)')",
                topic: unreadable)
        }
        let target = try Self.resetTarget(request.to)
        let resets = try await server.resetConsumer(
            consumer, pattern: pattern, to: target, force: request.force ?? false, identity: user.identity,
            peer: user.peer)
        return ResetJSON(consumer: consumer, resets: resets)
    }

    /// Parses a reset's `to`: `beginning`, `end`, `offset:N` or `time:ISO8601` (RFC 3339).
    static func resetTarget(_ text: String) throws(TelexError) -> StartPosition {
        let invalid = TelexError(.invalidRequest,
            "reset: 'to' must be beginning, end, offset:N or time:ISO8601 (e.g. time:2024-03-06T08:00:00Z), "
                + "got \"\(text)\"")
        switch text {
        case "beginning": return .beginning
        case "end": return .end
        default: break
        }
        if text.hasPrefix("offset:") {
            guard let offset = Int64(text.dropFirst("offset:".count)), offset >= 0 else { throw invalid }
            return .offset(offset)
        }
        if text.hasPrefix("time:") {
            guard let date = CloudEvent.parseTime(String(text.dropFirst("time:".count))) else { throw invalid }
            return .timestamp(CloudEvent.milliseconds(date))
        }
        throw invalid
    }

    public func sample() {
        guard let store = server.topicStore else { return }
        let now = clock.monotonicMilliseconds()
        var ends: [String: Int64] = [:]
        for topic in store.topics {
            if let log = store.log(topic) { ends[topic] = log.endOffset }
        }
        let lagDue = samplers.withLock { samplers in
            samplers.rates.record(ends, at: now)
            return samplers.lags.isDue(at: now)
        }
        guard lagDue else { return }
        var lags: [String: Int64] = [:]
        for (consumer, positions) in store.consumerOffsets.all {
            lags[consumer] = positions.reduce(0) { total, entry in
                total + (store.log(entry.key)?.lag(ofCommitted: entry.value.offset) ?? 0)
            }
        }
        let wall = clock.wallMilliseconds()
        samplers.withLock { $0.lags.record(lags, at: now, wallTime: wall) }
    }

    // MARK: Access

    static let notServing = TelexError(.shuttingDown, "the broker is not serving")

    func store() throws(TelexError) -> TopicStore {
        guard let store = server.topicStore else { throw Self.notServing }
        return store
    }

    /// Refuses `topic` unless `user` may subscribe to it (whether or not it exists, as SUBSCRIBE does).
    func authorizeRead(_ topic: String, for user: ConsoleUser) throws(TelexError) {
        try TopicName.validate(topic)
        guard server.permissions(of: user.identity).maySubscribe(to: topic) else {
            throw TelexError(.notAuthorized, "principal '\(user.identity.name)' may not read topic '\(topic)'",
                             topic: topic)
        }
    }

    /// The log of `topic`, once `user` may read it; TOPIC_NOT_FOUND when it does not exist.
    func readableLog(_ topic: String, for user: ConsoleUser) throws(TelexError) -> TopicLog {
        try authorizeRead(topic, for: user)
        guard let log = try store().log(topic) else {
            throw TelexError(.topicNotFound, "topic '\(topic)' does not exist", topic: topic)
        }
        return log
    }

    /// Runs blocking storage work on NIO's shared thread pool.
    static func offload<T: Sendable>(
        _ body: @escaping @Sendable () throws(TelexError) -> T
    ) async throws(TelexError) -> T {
        do {
            return try await NIOThreadPool.singleton.runIfActive { try body() }
        } catch let error as TelexError {
            throw error
        } catch {
            throw TelexError(.internalError, "console storage read did not run: \(error)")
        }
    }
}

extension Duration {
    /// The duration in seconds, with fractions.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
