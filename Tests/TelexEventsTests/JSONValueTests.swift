import Foundation
import TelexEvents
import Testing

@Suite("JSONValue", .timeLimit(.minutes(1)))
struct JSONValueTests {
    @Test("parses every kind of value and serializes compactly with sorted keys")
    func parseAndSerialize() throws {
        let text = #" { "b" : [1, -2.5, true, false, null], "a" : {"z": "x", "y": {}} , "c": [] } "#
        let value = try JSONValue(parsing: Array(text.utf8))
        #expect(value == ["b": [1, -2.5, true, false, nil], "a": ["z": "x", "y": [:]], "c": []])
        #expect(value.jsonText == #"{"a":{"y":{},"z":"x"},"b":[1,-2.5,true,false,null],"c":[]}"#)
        #expect(try JSONValue(parsing: value.serialized()) == value)
    }

    @Test("strings are escaped by the encoder: quotes, backslashes, control characters; slashes and non-ASCII as is")
    func escaping() throws {
        let text = "a \"quote\", a \\ backslash, a / slash, a\nnewline, a\ttab, \u{01} \u{1F}, é, 東京, \u{2028}, 🗞️"
        let serialized = JSONValue.string(text).jsonText
        #expect(serialized.contains(#"\"quote\""#))
        #expect(serialized.contains(#"\\ backslash"#))
        #expect(serialized.contains("a / slash"))
        #expect(serialized.contains(#"a\nnewline"#))
        #expect(!serialized.unicodeScalars.contains { $0.value < 0x20 })
        #expect(serialized.contains("é, 東京"))
        #expect(try JSONValue(parsing: Array(serialized.utf8)) == .string(text))
        #expect(try JSONValue(parsing: Array(#""caf\u00e9 \/ \ud83d\uddde""#.utf8)) == .string("café / 🗞"))
    }

    @Test("integers are exact across the whole Int64 range")
    func integerExactness() throws {
        for integer in [Int64.max, Int64.min, 9_007_199_254_740_993, -9_007_199_254_740_993, 0, 1_709_712_000_123] {
            let parsed = try JSONValue(parsing: Array("[\(integer)]".utf8))
            #expect(parsed == [.integer(integer)])
            #expect(parsed.jsonText == "[\(integer)]")
        }
    }

    /// The choices documented on `JSONValue`: a number that is an exact Int64 is an integer, whatever its spelling.
    @Test(
        "how numbers are read",
        arguments: [
            ("1.0", JSONValue.integer(1)), ("1e3", .integer(1000)), ("1E+3", .integer(1000)), ("-0", .integer(0)),
            ("-0.0", .integer(0)), ("0.5", .double(0.5)), ("-2.25e-3", .double(-0.00225)), ("1e20", .double(1e20)),
            ("9223372036854775807", .integer(.max)), ("9223372036854775808", .double(9_223_372_036_854_775_808)),
            ("-9223372036854777856", .double(-9_223_372_036_854_777_856)), ("-9223372036854775809", .integer(.min)),
            ("123456789012345678901234567890", .double(1.2345678901234568e29)),
        ])
    func numbers(text: String, expected: JSONValue) throws {
        let parsed = try JSONValue(parsing: Array(text.utf8))
        #expect(parsed == expected)
        #expect(try JSONValue(parsing: parsed.serialized()) == parsed)
    }

    @Test("a double built in code with an integral value comes back as an integer; non-finite ones as null")
    func builtDoubles() throws {
        #expect(JSONValue.double(1.0).jsonText == "1")
        #expect(try JSONValue(parsing: JSONValue.double(1.0).serialized()) == .integer(1))
        #expect(JSONValue.double(.nan).jsonText == "null")
        #expect(JSONValue.array([.double(.infinity), .double(-.infinity)]).jsonText == "[null,null]")
    }

    @Test(
        "parse errors say what is wrong",
        arguments: [
            ("", "the text is empty"), ("  \n", "the text is empty"),
            ("not json", "the given data was not valid JSON"), (#"{"a":}"#, "the given data was not valid JSON"),
            ("[1,2", "the given data was not valid JSON"), (#"{"a":1} x"#, "the given data was not valid JSON"),
            ("1e400", "a number out of range or badly formed at the top level"),
            (#"{"data":{"urgency":[1, 1e999]}}"#, "a number out of range or badly formed at data.urgency[1]"),
            (#"{"data":{"headline":"bad \x escape"}}"#, "a string with a bad escape sequence at data.headline"),
            (#"["\ud800"]"#, "a string with a bad escape sequence at [0]"),
        ])
    func parseErrors(text: String, reason: String) {
        #expect {
            _ = try JSONValue(parsing: Array(text.utf8))
        } throws: { error in
            let error = try #require(error as? JSONValue.ParseError)
            return error.reason.hasPrefix(reason) && !error.reason.contains("DecodingError")
        }
    }

    @Test("accessors read members, elements and scalars")
    func accessors() {
        let value: JSONValue = ["uri": "urn:x", "version": 3, "score": 0.5, "live": true, "tags": ["a", "b"], "none": nil]
        #expect(value["uri"]?.stringValue == "urn:x")
        #expect(value["version"]?.integerValue == 3)
        #expect(value["version"]?.doubleValue == 3)
        #expect(value["score"]?.doubleValue == 0.5)
        #expect(value["score"]?.integerValue == nil)
        #expect(value["live"]?.boolValue == true)
        #expect(value["tags"]?[1] == "b")
        #expect(value["tags"]?[2] == nil)
        #expect(value["tags"]?.arrayValue?.count == 2)
        #expect(value["none"]?.isNull == true)
        #expect(value["missing"] == nil)
        #expect(value.objectValue?.count == 6)
        #expect(value["uri"]?["x"] == nil)
        let index = 7
        #expect(JSONValue.string("article \(index)") == "article 7")
        #expect(
            [JSONValue.null, true, 1, 1.5, "s", [], [:]].map(\.kindDescription)
                == ["null", "a boolean", "a number", "a number", "a string", "an array", "an object"])
    }

    @Test("works as a Codable member of other types")
    func codableMember() throws {
        struct Envelope: Codable, Equatable {
            var name: String
            var payload: JSONValue
        }
        let envelope = Envelope(name: "n", payload: ["list": [1, "two", nil], "flag": false])
        let data = try JSONEncoder().encode(envelope)
        #expect(try JSONDecoder().decode(Envelope.self, from: data) == envelope)
    }

    @Test("random values survive serialize and parse unchanged, and another parser reads them")
    func randomRoundTrips() throws {
        var generator = SplitMix(state: 0x5EED)
        for _ in 0..<400 {
            let value = generator.randomValue(depth: 0)
            let serialized = value.serialized()
            #expect(try JSONValue(parsing: serialized) == value, "\(value.jsonText)")
            #expect(throws: Never.self) {
                try JSONSerialization.jsonObject(with: Data(serialized), options: [.fragmentsAllowed])
            }
        }
    }
}
