import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexEvents

/// What a line gives through `EventLine` and through `CloudEvent(jsonText:)`: the same error message, or records
/// with the same key, headers and timestamp and values that are the same JSON.
func expectSameOutcome(_ text: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) throws {
    let label = String(decoding: text, as: UTF8.self)
    var slow: Result<CloudEvent, TelexError>
    do { slow = .success(try CloudEvent(jsonText: String(decoding: text, as: UTF8.self).utf8, location: "line 7")) } catch {
        slow = .failure(error)
    }
    var fast: Result<EventLine, TelexError>
    do { fast = .success(try EventLine(line: ByteBuffer(bytes: text), location: "line 7")) } catch { fast = .failure(error) }
    switch (slow, fast) {
    case (.failure(let expected), .failure(let actual)):
        #expect(actual.message == expected.message, "\(label)", sourceLocation: sourceLocation)
    case (.success(let event), .success(let line)):
        let expected = event.record()
        #expect(line.id == event.id && line.topic == event.topic, "\(label)", sourceLocation: sourceLocation)
        #expect(line.record.key == expected.key && line.record.headers == expected.headers, "\(label)",
                sourceLocation: sourceLocation)
        if event.time != nil {
            #expect(line.record.timestamp == expected.timestamp, "\(label)", sourceLocation: sourceLocation)
        }
        #expect(try JSONValue(parsing: line.record.value.readableBytesView)
                    == JSONValue(parsing: expected.value.readableBytesView), "\(label)", sourceLocation: sourceLocation)
    default:
        Issue.record("EventLine and CloudEvent disagree on \(label): \(fast) vs \(slow)", sourceLocation: sourceLocation)
    }
}

@Suite("EventLine: telex-pub's fast path", .timeLimit(.minutes(1)))
struct EventLineTests {
    static let fields = [
        "specversion", "id", "source", "type", "subject", "time", "datacontenttype", "topic", "offset", "brokertime",
        "data", "data.uri", "data.headlines", "data.bodies", "data.version", "data.versioncreated",
        "data.versionCreated", "data.language", "data.type",
    ]
    static let values: [JSONValue?] = [
        nil, 1, .null, ["x"], [:], "", "1.0", "article.updated", "article.deleted", "other.type",
        "2024-03-06T08:00:00.123Z", "2024-03-06T08:00:00+01:00", "2024-02-30T00:00:00Z", "2024-03-06 08:00:00",
        "application/json", "text/plain", "news.world", "bad topic!", "urn:a", ["uri": "urn:b"], ["uri": 5],
        .string(String(repeating: "u", count: 4097)), "caf\u{e9} \"/\\ \u{1F5DE}",
    ]

    @Test("every field set to every kind of value: the same error or the same record as CloudEvent")
    func sameVerdicts() throws {
        for field in Self.fields {
            for value in Self.values {
                try expectSameOutcome(JSONValue.object(envelope(field, value)).serialized())
            }
        }
    }

    @Test("lines as people write them: whitespace, key order, escapes, repeated keys, bad UTF-8, not JSON")
    func writtenLines() throws {
        let lines: [[UInt8]] = [
            #"  {"type":"article.created", "id" : "e\u0031", "source":"s","specversion":"1.0","data":{"uri":"u\/1"}} "#,
            #"{"specversion":"1.0","id":"a","source":"s","type":"t","data":{"uri":"u"},"id":"b"}"#,
            #"{"specversion":"1.0","id":"a","source":"s","type":"t","data":{"uri":"u","uri":"v"}}"#,
            #"{"specversion":"1.0","id":"a","source":"s","type":"t","data":{"uri":"u"},"offset":3,"brokertime":"x"}"#,
            #"{"specversion":"1.0","id":"a","source":"s","type":"t","data":{"uri":"u"},"topic":null}"#,
            #"{"specversion":"1.0","id":"a","source":"s","type":"t","data":{"uri":"u"}"#, "[1]", "", "{}\r",
        ].map { Array($0.utf8) } + [
            Array(#"{"specversion":"1.0","id":"a","source":"s","type":"t","data":{"uri":"u","h":""#.utf8) + [0xE9]
                + Array(#""}}"#.utf8),
        ]
        for line in lines { try expectSameOutcome(line) }
    }

    @Test("the stored value is the line as written, without topic, offset and brokertime")
    func storedAsWritten() throws {
        let text = #" {"specversion":"1.0", "topic":"news.world","id":"a","source":"s","type":"t","data":{"uri":"u", "x": 1.50},"offset":9} "#
        let line = try EventLine(line: ByteBuffer(string: text), location: "line 1")
        #expect(String(buffer: line.record.value) == #"{"specversion":"1.0","id":"a","source":"s","type":"t","data":{"uri":"u", "x": 1.50}}"#)
        #expect(line.topic == "news.world")
        let untouched = #"{"specversion":"1.0","id":"a","source":"s","type":"t","data":{"uri":"u"}}"#
        #expect(String(buffer: try EventLine(line: ByteBuffer(string: untouched + "\r"), location: "x").record.value) == untouched)
    }

    @Test("seed lines: the same record as CloudEvent, value as written")
    func seeds() throws {
        for (_, text) in try seedLines() {
            try expectSameOutcome(Array(text.utf8))
            let line = try EventLine(line: ByteBuffer(string: text), location: "seed")
            #expect(try sameJSON(line.record.value.readableBytesView, CloudEvent(jsonText: Array(text.utf8)).record().value.readableBytesView))
        }
    }

    @Test("times: the fast RFC 3339 reader and writer agree with Foundation's, millisecond for millisecond")
    func times() throws {
        var generator = SplitMix(state: 0x71AE)
        for _ in 0..<2000 {
            let milliseconds = Int64(generator.next(253_402_300_800_000))
            let text = CloudEvent.formatTime(Date(timeIntervalSince1970: Double(milliseconds) / 1000))
            #expect(CloudEvent.formatTime(milliseconds: milliseconds) == text)
            #expect(EventLine.milliseconds(rfc3339: text) == milliseconds, "\(text)")
            let whole = String(text.prefix(19)) + "Z"
            #expect(EventLine.milliseconds(rfc3339: whole) == CloudEvent.parseTime(whole).map(CloudEvent.milliseconds))
        }
        for text in ["2024-02-29T23:59:59Z", "2023-02-29T00:00:00Z", "2024-13-01T00:00:00Z", "2024-03-06T08:00:00+01:00",
                     "2024-03-06T24:00:00Z", "1969-12-31T23:59:59.999Z"] {
            #expect(EventLine.milliseconds(rfc3339: text) == CloudEvent.parseTime(text).map(CloudEvent.milliseconds), "\(text)")
        }
    }
}

@Suite("telex-sub's output line, spliced", .timeLimit(.minutes(1)))
struct OutputLineSpliceTests {
    func spliced(_ value: String, topic: String = "news.world", offset: Int64 = 42) throws -> String {
        var output: [UInt8] = []
        try CloudEvent.appendOutputLine(value: ByteBuffer(string: value), topic: topic, offset: offset,
                                        brokerTime: 1_709_712_000_123, to: &output)
        return String(decoding: output, as: UTF8.self)
    }

    @Test("topic, offset and brokertime go first, then the stored members as they are")
    func splice() throws {
        #expect(try spliced(#"{"id":"a","data":{"uri":"u"}}"#)
                == #"{"topic":"news.world","offset":42,"brokertime":"2024-03-06T08:00:00.123Z","id":"a","data":{"uri":"u"}}"# + "\n")
        #expect(try spliced(" { } ") == #"{"topic":"news.world","offset":42,"brokertime":"2024-03-06T08:00:00.123Z"}"# + "\n")
        #expect(try spliced(#"{"offset":1,"id":"a","topic":"old","brokertime":"x"}"#)
                == #"{"topic":"news.world","offset":42,"brokertime":"2024-03-06T08:00:00.123Z","id":"a"}"# + "\n")
    }

    @Test("every value gives the same JSON as outputLine: sorted, as written, with broker members, odd layouts")
    func sameAsOutputLine() throws {
        let values = [
            #"{"data":{"uri":"u"},"id":"a"}"#, #"{"id":"a","topic":"t","offset":"x"}"#, "{\"a\":\n1}", "{\"a\":1}\r",
            #"{"a":1,"a":2}"#, #"{"\u0061":1}"#, "\u{FEFF}{\"a\":1}", #"{"a":"caf\u00e9"}"#,
        ]
        for value in values {
            let line = try spliced(value)
            #expect(line.hasSuffix("\n") && line.dropLast().firstIndex(of: "\n") == nil, "\(value)")
            let expected = try CloudEvent.outputLine(value: ByteBuffer(string: value), topic: "news.world", offset: 42,
                                                     brokerTime: 1_709_712_000_123)
            #expect(try JSONValue(parsing: Array(line.utf8)) == JSONValue(parsing: Array(expected.utf8)), "\(value)")
        }
    }

    @Test("a value that is not JSON or not an object: outputLine's error")
    func errors() {
        for (value, problem) in [("not json", "value is not JSON"), ("[1,2]", "value is not a JSON object"), ("", "value is not JSON")] {
            #expect {
                _ = try spliced(value, offset: 9)
            } throws: { error in
                (error as? TelexError)?.message == "record news.world@9: \(problem)"
            }
        }
    }
}
