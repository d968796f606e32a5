import Foundation
import Testing

@testable import TelexEvents

/// Whether the scanner accepts `bytes` as one JSON text.
func scannerAccepts(_ bytes: [UInt8]) -> Bool {
    bytes.withUnsafeBufferPointer { JSONScanner.validate($0) }
}

/// Whether `JSONValue(parsing:)` (Foundation's parser) accepts `bytes`.
func parserAccepts(_ bytes: [UInt8]) -> Bool {
    (try? JSONValue(parsing: bytes)) != nil
}

@Suite("JSON scanner", .timeLimit(.minutes(1)))
struct JSONScannerTests {
    /// Texts both accept.
    static let valid: [String] = [
        "{}", "[]", "0", "-0", "-0.0", "1.5e3", "1E+2", "1e-2", "123456789012345678901234567890", "-9223372036854775809",
        "1e308", "true", "false", "null", #""""#, #""a\"b\\c\/d\b\f\n\r\t""#, #""caf\u00e9 \ud83d\uddde""#,
        #""\u0000""#, "\"café 🗞 東\"", " \t\r\n{ \"a\" : [ 1 , 2 , { } , [ ] ] } \n", #"{"a":{"b":{"c":[null]}}}"#,
        #"{"a":1,"a":2}"#, "[" + String(repeating: "[", count: 200) + String(repeating: "]", count: 200) + "]",
        #"{"data":{"urgency":[1, 2.5]}}"#, "\"\u{7F}\"",
    ]

    /// Texts both reject: the repository's bad inputs (JSONValueTests) and the grammar's corners.
    static let invalid: [[UInt8]] = [
        "", "  \n", "not json", #"{"a":}"#, "[1,2", #"{"a":1} x"#, "1e400", #"{"data":{"urgency":[1, 1e999]}}"#,
        #"{"data":{"headline":"bad \x escape"}}"#, #"["\ud800"]"#, #"["\udc00"]"#, #""\ud800\u0041""#, "01", "-",
        "1.", ".5", "1e", "1e+", "+1", "tru", "nul", "nulll", "{,}", #"{"a" 1}"#, "[1 2]",
        #"{1:2}"#, "'a'", #""a"#, #""\u12G4""#, "\"tab\there\"", "\"line\nbreak\"", "[1]]", "{}{}", "NaN", "Infinity", "[,1]", "{,\"a\":1}",
        "-Infinity", "0x10", "1_000",
    ].map { Array($0.utf8) } + [
        [0x22, 0xC0, 0xAF, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22], [0x22, 0xF4, 0x90, 0x80, 0x80, 0x22],
        [0x22, 0xE9, 0x22], [0x22, 0xF0, 0x9F, 0x97, 0x22], [0x22, 0x80, 0x22], [0x22, 0x1F, 0x22],
    ]

    @Test("accepts what JSONValue accepts and rejects what it rejects, over a corpus of texts")
    func corpusAgreement() {
        for text in Self.valid {
            let bytes = Array(text.utf8)
            #expect(parserAccepts(bytes), "parser: \(text)")
            #expect(scannerAccepts(bytes), "scanner: \(text)")
        }
        for bytes in Self.invalid {
            #expect(!parserAccepts(bytes), "parser: \(bytes)")
            #expect(!scannerAccepts(bytes), "scanner: \(bytes)")
        }
    }

    /// Foundation's parser also accepts a comma before `]` or `}`, which RFC 8259 does not: the scanner leaves
    /// those texts to it (telex-pub then stores them re-serialized, as valid JSON).
    static let trailingCommas = ["[1,]", #"{"a":1,}"#, #"{"a":[1, 2 ,] }"#]

    @Test("leaves to JSONValue what it cannot decide cheaply, or what RFC 8259 forbids and Foundation allows")
    func conservativeCases() {
        let cases: [[UInt8]] = [
            [0xEF, 0xBB, 0xBF] + Array("{}".utf8),
            Array((String(repeating: "[", count: 300) + String(repeating: "]", count: 300)).utf8),
            Array("1e-400".utf8),
        ] + Self.trailingCommas.map { Array($0.utf8) }
        for bytes in cases {
            #expect(parserAccepts(bytes), "\(bytes.prefix(8))")
            #expect(!scannerAccepts(bytes), "\(bytes.prefix(8))")
        }
    }

    /// Whether a comma is followed (after whitespace) by `]` or `}`: where Foundation is more lenient than RFC 8259.
    static func hasTrailingComma(_ bytes: [UInt8]) -> Bool {
        let significant = bytes.filter { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }
        return zip(significant, significant.dropFirst()).contains { $0 == UInt8(ascii: ",") && ($1 == UInt8(ascii: "]") || $1 == UInt8(ascii: "}")) }
    }

    @Test("random documents: accepted; every truncation and one-byte change of them: the same verdict as JSONValue")
    func randomDocuments() throws {
        var generator = SplitMix(state: 0x5CA7)
        let replacements = Array(#"{}[]:,"\ 0123456789.eE+-tfnrux"#.utf8) + [0x00, 0x1F, 0x7F, 0x80, 0xC3, 0xFF]
        for _ in 0..<300 {
            let document = JSONValue.object(["data": generator.randomValue(depth: 0), "id": "x"]).serialized()
            #expect(scannerAccepts(document), "\(String(decoding: document, as: UTF8.self))")
            for _ in 0..<20 {
                var changed = document
                if generator.next(4) == 0 {
                    changed.removeLast(1 + generator.next(changed.count))
                } else {
                    changed[generator.next(changed.count)] = replacements[generator.next(replacements.count)]
                }
                // Never accepted where Foundation rejects; rejected where it accepts only for a trailing comma.
                let (scanner, parser) = (scannerAccepts(changed), parserAccepts(changed))
                #expect(scanner == parser || (parser && Self.hasTrailingComma(changed)),
                        "\(String(decoding: changed, as: UTF8.self))")
            }
        }
    }

    @Test("records the top-level members and those of one nested object; refuses repeated or escaped recorded keys")
    func members() throws {
        let text = Array(#" {"a": 1, "data" : {"uri":"u","x":[1]}, "b":"s\n"} "#.utf8)
        let scan = try #require(text.withUnsafeBufferPointer { JSONScanner.scanObject($0, nested: "data") })
        #expect(scan.members.map { String(decoding: text[$0.key], as: UTF8.self) } == ["a", "data", "b"])
        #expect(scan.nestedMembers.map { String(decoding: text[$0.value], as: UTF8.self) } == [#""u""#, "[1]"])
        #expect(scan.members.map(\.escaped) == [false, false, true])
        #expect(String(decoding: text[scan.members[1].member], as: UTF8.self) == #""data" : {"uri":"u","x":[1]}"#)
        #expect((scan.open, scan.close) == (1, text.count - 2))
        for refused in [#"{"a":1,"a":2}"#, #"{"\u0061":1}"#, #"{"data":{"u":1,"u":2}}"#, "[1]", #"{"a":1"#] {
            #expect(Array(refused.utf8).withUnsafeBufferPointer { JSONScanner.scanObject($0, nested: "data") } == nil,
                    "\(refused)")
        }
    }
}
