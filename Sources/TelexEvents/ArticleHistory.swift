import Foundation
import TelexClient
import TelexProtocol

/// One stored version of an article: where and when the broker stored it, and the event as stored.
public struct ArticleVersion: Sendable, Equatable {
    public var topic: String
    public var offset: Int64
    /// When the broker appended the record, milliseconds since 1970.
    public var brokerTime: Int64
    /// The stored envelope, as published (not validated: history shows whatever was stored).
    public var event: [String: JSONValue]

    public init(topic: String, offset: Int64, brokerTime: Int64, event: [String: JSONValue]) {
        self.topic = topic
        self.offset = offset
        self.brokerTime = brokerTime
        self.event = event
    }

    /// The version a delivered record holds; INVALID_EVENT when its value is not a JSON object.
    public init(_ delivered: DeliveredRecord) throws(TelexError) {
        let event = try CloudEvent.storedEnvelope(value: delivered.record.value, topic: delivered.topic,
                                                  offset: delivered.offset)
        self.init(topic: delivered.topic, offset: delivered.offset, brokerTime: delivered.brokerTime, event: event)
    }

    /// The CloudEvents `type`, empty when the stored event has none.
    public var type: String { event["type"]?.stringValue ?? "" }
    /// True when this version is the article's tombstone.
    public var isDeletion: Bool { type == CloudEvent.deletedType }
    /// The ninjs document (`data`); empty when the event carries none.
    public var article: [String: JSONValue] { event["data"]?.objectValue ?? [:] }
    /// The first headline: ninjs 3.x `headlines[0].value`, else the ninjs 1.x/2.x `headline` string.
    public var headline: String? {
        article["headlines"]?[0]?["value"]?.stringValue ?? article["headline"]?.stringValue
    }
}

/// What telex-history prints: pure functions over the versions of one article, oldest first.
public enum ArticleHistory {
    /// One readable line per version: broker time (RFC 3339 UTC), topic, offset, type and headline ("(deleted)"
    /// for a deletion), in aligned columns.
    public static func listLines(_ versions: [ArticleVersion]) -> [String] {
        let topicWidth = versions.map(\.topic.count).max() ?? 0
        let offsetWidth = versions.map { String($0.offset).count }.max() ?? 0
        let typeWidth = versions.map(\.type.count).max() ?? 0
        return versions.map { version in
            let headline = version.isDeletion ? "(deleted)" : version.headline.map(oneLine) ?? "(no headline)"
            return [
                CloudEvent.formatTime(Date(timeIntervalSince1970: Double(version.brokerTime) / 1000)),
                pad(version.topic, topicWidth), pad(String(version.offset), offsetWidth, left: true),
                pad(version.type.isEmpty ? "-" : version.type, typeWidth), headline,
            ].joined(separator: "  ")
        }
    }

    /// One JSON line per version, exactly as telex-sub prints the record: the stored event plus `topic`, `offset`
    /// and `brokertime`.
    public static func jsonLines(_ versions: [ArticleVersion]) -> [String] {
        versions.map {
            CloudEvent.outputLine(envelope: $0.event, topic: $0.topic, offset: $0.offset, brokerTime: $0.brokerTime)
        }
    }

    /// The version current at `time` (milliseconds since 1970): the newest stored at or before it; nil when the
    /// article had none yet. A deletion is a version too: the article was deleted at that time.
    public static func version(at time: Int64, in versions: [ArticleVersion]) -> ArticleVersion? {
        versions.last { $0.brokerTime <= time }
    }

    /// The text on one line: line breaks and tabs become spaces.
    static func oneLine(_ text: String) -> String {
        String(text.map { $0.isNewline || $0 == "\t" ? " " : $0 })
    }

    private static func pad(_ text: String, _ width: Int, left: Bool = false) -> String {
        let padding = String(repeating: " ", count: max(0, width - text.count))
        return left ? padding + text : text + padding
    }
}
