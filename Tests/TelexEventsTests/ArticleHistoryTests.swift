import Foundation
import TelexEvents
import Testing

/// The seed events of `uri` as versions on their own topics, one broker second apart from 2024-03-06T08:00:00Z,
/// offsets counting from 10.
func seedVersions(of uri: String) throws -> [ArticleVersion] {
    let events = try seedLines().map { try JSONValue(parsing: Array($0.text.utf8)).objectValue! }
        .filter { $0["data"]?["uri"]?.stringValue == uri }
    return events.enumerated().map { index, event in
        var stored = event
        stored["topic"] = nil  // as CloudEvent.record() stores it
        return ArticleVersion(topic: event["topic"]!.stringValue!, offset: Int64(10 + index),
                              brokerTime: 1_709_712_000_000 + Int64(index) * 1000, event: stored)
    }
}

let simpleURI = "http://ninjs.example.com/newsitems/20130709simp123"
let complexURI = "http://ninjs.example.com/newsitems/20130709med123"
let harbinURI = "urn:telex:article:harbin-npc-new-quality-productive-forces"

@Suite("Article history output", .timeLimit(.minutes(1)))
struct ArticleHistoryTests {
    @Test("the readable list: time, topic, offset, type and headline per version, (deleted) for a deletion")
    func list() throws {
        let lines = ArticleHistory.listLines(try seedVersions(of: simpleURI))
        #expect(lines == [
            "2024-03-06T08:00:00.000Z  news.europe.italy  10  article.created  Captain of wrecked cruise ship on trial in Italy",
            "2024-03-06T08:00:01.000Z  news.europe.italy  11  article.created  Captain of wrecked cruise ship on trial in Italy",
            "2024-03-06T08:00:02.000Z  news.europe.italy  12  article.deleted  (deleted)",
        ])
    }

    @Test("list columns line up across topics and offsets; headlines stay on one line; 2.x headline read")
    func listAlignment() {
        let versions = [
            ArticleVersion(topic: "news.world", offset: 7, brokerTime: 0, event: [
                "type": "article.created", "data": ["uri": "u", "headlines": [["value": "Two\nlines"]]],
            ]),
            ArticleVersion(topic: "news.europe.italy", offset: 1234, brokerTime: 1, event: [
                "type": "article.updated", "data": ["uri": "u", "headline": "Old style"],
            ]),
            ArticleVersion(topic: "news.world", offset: 8, brokerTime: 2, event: ["data": ["uri": "u"]]),
        ]
        #expect(ArticleHistory.listLines(versions) == [
            "1970-01-01T00:00:00.000Z  news.world            7  article.created  Two lines",
            "1970-01-01T00:00:00.001Z  news.europe.italy  1234  article.updated  Old style",
            "1970-01-01T00:00:00.002Z  news.world            8  -                (no headline)",
        ])
    }

    @Test("--json lines are telex-sub's output lines for the same records")
    func jsonLines() throws {
        let versions = try seedVersions(of: harbinURI)
        let lines = ArticleHistory.jsonLines(versions)
        #expect(lines.count == 2)
        for (line, version) in zip(lines, versions) {
            let record = try CloudEvent(json: version.event).record()
            #expect(line == (try CloudEvent.outputLine(value: record.value, topic: version.topic, offset: version.offset,
                                                       brokerTime: version.brokerTime)))
            let parsed = try JSONValue(parsing: Array(line.utf8))
            #expect(parsed["offset"] == .integer(version.offset))
            #expect(parsed["topic"] == .string(version.topic))
        }
    }

    @Test("--at: the newest version stored at or before the time; none before the first")
    func at() throws {
        let versions = try seedVersions(of: simpleURI)
        let first = versions[0].brokerTime
        #expect(ArticleHistory.version(at: first - 1, in: versions) == nil)
        #expect(ArticleHistory.version(at: first, in: versions)?.offset == 10)
        #expect(ArticleHistory.version(at: first + 999, in: versions)?.offset == 10)
        #expect(ArticleHistory.version(at: first + 1000, in: versions)?.offset == 11)
        #expect(ArticleHistory.version(at: first + 5000, in: versions)?.isDeletion == true)
        #expect(ArticleHistory.version(at: first, in: []) == nil)
    }

    @Test("field flattening: text arrays per entry, by and bylines as byline, other names in lower case")
    func fields() {
        let article: [String: JSONValue] = [
            "uri": "u", "versionCreated": "2024-03-06T08:00:00Z", "edNote": "n", "language": "en",
            "headlines": [["role": "main", "value": "H"], ["role": "short", "value": "S"]],
            "bodies": [["role": "main", "contentType": "text/plain", "value": "B", "charcount": 1, "wordcount": 1]],
            "by": "Reporter", "subjects": [["name": "Politics"]],
        ]
        #expect(ArticleHistory.fields(of: article) == [
            "uri": "u", "versioncreated": "2024-03-06T08:00:00Z", "ednote": "n", "language": "en",
            "headline": "H", "headline.role": "main", "headline[1]": "S", "headline[1].role": "short",
            "body": "B", "body.role": "main", "body.contenttype": "text/plain",
            "byline": "Reporter", "subjects": [["name": "Politics"]],
        ])
        #expect(ArticleHistory.fields(of: ["bylines": [["byline": "A"], ["byline": "B"]]]) == ["byline": "A, B"])
        #expect(ArticleHistory.fields(of: ["headline": "old", "headlines": [["value": "new"]]])["headline"] == "new")
    }

    @Test("--diff on the IPTC 3.0 and 3.1 versions of one story, then its deletion")
    func diffSimpleStory() throws {
        let changes = ArticleHistory.changes(try seedVersions(of: simpleURI))
        #expect(changes.count == 2)
        #expect(changes[0].changed.map(\.field) == ["body", "body.role", "body[1]", "body[1].contenttype", "body[1].role"])
        #expect(changes[0].changed[1] == FieldChange(field: "body.role", before: "text", after: "main"))
        // The deletion keeps only the uri and adds its own fields.
        #expect(changes[1].changed.map(\.field) == [
            "body", "body.contenttype", "body.role", "body[1]", "body[1].contenttype", "body[1].role", "byline",
            "ednote", "headline", "headline.role", "pubstatus", "type", "versioncreated",
        ])
        #expect(changes[1].changed.first { $0.field == "pubstatus" } == FieldChange(field: "pubstatus", before: nil, after: "canceled"))

        let lines = ArticleHistory.diffLines(changes)
        #expect(lines[0] == "news.europe.italy@10 → news.europe.italy@11  2024-03-06T08:00:01.000Z  article.created")
        // The long body is cut to the correction of "4,2000" with some context on each side.
        let body = try #require(lines.first { $0.hasPrefix("  body: ") })
        #expect(body == "  body: …from among the 4,2000 passengers and crew… → …from among the 4,200 passengers and crew…")
        #expect(lines.contains(#"  body.role: "text" → "main""#))
        #expect(lines.contains(#"  pubstatus: (absent) → "canceled""#))
        #expect(lines.contains(#"  headline: "Captain of wrecked cruise ship on trial in Italy" → (absent)"#))
    }

    @Test("--diff on the Grosseto correction and the Harbin headline amendment, readable and JSON")
    func diffCorrections() throws {
        let grosseto = ArticleHistory.changes(try seedVersions(of: complexURI))
        #expect(grosseto.map { $0.changed.map(\.field) } == [["ednote", "located", "places", "version", "versioncreated"]])
        #expect(ArticleHistory.diffLines(grosseto).contains(#"  located: "Grossetto, Italy" → "Grosseto, Italy""#))

        let harbin = ArticleHistory.changes(try seedVersions(of: harbinURI))
        #expect(harbin.map { $0.changed.map(\.field) } == [["ednote", "headline", "version", "versioncreated"]])
        let json = ArticleHistory.diffJSONLines(harbin)
        #expect(json.count == 1)
        let line = try JSONValue(parsing: Array(json[0].utf8))
        #expect(line["from"] == 10)
        #expect(line["to"] == 11)
        #expect(line["changed"]?["headline"] == [
            "before": "New quality productive forces become hot topic among Harbin NPC deputies",
            "after": "New quality productive forces become hot topic among Harbin NPC deputies in Beijing",
        ])
        #expect(line["changed"]?["version"] == ["before": "1", "after": "2"])
        // A field absent on one side has no member for that side.
        #expect(line["changed"]?["ednote"] == ["after": "Updated with the location of the NPC session (Beijing) in the headline."])
    }

    @Test("long values: cut after 80 characters when one side is absent or all of it changed; short ones whole")
    func diffShortening() {
        func version(_ offset: Int64, _ data: [String: JSONValue]) -> ArticleVersion {
            var article = data
            article["uri"] = "u"
            return ArticleVersion(topic: "t", offset: offset, brokerTime: offset, event: ["type": "x", "data": .object(article)])
        }
        let long = String(repeating: "a", count: 100)
        let other = String(repeating: "b", count: 100)
        let lines = ArticleHistory.diffLines(ArticleHistory.changes([
            version(0, ["edNote": .string(long)]), version(1, ["edNote": .string(other), "slugline": "short"]),
            version(2, [:]),
        ]))
        // Where all of it changed, the 80 characters are the changed part, between the quotes; one side alone is
        // cut at 80 characters, its opening quote included.
        #expect(lines == [
            "t@0 → t@1  1970-01-01T00:00:00.001Z  x",
            "  ednote: \"\(long.prefix(80))…\" → \"\(other.prefix(80))…\"",
            #"  slugline: (absent) → "short""#,
            "t@1 → t@2  1970-01-01T00:00:00.002Z  x",
            "  ednote: \"\(other.prefix(79))… → (absent)",
            #"  slugline: "short" → (absent)"#,
        ])
    }

    @Test("a pair with no ninjs change says so; one version gives no pairs")
    func diffNothing() {
        let version = ArticleVersion(topic: "t", offset: 0, brokerTime: 0, event: ["type": "x", "data": ["uri": "u"]])
        var moved = version
        (moved.topic, moved.offset, moved.brokerTime) = ("u", 3, 1)
        #expect(ArticleHistory.changes([version]).isEmpty)
        #expect(ArticleHistory.diffLines(ArticleHistory.changes([version, moved]))
            == ["t@0 → u@3  1970-01-01T00:00:00.001Z  x", "  (no ninjs field changed)"])
        #expect(ArticleHistory.diffJSONLines(ArticleHistory.changes([version, moved])) == [#"{"changed":{},"from":0,"fromTopic":"t","to":3,"toTopic":"u"}"#])
    }
}
