import NIOConcurrencyHelpers
import NIOCore
import TelexProtocol
import TelexStorage

/// Something that wants to hear when a topic gains readable batches or a matching topic appears.
protocol TopicListener: AnyObject, Sendable {
    /// Called from any thread once `topic` has new readable batches.
    func topicReadable(_ topic: String)
    /// Called from any thread when a topic matching the listener's pattern is created.
    func topicCreated(_ topic: String)
    /// Called from any thread when `topic`, one of the listener's topics, was deleted.
    func topicDeleted(_ topic: String)
    var pattern: String { get }
    /// The durable consumer name of the subscription, if it has one.
    var consumer: String? { get }
}

/// Routes "new data", "new topic" and "topic deleted" notifications to subscriptions, and knows which durable
/// consumers are subscribed. No data passes through here: subscriptions read everything from the logs, so replay
/// and live delivery are one path.
final class TopicHub: Sendable {
    private struct Registry {
        var byTopic: [String: [ObjectIdentifier: any TopicListener]] = [:]
        var patterns: [ObjectIdentifier: any TopicListener] = [:]
        /// Registered subscriptions per durable consumer name, on every connection.
        var consumers: [String: Int] = [:]
    }

    private let registry = NIOLockedValueBox(Registry())

    /// Starts notifying `listener` about `topics` and about new topics matching its pattern.
    func register(_ listener: any TopicListener, topics: [String]) {
        let id = ObjectIdentifier(listener)
        registry.withLockedValue { registry in
            if registry.patterns.updateValue(listener, forKey: id) == nil, let consumer = listener.consumer {
                registry.consumers[consumer, default: 0] += 1
            }
            for topic in topics { registry.byTopic[topic, default: [:]][id] = listener }
        }
    }

    /// Adds one topic to an already registered listener.
    func add(_ listener: any TopicListener, topic: String) {
        registry.withLockedValue { $0.byTopic[topic, default: [:]][ObjectIdentifier(listener)] = listener }
    }

    func unregister(_ listener: any TopicListener) {
        let id = ObjectIdentifier(listener)
        registry.withLockedValue { registry in
            if let removed = registry.patterns.removeValue(forKey: id), let consumer = removed.consumer {
                registry.consumers[consumer, default: 1] -= 1
                if registry.consumers[consumer] == 0 { registry.consumers[consumer] = nil }
            }
            for topic in Array(registry.byTopic.keys) {
                registry.byTopic[topic]?[id] = nil
                if registry.byTopic[topic]?.isEmpty == true { registry.byTopic[topic] = nil }
            }
        }
    }

    /// How many subscriptions, on all connections, use the durable consumer name `consumer` (counted from SUBSCRIBE
    /// until the subscription ends).
    func subscriptions(ofConsumer consumer: String) -> Int {
        registry.withLockedValue { $0.consumers[consumer] ?? 0 }
    }

    /// Tells every subscription reading `topic` that it was deleted.
    func deleted(_ topic: String) {
        let listeners = registry.withLockedValue { $0.byTopic[topic].map { Array($0.values) } ?? [] }
        for listener in listeners { listener.topicDeleted(topic) }
    }

    func readable(_ topic: String) {
        let listeners = registry.withLockedValue { $0.byTopic[topic].map { Array($0.values) } ?? [] }
        for listener in listeners { listener.topicReadable(topic) }
    }

    func created(_ topic: String) {
        let listeners = registry.withLockedValue { registry in
            registry.patterns.values.filter { TopicName.matches(pattern: $0.pattern, topic: topic) }
        }
        for listener in listeners { listener.topicCreated(topic) }
    }
}

/// The hub's handle on one subscription: carries notifications from any thread to the subscription's
/// connection, on its event loop. Readable notifications are coalesced into one pump per loop turn.
final class SubscriptionListener: TopicListener {
    let subscriptionID: UInt32
    let pattern: String
    let consumer: String?
    private let connection: NIOLoopBound<ConnectionHandler>
    private let pumpScheduled = NIOLockedValueBox(false)

    init(subscriptionID: UInt32, pattern: String, consumer: String?, connection: NIOLoopBound<ConnectionHandler>) {
        self.subscriptionID = subscriptionID
        self.pattern = pattern
        self.consumer = consumer
        self.connection = connection
    }

    func topicDeleted(_ topic: String) {
        connection.eventLoop.execute {
            self.connection.value.topicDeleted(topic, listener: self)
        }
    }

    func topicReadable(_ topic: String) {
        let alreadyScheduled = pumpScheduled.withLockedValue { scheduled in
            defer { scheduled = true }
            return scheduled
        }
        guard !alreadyScheduled else { return }
        connection.eventLoop.execute {
            self.pumpScheduled.withLockedValue { $0 = false }
            self.connection.value.topicReadable(listener: self)
        }
    }

    func topicCreated(_ topic: String) {
        connection.eventLoop.execute {
            self.connection.value.topicCreated(topic, listener: self)
        }
    }
}
