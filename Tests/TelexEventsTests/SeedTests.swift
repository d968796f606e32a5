import Foundation
import TelexEvents
import Testing

/// The repository's `seeds/` directory (the tests read the committed files, not ../shared).
let seedsDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("seeds")

/// The lines of seeds/articles.jsonl with their line numbers.
func seedLines() throws -> [(number: Int, text: String)] {
    let text = try String(contentsOf: seedsDirectory.appendingPathComponent("articles.jsonl"), encoding: .utf8)
    return text.split(separator: "\n").enumerated().map { ($0.offset + 1, String($0.element)) }
}

/// The IPTC ninjs example articles copied into seeds/ninjs.
func ninjsExamples() throws -> [URL] {
    try FileManager.default.contentsOfDirectory(at: seedsDirectory.appendingPathComponent("ninjs"), includingPropertiesForKeys: nil)
        .filter { $0.pathExtension == "json" }
        .sorted { $0.lastPathComponent < $1.lastPathComponent }
}

/// True when Foundation's other parser (JSONSerialization) reads both texts as the same value: an oracle
/// independent of `JSONValue`.
func sameJSON(_ first: some Collection<UInt8>, _ second: some Collection<UInt8>) throws -> Bool {
    let a = try JSONSerialization.jsonObject(with: Data(first)) as? NSDictionary
    let b = try JSONSerialization.jsonObject(with: Data(second)) as? NSDictionary
    return a != nil && a == b
}

@Suite("Seeds and ninjs examples", .timeLimit(.minutes(1)))
struct SeedTests {
    @Test("every seed line validates and survives record and output line unchanged")
    func seedRoundTrips() throws {
        let lines = try seedLines()
        #expect(lines.count == 11)
        for (number, text) in lines {
            let event = try CloudEvent(jsonText: Array(text.utf8), location: "line \(number)")
            let original = try JSONValue(parsing: Array(text.utf8))
            #expect(JSONValue.object(event.json) == original, "line \(number)")
            #expect(event.uri == original["data"]?["uri"]?.stringValue)
            #expect(event.topic == original["topic"]?.stringValue)

            let record = event.record()
            var withoutTopic = event.json
            withoutTopic["topic"] = nil
            #expect(try JSONValue(parsing: record.value.readableBytesView) == .object(withoutTopic))
            #expect(String(buffer: record.key) == event.uri)

            let line = try CloudEvent.outputLine(value: record.value, topic: event.topic!, offset: Int64(number),
                                                 brokerTime: 1_709_712_000_000)
            let again = try CloudEvent(jsonText: Array(line.utf8), location: "output \(number)")
            #expect(again == event, "line \(number)")
            // Foundation's other parser agrees that the stored value is the seed line, apart from the topic.
            var seedWithoutTopic = original.objectValue!
            seedWithoutTopic["topic"] = nil
            #expect(try sameJSON(record.value.readableBytesView, JSONValue.object(seedWithoutTopic).serialized()))
        }
    }

    @Test("seed events carry their article's uri as subject and a time the record uses")
    func seedTimes() throws {
        for (number, text) in try seedLines() {
            let event = try CloudEvent(jsonText: Array(text.utf8), location: "line \(number)")
            #expect(event.subject == event.uri)
            let time = try #require(event.time.flatMap(CloudEvent.parseTime))
            #expect(event.record().timestamp == Int64(time.timeIntervalSince1970 * 1000))
        }
    }

    @Test("the seeds delete two articles that they created earlier, on the same topic")
    func seedDeletions() throws {
        let events = try seedLines().map { try CloudEvent(jsonText: Array($0.text.utf8), location: "line \($0.number)") }
        let deletions = events.enumerated().filter { $0.element.isDeletion }
        #expect(deletions.map { $0.element.uri } == [
            "http://ninjs.example.com/newsitems/20130709simp123", "http://www.businesswire.com/news/home/20130731006140/en",
        ])
        for (index, deletion) in deletions {
            #expect(deletion.json["data"]?["pubStatus"] == "canceled")
            #expect(deletion.json["data"]?["headlines"] == nil)
            #expect(events[..<index].contains { $0.uri == deletion.uri && $0.topic == deletion.topic && !$0.isDeletion })
        }
    }

    @Test("every ninjs example becomes an article event whose data is the example, value for value")
    func ninjsRoundTrips() throws {
        let files = try ninjsExamples()
        #expect(files.count == 6)
        for file in files {
            let bytes = try Data(contentsOf: file)
            let article = try #require(try JSONValue(parsing: bytes).objectValue, "\(file.lastPathComponent)")
            for type in ["article.created", "article.updated"] {
                let event = try CloudEvent(type: type, article: article, source: "urn:telex:test", id: "x",
                                           time: Date(timeIntervalSince1970: 1_709_712_000), topic: "news.world")
                #expect(event.uri == article["uri"]?.stringValue)
                let stored = try JSONValue(parsing: event.record().value.readableBytesView)
                #expect(stored["data"] == .object(article), "\(file.lastPathComponent)")
                #expect(try sameJSON(bytes, stored["data"]!.serialized()), "\(file.lastPathComponent)")
            }
        }
    }
}
