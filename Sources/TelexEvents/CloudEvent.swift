import Foundation
import NIOCore
import TelexProtocol

/// A CloudEvents 1.0 envelope carrying an IPTC ninjs article, as the CLIs read and write it.
///
/// `json` is the whole envelope as a JSON object; the typed properties are the validated fields.
/// On the wire the event is one record: key = `data.uri`, value = the envelope JSON, headers `ce-type`, `ce-id`.
public struct CloudEvent: Sendable, Equatable {
    public let id: String
    public let source: String
    public let type: String
    public let subject: String?
    public let time: String?
    /// The `topic` extension attribute, if present: where telex-pub publishes the event without `--topic`.
    public let topic: String?
    /// The ninjs `uri`: the record key.
    public let uri: String
    /// The envelope as a JSON object, without the broker-added attributes `offset` and `brokertime`. Attributes and
    /// ninjs fields Telex does not know are kept as they are.
    public let json: [String: JSONValue]

    /// The type of a deletion: the article's tombstone. Its `data` needs only the `uri` of the article it deletes.
    public static let deletedType = "article.deleted"
    /// Event types Telex gives meaning to (their ninjs fields are shape-checked when present); other types pass
    /// through.
    public static let articleTypes: Set<String> = ["article.created", "article.updated", deletedType]
    /// Attributes telex-sub adds to its output; telex-pub drops them so output can be re-published.
    public static let brokerAttributes: Set<String> = ["topic", "offset", "brokertime"]

    /// Validates a parsed envelope. `location` prefixes error messages (e.g. "line 3").
    public init(json: [String: JSONValue], location: String = "event") throws(TelexError) {
        func fail(_ field: String, _ problem: String) -> TelexError {
            TelexError(.invalidEvent, "\(location): field '\(field)': \(problem)")
        }
        func requiredString(_ field: String) throws(TelexError) -> String {
            guard let raw = json[field] else { throw fail(field, "missing (required by CloudEvents 1.0)") }
            guard let value = raw.stringValue else { throw fail(field, "must be a string, got \(raw.kindDescription)") }
            guard !value.isEmpty else { throw fail(field, "must not be empty") }
            return value
        }
        func optionalString(_ field: String) throws(TelexError) -> String? {
            guard let raw = json[field], !raw.isNull else { return nil }
            guard let value = raw.stringValue else { throw fail(field, "must be a string, got \(raw.kindDescription)") }
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
        guard let data = rawData.objectValue else {
            throw fail("data", "must be a JSON object (an IPTC ninjs document), got \(rawData.kindDescription)")
        }
        guard let rawURI = data["uri"] else {
            throw fail("data.uri", type == Self.deletedType
                ? "missing (an article.deleted event names the article it deletes by its uri, the record key)"
                : "missing (ninjs requires it; it becomes the record key)")
        }
        guard let uri = rawURI.stringValue else { throw fail("data.uri", "must be a string, got \(rawURI.kindDescription)") }
        guard !uri.isEmpty else { throw fail("data.uri", "must not be empty") }
        guard uri.utf8.count <= 4096 else { throw fail("data.uri", "is longer than 4096 bytes") }
        self.uri = uri
        if Self.articleTypes.contains(type) {
            for field in ["headlines", "bodies"] {
                if let value = data[field], value.arrayValue == nil {
                    throw fail("data.\(field)", "must be an array in ninjs 3.x, got \(value.kindDescription)")
                }
            }
            for field in ["version", "versioncreated", "versionCreated", "language", "type"] {
                if let value = data[field], value.stringValue == nil {
                    throw fail("data.\(field)", "must be a string in ninjs 3.x, got \(value.kindDescription)")
                }
            }
        }
        var stripped = json
        for attribute in Self.brokerAttributes where attribute != "topic" { stripped[attribute] = nil }
        self.json = stripped
    }

    /// True for an `article.deleted` event: the broker treats its record as the article's tombstone.
    public var isDeletion: Bool { type == Self.deletedType }

    /// Parses and validates one JSON text (one JSON Lines line).
    public init(jsonText: some Collection<UInt8>, location: String = "event") throws(TelexError) {
        let value: JSONValue
        do {
            value = try JSONValue(parsing: jsonText)
        } catch {
            throw TelexError(.invalidEvent, "\(location): not valid JSON (\(error.reason))")
        }
        guard let object = value.objectValue else {
            throw TelexError(.invalidEvent, "\(location): must be a JSON object (a CloudEvent), got \(value.kindDescription)")
        }
        try self.init(json: object, location: location)
    }

    /// Builds an article event around a ninjs document; `subject` is the article's `uri`.
    public init(
        type: String, article: [String: JSONValue], source: String = "urn:telex:telex-pub",
        id: String = UUID().uuidString, time: Date = Date(), topic: String? = nil
    ) throws(TelexError) {
        var envelope: [String: JSONValue] = [
            "specversion": "1.0", "id": .string(id), "source": .string(source), "type": .string(type),
            "time": .string(Self.formatTime(time)), "datacontenttype": "application/json", "data": .object(article),
        ]
        if let uri = article["uri"]?.stringValue { envelope["subject"] = .string(uri) }
        if let topic { envelope["topic"] = .string(topic) }
        try self.init(json: envelope, location: "article")
    }

    /// The record that carries this event: key `uri`, value the envelope JSON (without the `topic` attribute),
    /// headers `ce-type` and `ce-id`. The timestamp defaults to the event's `time`, else now (milliseconds).
    public func record(timestamp: Int64? = nil) -> Record {
        var value = json
        value["topic"] = nil
        return Record(
            timestamp: timestamp ?? time.flatMap(Self.parseTime).map(Self.milliseconds) ?? Self.milliseconds(Date()),
            key: ByteBuffer(string: uri),
            headers: [RecordHeader(name: "ce-type", value: type), RecordHeader(name: "ce-id", value: id)],
            value: ByteBuffer(bytes: JSONValue.object(value).serialized()))
    }

    /// The JSON Lines form telex-sub prints: the envelope plus `topic`, `offset` and `brokertime` (`brokerTime` is
    /// in milliseconds since 1970).
    public static func outputLine(value: ByteBuffer, topic: String, offset: Int64, brokerTime: Int64) throws(TelexError) -> String {
        outputLine(envelope: try storedEnvelope(value: value, topic: topic, offset: offset), topic: topic,
                   offset: offset, brokerTime: brokerTime)
    }

    /// A stored record value parsed as an envelope (any JSON object; not validated, so whatever was stored shows).
    public static func storedEnvelope(value: ByteBuffer, topic: String, offset: Int64) throws(TelexError) -> [String: JSONValue] {
        let parsed: JSONValue
        do {
            parsed = try JSONValue(parsing: value.readableBytesView)
        } catch {
            throw TelexError(.invalidEvent, "record \(topic)@\(offset): value is not JSON")
        }
        guard let envelope = parsed.objectValue else {
            throw TelexError(.invalidEvent, "record \(topic)@\(offset): value is not a JSON object")
        }
        return envelope
    }

    /// `outputLine(value:...)` for an envelope already parsed by `storedEnvelope`.
    public static func outputLine(envelope stored: [String: JSONValue], topic: String, offset: Int64, brokerTime: Int64) -> String {
        var envelope = stored
        envelope["topic"] = .string(topic)
        envelope["offset"] = .integer(offset)
        envelope["brokertime"] = .string(formatTime(Date(timeIntervalSince1970: Double(brokerTime) / 1000)))
        return JSONValue.object(envelope).jsonText
    }

    /// Parses an RFC 3339 timestamp, with or without fractional seconds.
    public static func parseTime(_ text: String) -> Date? {
        (try? wholeSeconds.parse(text)) ?? (try? fractionalSeconds.parse(text))
    }

    /// Formats a time as RFC 3339 UTC with milliseconds (rounded to the nearest), e.g. 2024-03-06T08:00:00.000Z.
    public static func formatTime(_ date: Date) -> String {
        // ISO8601FormatStyle truncates fractions it cannot represent exactly (.123 can print as .122): format whole
        // seconds with it and add the rounded milliseconds.
        let milliseconds = (date.timeIntervalSince1970 * 1000).rounded()
        let seconds = (milliseconds / 1000).rounded(.down)
        let fraction = Int(milliseconds - seconds * 1000)
        var text = Date(timeIntervalSince1970: seconds).formatted(wholeSeconds)
        text.removeLast()  // "Z"
        let digits = String(fraction)
        return text + "." + String(repeating: "0", count: 3 - digits.count) + digits + "Z"
    }

    /// Whole milliseconds since 1970, sub-millisecond digits dropped. Rounding to microseconds first absorbs the
    /// parser's binary error (.123 can come back as .12299999).
    public static func milliseconds(_ date: Date) -> Int64 {
        Int64(((date.timeIntervalSince1970 * 1_000_000).rounded() / 1000).rounded(.down))
    }

    private static let wholeSeconds = Date.ISO8601FormatStyle()
    private static let fractionalSeconds = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
}
