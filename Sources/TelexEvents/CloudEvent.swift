import Foundation
import NIOCore
import TelexProtocol

/// A CloudEvents 1.0 envelope carrying an IPTC ninjs article, as the CLIs read and write it.
///
/// `json` is the whole envelope as a JSON object; the typed properties are the validated fields.
/// On the wire the event is one record: key = `data.uri`, value = the envelope JSON, headers `ce-type`, `ce-id`.
public struct CloudEvent: @unchecked Sendable {
    public let id: String
    public let source: String
    public let type: String
    public let subject: String?
    public let time: String?
    /// The `topic` extension attribute, if present: where telex-pub publishes the event without `--topic`.
    public let topic: String?
    /// The ninjs `uri`: the record key.
    public let uri: String
    /// The envelope as a JSON object (Foundation types), without broker-added attributes.
    public let json: [String: Any]

    /// Event types Telex gives meaning to; other types pass through.
    public static let articleTypes: Set<String> = ["article.created", "article.updated"]
    /// Attributes telex-sub adds to its output; telex-pub drops them so output can be re-published.
    public static let brokerAttributes: Set<String> = ["topic", "offset", "brokertime"]

    /// Validates a parsed envelope. `location` prefixes error messages (e.g. "line 3").
    public init(json: [String: Any], location: String = "event") throws(TelexError) {
        func fail(_ field: String, _ problem: String) -> TelexError {
            TelexError(.invalidEvent, "\(location): field '\(field)': \(problem)")
        }
        func requiredString(_ field: String) throws(TelexError) -> String {
            guard let raw = json[field] else { throw fail(field, "missing (required by CloudEvents 1.0)") }
            guard let value = raw as? String else { throw fail(field, "must be a string, got \(Self.describe(raw))") }
            guard !value.isEmpty else { throw fail(field, "must not be empty") }
            return value
        }
        func optionalString(_ field: String) throws(TelexError) -> String? {
            guard let raw = json[field], !(raw is NSNull) else { return nil }
            guard let value = raw as? String else { throw fail(field, "must be a string, got \(Self.describe(raw))") }
            return value
        }
        let specversion = try requiredString("specversion")
        guard specversion == "1.0" else { throw fail("specversion", "must be \"1.0\", got \"\(specversion)\"") }
        id = try requiredString("id")
        source = try requiredString("source")
        type = try requiredString("type")
        subject = try optionalString("subject")
        time = try optionalString("time")
        if let time, Self.parseTime(time) == nil {
            throw fail("time", "\"\(time)\" is not an RFC 3339 timestamp (e.g. 2024-03-06T08:00:00Z)")
        }
        if let contentType = try optionalString("datacontenttype"), !contentType.contains("json") {
            throw fail("datacontenttype", "\"\(contentType)\" is not JSON; article data must be application/json")
        }
        topic = try optionalString("topic")
        if let topic {
            do { try TopicName.validate(topic) } catch { throw fail("topic", error.message) }
        }
        guard let rawData = json["data"] else { throw fail("data", "missing (the ninjs article)") }
        guard let data = rawData as? [String: Any] else {
            throw fail("data", "must be a JSON object (an IPTC ninjs document), got \(Self.describe(rawData))")
        }
        guard let rawURI = data["uri"] else { throw fail("data.uri", "missing (ninjs requires it; it becomes the record key)") }
        guard let uri = rawURI as? String else { throw fail("data.uri", "must be a string, got \(Self.describe(rawURI))") }
        guard !uri.isEmpty else { throw fail("data.uri", "must not be empty") }
        guard uri.utf8.count <= 4096 else { throw fail("data.uri", "is longer than 4096 bytes") }
        self.uri = uri
        if Self.articleTypes.contains(type) {
            for field in ["headlines", "bodies"] {
                if let value = data[field], !(value is [Any]) {
                    throw fail("data.\(field)", "must be an array in ninjs 3.x, got \(Self.describe(value))")
                }
            }
            for field in ["version", "versioncreated", "versionCreated", "language", "type"] {
                if let value = data[field], !(value is String) {
                    throw fail("data.\(field)", "must be a string in ninjs 3.x, got \(Self.describe(value))")
                }
            }
        }
        var stripped = json
        for attribute in Self.brokerAttributes where attribute != "topic" { stripped[attribute] = nil }
        self.json = stripped
    }

    /// Parses and validates one JSON text (one JSON Lines line).
    public init(jsonText: Data, location: String = "event") throws(TelexError) {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: jsonText, options: [])
        } catch {
            let reason = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? "\(error)"
            throw TelexError(.invalidEvent, "\(location): not valid JSON (\(reason))")
        }
        guard let dictionary = object as? [String: Any] else {
            throw TelexError(.invalidEvent, "\(location): must be a JSON object (a CloudEvent), got \(Self.describe(object))")
        }
        try self.init(json: dictionary, location: location)
    }

    /// Builds an article event around a ninjs document.
    public init(
        type: String, article: [String: Any], source: String = "urn:telex:telex-pub", id: String = UUID().uuidString,
        time: Date = Date(), topic: String? = nil
    ) throws(TelexError) {
        var envelope: [String: Any] = [
            "specversion": "1.0", "id": id, "source": source, "type": type, "time": Self.formatTime(time),
            "datacontenttype": "application/json", "data": article,
        ]
        if let uri = article["uri"] as? String { envelope["subject"] = uri }
        if let topic { envelope["topic"] = topic }
        try self.init(json: envelope, location: "article")
    }

    /// The record that carries this event: key `uri`, value the envelope JSON (without the `topic` attribute),
    /// headers `ce-type` and `ce-id`.
    public func record(timestamp: Int64? = nil) -> Record {
        var value = json
        value["topic"] = nil
        let bytes = (try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        let eventTime = time.flatMap(Self.parseTime).map { Int64($0.timeIntervalSince1970 * 1000) }
        return Record(
            timestamp: timestamp ?? eventTime ?? Int64(Date().timeIntervalSince1970 * 1000),
            key: ByteBuffer(string: uri),
            headers: [RecordHeader(name: "ce-type", value: type), RecordHeader(name: "ce-id", value: id)],
            value: ByteBuffer(bytes: bytes))
    }

    /// The JSON Lines form telex-sub prints: the envelope plus `topic`, `offset` and `brokertime`.
    public static func outputLine(value: ByteBuffer, topic: String, offset: Int64, brokerTime: Int64) throws(TelexError) -> String {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(value.readableBytesView), options: [])
        } catch {
            throw TelexError(.invalidEvent, "record \(topic)@\(offset): value is not JSON")
        }
        guard var envelope = object as? [String: Any] else {
            throw TelexError(.invalidEvent, "record \(topic)@\(offset): value is not a JSON object")
        }
        envelope["topic"] = topic
        envelope["offset"] = offset
        envelope["brokertime"] = formatTime(Date(timeIntervalSince1970: Double(brokerTime) / 1000))
        let data = (try? JSONSerialization.data(withJSONObject: envelope, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    /// Parses an RFC 3339 timestamp, with or without fractional seconds.
    public static func parseTime(_ text: String) -> Date? {
        TimeFormatters.shared.withLock { formatters in
            formatters.plain.date(from: text) ?? formatters.fractional.date(from: text)
        }
    }

    /// Formats a time as RFC 3339 UTC with milliseconds.
    public static func formatTime(_ date: Date) -> String {
        TimeFormatters.shared.withLock { $0.fractional.string(from: date) }
    }

    static func describe(_ value: Any) -> String {
        switch value {
        case is NSNull: "null"
        case is NSNumber: "a number or boolean"
        case is String: "a string"
        case is [Any]: "an array"
        case is [String: Any]: "an object"
        default: "\(Swift.type(of: value))"
        }
    }
}

/// Date formatters are costly to create: one pair is shared, behind a lock.
final class TimeFormatters: @unchecked Sendable {
    static let shared = TimeFormatters()
    private let lock = NSLock()
    let plain = ISO8601DateFormatter()
    let fractional = ISO8601DateFormatter()

    private init() {
        plain.formatOptions = [.withInternetDateTime]
        fractional.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    }

    func withLock<T>(_ body: (TimeFormatters) -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body(self)
    }
}
