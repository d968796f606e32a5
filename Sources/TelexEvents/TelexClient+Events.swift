import TelexClient
import TelexProtocol

/// Where the broker stored one event.
public struct EventAck: Sendable, Equatable {
    /// The topic the event was published to.
    public var topic: String
    /// The event's offset in that topic.
    public var offset: Int64

    public init(topic: String, offset: Int64) {
        self.topic = topic
        self.offset = offset
    }
}

extension TelexClient {
    /// Publishes CloudEvents; each goes to `topic` or, when nil, to the event's own `topic` attribute.
    /// Returns where each event was stored, in input order.
    public func publish(events: [CloudEvent], to topic: String? = nil) async throws -> [EventAck] {
        var byTopic: [String: [Int]] = [:]
        var topicOrder: [String] = []
        for (index, event) in events.enumerated() {
            guard let target = topic ?? event.topic else {
                throw TelexError(
                    .invalidEvent, "event \(event.id) has no topic: pass one or set the event's 'topic' attribute")
            }
            if byTopic[target] == nil { topicOrder.append(target) }
            byTopic[target, default: []].append(index)
        }
        var prepared: [PreparedBatch] = []
        var owners: [[Int]] = []
        for target in topicOrder {
            let indexes = byTopic[target]!
            let batches = try await prepare(indexes.map { events[$0].record() }, topic: target)
            var position = 0
            for batch in batches {
                owners.append(Array(indexes[position..<position + batch.recordCount]))
                position += batch.recordCount
            }
            prepared += batches
        }
        let acks = try await publish(prepared: prepared)
        var results = [EventAck](repeating: EventAck(topic: "", offset: -1), count: events.count)
        for (ack, indexes) in zip(acks, owners) {
            for (position, index) in indexes.enumerated() {
                results[index] = EventAck(topic: ack.topic, offset: ack.baseOffset + Int64(position))
            }
        }
        return results
    }
}
