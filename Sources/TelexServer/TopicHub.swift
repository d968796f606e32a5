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
    var pattern: String { get }
}

/// Routes "new data" and "new topic" notifications from publishers to subscriptions. No data passes
/// through here: subscriptions read everything from the logs, so replay and live delivery are one path.
final class TopicHub: Sendable {
    private struct Registry {
        var byTopic: [String: [ObjectIdentifier: any TopicListener]] = [:]
        var patterns: [ObjectIdentifier: any TopicListener] = [:]
    }

    private let registry = NIOLockedValueBox(Registry())

    /// Starts notifying `listener` about `topics` and about new topics matching its pattern.
    func register(_ listener: any TopicListener, topics: [String]) {
        let id = ObjectIdentifier(listener)
        registry.withLockedValue { registry in
            registry.patterns[id] = listener
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
            registry.patterns[id] = nil
            for topic in Array(registry.byTopic.keys) {
                registry.byTopic[topic]?[id] = nil
                if registry.byTopic[topic]?.isEmpty == true { registry.byTopic[topic] = nil }
            }
        }
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
    private let connection: NIOLoopBound<ConnectionHandler>
    private let pumpScheduled = NIOLockedValueBox(false)

    init(subscriptionID: UInt32, pattern: String, connection: NIOLoopBound<ConnectionHandler>) {
        self.subscriptionID = subscriptionID
        self.pattern = pattern
        self.connection = connection
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
