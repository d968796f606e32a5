import TelexEvents

/// The readable fields of a stored article version, as the article page shows them.
enum ArticleRendering {
    /// The version `stored` holds; an undecodable value still shows (type "", no fields, the event a note), as does
    /// one too large to show (its type from the `ce-type` header).
    static func version(_ stored: StoredRecord) -> ArticleVersionJSON {
        guard case .success(let envelope) = stored.envelope else {
            let note = stored.eventJSON
            return ArticleVersionJSON(
                topic: stored.topic, offset: stored.offset, brokerTime: stored.brokerTime, type: note.type,
                headline: nil, byline: nil, bodyText: nil, section: nil, versionCreated: nil, fields: [:],
                event: note.event)
        }
        let version = ArticleVersion(topic: stored.topic, offset: stored.offset, brokerTime: stored.brokerTime,
                                     event: envelope)
        let article = version.article
        let fields = ArticleHistory.fields(of: article)
        return ArticleVersionJSON(
            topic: stored.topic, offset: stored.offset, brokerTime: stored.brokerTime,
            type: version.type.isEmpty ? stored.record?.header("ce-type") ?? "" : version.type,
            headline: version.headline,
            byline: article["byline"]?.stringValue ?? fields["byline"]?.stringValue,
            bodyText: bodyText(of: article),
            section: section(of: envelope, article: article, storedIn: stored.topic),
            versionCreated: article["versionCreated"]?.stringValue ?? article["versioncreated"]?.stringValue,
            fields: fields.mapValues(\.jsonText), event: .object(envelope))
    }

    /// ninjs 3.x `bodies`: the first plain-text body, else the first body as given (HTML too: the page shows it as
    /// text); else ninjs 1.x/2.x `body_text`, then `body_html`.
    static func bodyText(of article: [String: JSONValue]) -> String? {
        let bodies = article["bodies"]?.arrayValue ?? []
        let plain = bodies.first { body in
            let type = (body["contentType"] ?? body["contenttype"])?.stringValue?.lowercased()
            return type == nil || type == "text/plain"
        }
        for body in [plain, bodies.first].compactMap({ $0 }) {
            if let text = body["value"]?.stringValue { return text }
        }
        return article["body_text"]?.stringValue ?? article["body_html"]?.stringValue
    }

    /// The CloudEvents `topic` the publisher named, else the first subject's (then genre's) name, else the topic the
    /// version is stored in.
    static func section(
        of envelope: [String: JSONValue], article: [String: JSONValue], storedIn topic: String
    ) -> String {
        if let named = envelope["topic"]?.stringValue, !named.isEmpty { return named }
        for list in ["subjects", "genres"] {
            if let name = article[list]?[0]?["name"]?.stringValue, !name.isEmpty { return name }
        }
        return topic
    }
}
