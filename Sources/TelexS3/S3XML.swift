/// The few S3 XML documents the client reads, parsed by a small scanner (no FoundationXML): element text is
/// found by tag name and entity-decoded. S3's documents are flat enough that this is exact for them.
enum S3XML {
    /// One `<Contents>` entry of a ListObjectsV2 answer.
    struct ListedObject: Equatable {
        var key: String
        var size: Int
        var etag: String?
    }

    /// A ListObjectsV2 page.
    struct ListPage: Equatable {
        var objects: [ListedObject]
        var isTruncated: Bool
        var nextContinuationToken: String?
    }

    struct ParseError: Error, Equatable {
        var message: String
    }

    /// Parses a `<ListBucketResult>`.
    static func parseListPage(_ xml: String) throws(ParseError) -> ListPage {
        guard xml.contains("<ListBucketResult") else {
            throw ParseError(message: "not a ListBucketResult: \(xml.prefix(120))")
        }
        var objects: [ListedObject] = []
        for contents in elements("Contents", in: xml) {
            guard let key = text("Key", in: contents) else {
                throw ParseError(message: "a <Contents> entry without <Key>")
            }
            guard let sizeText = text("Size", in: contents), let size = Int(sizeText), size >= 0 else {
                throw ParseError(message: "<Contents> of key '\(key)' without a valid <Size>")
            }
            objects.append(ListedObject(key: key, size: size, etag: text("ETag", in: contents).map(unquoteETag)))
        }
        // IsTruncated and the token are top-level; Contents never hold them.
        let truncated = text("IsTruncated", in: xml)
        guard truncated == nil || truncated == "true" || truncated == "false" else {
            throw ParseError(message: "<IsTruncated> is '\(truncated!)', expected true or false")
        }
        let token = text("NextContinuationToken", in: xml)
        if truncated == "true" && (token ?? "").isEmpty {
            throw ParseError(message: "a truncated listing without <NextContinuationToken>")
        }
        return ListPage(objects: objects, isTruncated: truncated == "true", nextContinuationToken: token)
    }

    /// The `<Code>` and `<Message>` of an `<Error>` body, or nil when the body is not one.
    static func parseError(_ xml: String) -> (code: String, message: String?)? {
        guard let error = elements("Error", in: xml).first, let code = text("Code", in: error) else { return nil }
        return (code, text("Message", in: error))
    }

    /// An ETag without its surrounding quotes.
    static func unquoteETag(_ etag: String) -> String {
        var value = Substring(etag)
        if value.hasPrefix("\"") { value = value.dropFirst() }
        if value.hasSuffix("\"") { value = value.dropLast() }
        return String(value)
    }

    /// The raw inner text of every `<name>...</name>` (attributes allowed, self-closing gives "").
    static func elements(_ name: String, in xml: String) -> [Substring] {
        var found: [Substring] = []
        var rest = xml[...]
        while let open = rest.range(of: "<\(name)") {
            let afterName = open.upperBound
            guard afterName < rest.endIndex else { break }
            let next = rest[afterName]
            guard next == ">" || next == " " || next == "/" || next == "\t" || next == "\n" || next == "\r" else {
                rest = rest[afterName...]  // a longer tag name sharing the prefix
                continue
            }
            guard let tagEnd = rest[afterName...].firstIndex(of: ">") else { break }
            if rest[rest.index(before: tagEnd)] == "/" {
                found.append(rest[tagEnd..<tagEnd])
                rest = rest[rest.index(after: tagEnd)...]
                continue
            }
            let contentStart = rest.index(after: tagEnd)
            guard let close = rest[contentStart...].range(of: "</\(name)>") else { break }
            found.append(rest[contentStart..<close.lowerBound])
            rest = rest[close.upperBound...]
        }
        return found
    }

    /// The decoded text of the first `<name>` element, or nil when there is none.
    static func text(_ name: String, in xml: Substring) -> String? {
        elements(name, in: String(xml)).first.map { decodeEntities($0) }
    }

    static func text(_ name: String, in xml: String) -> String? { text(name, in: xml[...]) }

    /// Decodes the five predefined entities and numeric character references; anything else is kept as is.
    static func decodeEntities(_ text: Substring) -> String {
        guard text.contains("&") else { return String(text) }
        var out = ""
        var rest = text
        while let amp = rest.firstIndex(of: "&") {
            out += rest[..<amp]
            guard let semicolon = rest[amp...].prefix(12).firstIndex(of: ";") else {
                out += "&"
                rest = rest[rest.index(after: amp)...]
                continue
            }
            let entity = rest[rest.index(after: amp)..<semicolon]
            var decoded: String?
            switch entity {
            case "amp": decoded = "&"
            case "lt": decoded = "<"
            case "gt": decoded = ">"
            case "quot": decoded = "\""
            case "apos": decoded = "'"
            default:
                if entity.hasPrefix("#x") || entity.hasPrefix("#X") {
                    decoded = UInt32(entity.dropFirst(2), radix: 16).flatMap(Unicode.Scalar.init).map { String($0) }
                } else if entity.hasPrefix("#") {
                    decoded = UInt32(entity.dropFirst(), radix: 10).flatMap(Unicode.Scalar.init).map { String($0) }
                }
            }
            if let decoded {
                out += decoded
                rest = rest[rest.index(after: semicolon)...]
            } else {
                out += "&"
                rest = rest[rest.index(after: amp)...]
            }
        }
        out += rest
        return out
    }
}
