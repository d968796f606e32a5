import NIOCore
import TelexEvents
import TelexProtocol
import Testing

@testable import TelexConsole

@Suite("Console article rendering: ninjs 1.x to 3.x fields")
struct DataRenderingTests {
    private func version(_ data: [String: JSONValue], envelope extra: [String: JSONValue] = [:]) -> ArticleVersionJSON {
        var envelope: [String: JSONValue] = [
            "specversion": "1.0", "id": "e", "type": "article.updated", "data": .object(data),
        ]
        envelope.merge(extra) { $1 }
        let record = Record(timestamp: 0, key: ByteBuffer(string: "urn:x"),
                            value: ByteBuffer(bytes: JSONValue.object(envelope).serialized()))
        return ArticleRendering.version(StoredRecord(topic: "news.stored", offset: 7, brokerTime: 99, record: record,
                                                     problem: nil))
    }

    @Test("ninjs 3.x: the plain-text body, by, versionCreated; the section from the first subject")
    func ninjs3() {
        let rendered = version([
            "uri": "urn:x", "by": "Desk", "versionCreated": "2024-01-01T00:00:00Z",
            "headlines": [["role": "main", "value": "H"]],
            "bodies": [
                ["contentType": "text/html", "value": "<p>html</p>"], ["contentType": "text/plain", "value": "plain"],
            ],
            "subjects": [["name": "Politics"], ["name": "Europe"]],
        ])
        #expect(rendered.headline == "H" && rendered.byline == "Desk" && rendered.bodyText == "plain")
        #expect(rendered.section == "Politics" && rendered.versionCreated == "2024-01-01T00:00:00Z")
        #expect(rendered.type == "article.updated" && rendered.topic == "news.stored" && rendered.offset == 7)
        #expect(rendered.fields["body"] == "\"<p>html</p>\"" && rendered.fields["body[1]"] == "\"plain\"")
    }

    @Test("an HTML-only body is given as sent; ninjs 1.x body_text, 2.x bylines and versioncreated; genre sections")
    func olderShapes() {
        let html = version(["uri": "urn:x", "bodies": [["contentType": "text/html", "value": "<b>x</b>"]]])
        #expect(html.bodyText == "<b>x</b>" && html.section == "news.stored" && html.byline == nil)
        let old = version([
            "uri": "urn:x", "headline": "Old", "body_text": "text", "versioncreated": "2013-07-09T10:37:00Z",
            "bylines": [["byline": "A"], ["byline": "B"]], "genres": [["name": "Feature"]],
        ])
        #expect(old.headline == "Old" && old.bodyText == "text" && old.byline == "A, B")
        #expect(old.versionCreated == "2013-07-09T10:37:00Z" && old.section == "Feature")
        #expect(version(["uri": "urn:x", "byline": "Plain"]).byline == "Plain")
        // The publisher's CloudEvents topic attribute names the section when the stored event kept it.
        #expect(version(["uri": "urn:x"], envelope: ["topic": "news.named"]).section == "news.named")
    }

    @Test("an undecodable value still gives a version: no fields, the event a note naming the offset")
    func undecodable() {
        let record = Record(timestamp: 0, key: ByteBuffer(string: "urn:x"), value: ByteBuffer(string: "[1,"))
        let rendered = ArticleRendering.version(StoredRecord(topic: "news.bad", offset: 3, brokerTime: 5,
                                                             record: record, problem: nil))
        #expect(rendered.type == "" && rendered.fields.isEmpty && rendered.headline == nil)
        #expect(rendered.event.stringValue?.contains("news.bad@3") == true)
        let lost = StoredRecord(topic: "news.bad", offset: 4, brokerTime: 0, record: nil, problem: "CRC mismatch")
        #expect(lost.eventJSON.event.stringValue?.contains("news.bad@4") == true)
        #expect(lost.eventJSON.event.stringValue?.contains("CRC mismatch") == true)
    }
}
