import Foundation
import NIOCore
import TelexEvents
import TelexProtocol
import Testing

/// A valid article event; tests change one thing in it.
let validEnvelope: [String: JSONValue] = [
    "specversion": "1.0", "id": "evt-1", "source": "urn:telex:newsroom:world", "type": "article.created",
    "subject": "urn:telex:article:1", "time": "2024-03-06T08:00:00Z", "datacontenttype": "application/json",
    "topic": "news.world",
    "data": ["uri": "urn:telex:article:1", "type": "text", "version": "1", "headlines": [["role": "main", "value": "H"]]],
]

/// The envelope with `field` set to `value` (nil removes it); `data.x` changes a member of `data`.
func envelope(_ field: String, _ value: JSONValue?) -> [String: JSONValue] {
    var json = validEnvelope
    if field.hasPrefix("data.") {
        var data = json["data"]!.objectValue!
        data[String(field.dropFirst(5))] = value
        json["data"] = .object(data)
    } else {
        json[field] = value
    }
    return json
}

/// The message of the error `CloudEvent(json:location:)` throws for `json`, or nil if it is valid.
func validationError(_ json: [String: JSONValue], location: String = "line 3") -> String? {
    do {
        _ = try CloudEvent(json: json, location: location)
        return nil
    } catch {
        #expect(error.code == .invalidEvent)
        return error.message
    }
}

@Suite("CloudEvent validation", .timeLimit(.minutes(1)))
struct CloudEventValidationTests {
    @Test("a valid envelope gives its typed fields")
    func valid() throws {
        let event = try CloudEvent(json: validEnvelope, location: "line 3")
        #expect(event.id == "evt-1")
        #expect(event.source == "urn:telex:newsroom:world")
        #expect(event.type == "article.created")
        #expect(event.subject == "urn:telex:article:1")
        #expect(event.time == "2024-03-06T08:00:00Z")
        #expect(event.topic == "news.world")
        #expect(event.uri == "urn:telex:article:1")
        #expect(event.json == validEnvelope)
    }

    @Test("every required CloudEvents attribute: missing, not a string, empty", arguments: ["specversion", "id", "source", "type"])
    func requiredAttribute(field: String) {
        #expect(validationError(envelope(field, nil)) == "line 3: field '\(field)': missing (required by CloudEvents 1.0)")
        #expect(validationError(envelope(field, 1)) == "line 3: field '\(field)': must be a string, got a number")
        #expect(validationError(envelope(field, .null)) == "line 3: field '\(field)': must be a string, got null")
        #expect(validationError(envelope(field, ["x"])) == "line 3: field '\(field)': must be a string, got an array")
        #expect(validationError(envelope(field, "")) == "line 3: field '\(field)': must not be empty")
    }

    @Test("specversion must be 1.0")
    func specversion() {
        #expect(validationError(envelope("specversion", "0.3")) == #"line 3: field 'specversion': must be "1.0", got "0.3""#)
    }

    @Test("optional attributes must be strings when present; null counts as absent", arguments: ["subject", "time", "datacontenttype", "topic"])
    func optionalAttribute(field: String) throws {
        #expect(validationError(envelope(field, true)) == "line 3: field '\(field)': must be a string, got a boolean")
        #expect(validationError(envelope(field, ["a": 1])) == "line 3: field '\(field)': must be a string, got an object")
        #expect(validationError(envelope(field, nil)) == nil)
        #expect(validationError(envelope(field, .null)) == nil)
    }

    @Test("time must be RFC 3339")
    func time() {
        for bad in ["yesterday", "2024-03-06", "2024-03-06T08:00:00", "2024-03-06 08:00:00Z", "2024-13-06T08:00:00Z"] {
            #expect(validationError(envelope("time", .string(bad)))
                == "line 3: field 'time': \"\(bad)\" is not an RFC 3339 timestamp (e.g. 2024-03-06T08:00:00Z)")
        }
        for good in ["2024-03-06T08:00:00Z", "2024-03-06T08:00:00.123Z", "2024-03-06T09:00:00+01:00", "2024-03-06T08:00:00.5-02:30"] {
            #expect(validationError(envelope("time", .string(good))) == nil, "\(good)")
        }
    }

    @Test("datacontenttype must be JSON")
    func dataContentType() {
        #expect(validationError(envelope("datacontenttype", "text/plain"))
            == #"line 3: field 'datacontenttype': "text/plain" is not JSON; article data must be application/json"#)
        #expect(validationError(envelope("datacontenttype", "application/cloudevents+json")) == nil)
    }

    @Test("topic must be a valid topic name")
    func topic() {
        for bad in ["news..world", "news.the world", "news.*", ""] {
            var reason = ""
            do { try TopicName.validate(bad) } catch { reason = error.message }
            #expect(!reason.isEmpty)
            #expect(validationError(envelope("topic", .string(bad))) == "line 3: field 'topic': \(reason)")
        }
    }

    @Test("data must be an object with a non-empty string uri of at most 4096 bytes")
    func data() {
        #expect(validationError(envelope("data", nil)) == "line 3: field 'data': missing (the ninjs article)")
        #expect(validationError(envelope("data", "text"))
            == "line 3: field 'data': must be a JSON object (an IPTC ninjs document), got a string")
        #expect(validationError(envelope("data.uri", nil))
            == "line 3: field 'data.uri': missing (ninjs requires it; it becomes the record key)")
        #expect(validationError(envelope("data.uri", 7)) == "line 3: field 'data.uri': must be a string, got a number")
        #expect(validationError(envelope("data.uri", "")) == "line 3: field 'data.uri': must not be empty")
        #expect(validationError(envelope("data.uri", .string(String(repeating: "u", count: 4097))))
            == "line 3: field 'data.uri': is longer than 4096 bytes")
        #expect(validationError(envelope("data.uri", .string(String(repeating: "u", count: 4096)))) == nil)
    }

    @Test("ninjs 3.x shapes are checked for article types", arguments: ["article.created", "article.updated", "article.deleted"])
    func ninjsChecks(type: String) {
        func error(_ field: String, _ value: JSONValue) -> String? {
            var json = envelope("data.\(field)", value)
            json["type"] = .string(type)
            return validationError(json)
        }
        for field in ["headlines", "bodies"] {
            #expect(error(field, "x") == "line 3: field 'data.\(field)': must be an array in ninjs 3.x, got a string")
            #expect(error(field, []) == nil)
        }
        for field in ["version", "versioncreated", "versionCreated", "language", "type"] {
            #expect(error(field, 2) == "line 3: field 'data.\(field)': must be a string in ninjs 3.x, got a number")
            #expect(error(field, "x") == nil)
        }
    }

    @Test("other event types pass through without ninjs checks")
    func otherTypes() {
        var json = envelope("data.headlines", "not an array")
        json["type"] = "article.archived"
        #expect(validationError(json) == nil)
    }

    @Test("article.deleted needs only data.uri; without it the error names the line and the field")
    func deletion() throws {
        var json = validEnvelope
        json["type"] = "article.deleted"
        json["data"] = ["uri": "urn:telex:article:1"]
        let event = try CloudEvent(json: json, location: "line 3")
        #expect(event.isDeletion)
        #expect(event.uri == "urn:telex:article:1")
        #expect(event.record().header("ce-type") == "article.deleted")
        #expect(String(buffer: event.record().key) == "urn:telex:article:1")
        #expect(!(try CloudEvent(json: validEnvelope)).isDeletion)

        json["data"] = ["pubStatus": "canceled"]
        #expect(validationError(json) == "line 3: field 'data.uri': missing (an article.deleted event names the article it deletes by its uri, the record key)")
        json["data"] = ["uri": ""]
        #expect(validationError(json) == "line 3: field 'data.uri': must not be empty")
        json["data"] = ["uri": 12]
        #expect(validationError(json) == "line 3: field 'data.uri': must be a string, got a number")
        json["data"] = "urn:telex:article:1"
        #expect(validationError(json) == "line 3: field 'data': must be a JSON object (an IPTC ninjs document), got a string")
        #expect(try CloudEvent(type: "article.deleted", article: ["uri": "urn:a"]).isDeletion)
    }

    @Test("a JSON Lines line that is not JSON or not an object is reported with its location")
    func jsonText() {
        func message(_ text: String) -> String? {
            do {
                _ = try CloudEvent(jsonText: Array(text.utf8), location: "line 4")
                return nil
            } catch {
                return error.message
            }
        }
        #expect(message("not json") == "line 4: not valid JSON (the given data was not valid JSON)")
        #expect(message("") == "line 4: not valid JSON (the text is empty)")
        #expect(message("[1]") == "line 4: must be a JSON object (a CloudEvent), got an array")
        #expect(message(#"{"specversion":"1.0","source":"s","type":"t","data":{"uri":"u"}}"#)
            == "line 4: field 'id': missing (required by CloudEvents 1.0)")
        #expect(message(#"{"specversion":"1.0","id":"1","source":"s","type":"t","data":{"uri":"u"}}"#) == nil)
    }

    @Test("the broker's offset and brokertime are dropped, so telex-sub output re-publishes; topic is kept")
    func brokerAttributes() throws {
        var json = validEnvelope
        json["offset"] = 41
        json["brokertime"] = "2024-03-06T08:00:01.000Z"
        let event = try CloudEvent(json: json)
        #expect(event.json == validEnvelope)
        #expect(event.topic == "news.world")
    }
}

@Suite("CloudEvent records and output", .timeLimit(.minutes(1)))
struct CloudEventRecordTests {
    @Test("the record: key data.uri, headers ce-type and ce-id, value the envelope without topic, time as timestamp")
    func record() throws {
        var json = validEnvelope
        json["time"] = "2024-03-06T08:00:00.123Z"
        let event = try CloudEvent(json: json)
        let record = event.record()
        #expect(String(buffer: record.key) == "urn:telex:article:1")
        #expect(record.headers.map(\.name) == ["ce-type", "ce-id"])
        #expect(record.header("ce-type") == "article.created")
        #expect(record.header("ce-id") == "evt-1")
        #expect(record.timestamp == 1_709_712_000_123)
        var expected = json
        expected["topic"] = nil
        #expect(try JSONValue(parsing: record.value.readableBytesView) == .object(expected))
        #expect(event.record(timestamp: 5).timestamp == 5)
    }

    @Test("an event without time is stamped now")
    func recordWithoutTime() throws {
        let before = Int64(Date().timeIntervalSince1970 * 1000)
        let record = try CloudEvent(json: envelope("time", nil)).record()
        #expect(record.timestamp >= before && record.timestamp <= before + 60_000)
    }

    @Test("outputLine adds topic, offset and brokertime; the line validates back to the same event")
    func outputLine() throws {
        let event = try CloudEvent(json: validEnvelope)
        let line = try CloudEvent.outputLine(value: event.record().value, topic: "news.europe", offset: 42,
                                             brokerTime: 1_709_712_000_123)
        let parsed = try JSONValue(parsing: Array(line.utf8))
        #expect(parsed["topic"] == "news.europe")
        #expect(parsed["offset"] == 42)
        #expect(parsed["brokertime"] == "2024-03-06T08:00:00.123Z")
        #expect(!line.contains("\n"))
        let again = try CloudEvent(jsonText: Array(line.utf8))
        var expected = validEnvelope
        expected["topic"] = "news.europe"
        #expect(again.json == expected)
    }

    @Test("outputLine rejects a value that is not a JSON object")
    func outputLineErrors() {
        for (value, problem) in [("not json", "value is not JSON"), ("[1,2]", "value is not a JSON object")] {
            #expect {
                _ = try CloudEvent.outputLine(value: ByteBuffer(string: value), topic: "news.world", offset: 9, brokerTime: 0)
            } throws: { error in
                (error as? TelexError)?.message == "record news.world@9: \(problem)"
            }
        }
    }

    @Test("an article event: subject from uri, application/json, formatted time, optional topic")
    func articleInit() throws {
        let article: [String: JSONValue] = ["uri": "urn:a", "type": "text", "headlines": [["role": "main", "value": "H"]]]
        let time = Date(timeIntervalSince1970: 1_709_712_000.5)
        let event = try CloudEvent(type: "article.created", article: article, source: "urn:s", id: "id-1", time: time)
        #expect(event.json == [
            "specversion": "1.0", "id": "id-1", "source": "urn:s", "type": "article.created", "subject": "urn:a",
            "time": "2024-03-06T08:00:00.500Z", "datacontenttype": "application/json", "data": .object(article),
        ])
        #expect(event.topic == nil)
        #expect(try CloudEvent(type: "t", article: article, topic: "news.x").topic == "news.x")
        #expect(!(try CloudEvent(type: "t", article: article).id.isEmpty))
        #expect {
            _ = try CloudEvent(type: "article.created", article: ["headline": "no uri"])
        } throws: { error in
            (error as? TelexError)?.message == "article: field 'data.uri': missing (ninjs requires it; it becomes the record key)"
        }
    }

    @Test("unknown attributes and ninjs fields are kept, values exact, through record and output line")
    func unknownsPreserved() throws {
        var json = envelope("data.x-telex-desk-notes", ["embargo": nil, "ids": [9_007_199_254_740_993, -1], "ratio": 0.125])
        json["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        json["x-routing"] = ["shard": 3, "weights": [1.5, 2], "live": false, "path": "a/b"]
        json["partitionkey"] = .integer(Int64.max)
        let event = try CloudEvent(json: json)
        #expect(event.json == json)
        let line = try CloudEvent.outputLine(value: event.record().value, topic: "news.world", offset: 0, brokerTime: 0)
        #expect(try CloudEvent(jsonText: Array(line.utf8)).json == json)
        #expect(line.contains("9007199254740993") && line.contains("9223372036854775807") && line.contains("\"a/b\""))
    }
}

@Suite("Event times", .timeLimit(.minutes(1)))
struct EventTimeTests {
    @Test("parseTime reads RFC 3339 with or without fractional seconds and with offsets")
    func parse() {
        #expect(CloudEvent.parseTime("2024-03-06T08:00:00Z") == Date(timeIntervalSince1970: 1_709_712_000))
        #expect(CloudEvent.parseTime("2024-03-06T09:00:00+01:00") == Date(timeIntervalSince1970: 1_709_712_000))
        #expect(CloudEvent.parseTime("2024-03-06T08:00:00.250Z") == Date(timeIntervalSince1970: 1_709_712_000.25))
        for bad in ["", "yesterday", "2024-03-06", "2024-03-06T08:00:00", "2024-03-06t08:00:00z"] {
            #expect(CloudEvent.parseTime(bad) == nil, "\(bad)")
        }
    }

    @Test("formatTime writes UTC with milliseconds, rounded to the nearest")
    func format() {
        #expect(CloudEvent.formatTime(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00.000Z")
        #expect(CloudEvent.formatTime(Date(timeIntervalSince1970: 1_709_712_000.123)) == "2024-03-06T08:00:00.123Z")
        #expect(CloudEvent.formatTime(Date(timeIntervalSince1970: 1_709_712_000.9996)) == "2024-03-06T08:00:01.000Z")
        #expect(CloudEvent.formatTime(Date(timeIntervalSince1970: -1.5)) == "1969-12-31T23:59:58.500Z")
    }

    @Test("every millisecond survives format, parse and the record timestamp")
    func millisecondsExact() throws {
        for base in [Int64(0), 1_709_712_000_000, 4_102_444_799_000] {
            for milliseconds in base..<base + 1000 {
                let text = CloudEvent.formatTime(Date(timeIntervalSince1970: Double(milliseconds) / 1000))
                let digits = String(milliseconds % 1000)
                #expect(text.hasSuffix("." + String(repeating: "0", count: 3 - digits.count) + digits + "Z"), "\(text)")
                let event = try CloudEvent(json: envelope("time", .string(text)))
                #expect(event.record().timestamp == milliseconds, "\(text)")
            }
        }
    }
}
