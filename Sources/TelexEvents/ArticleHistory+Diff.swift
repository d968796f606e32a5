import Foundation

/// One ninjs field that differs between two versions; nil on a side where the field is absent.
public struct FieldChange: Sendable, Equatable {
    /// The flattened field name (see `ArticleHistory.fields(of:)`).
    public var field: String
    public var before: JSONValue?
    public var after: JSONValue?

    public init(field: String, before: JSONValue?, after: JSONValue?) {
        self.field = field
        self.before = before
        self.after = after
    }
}

/// The changes from one version of an article to the next, fields in name order.
public struct VersionChange: Sendable, Equatable {
    public var from: ArticleVersion
    public var to: ArticleVersion
    public var changed: [FieldChange]
}

extension ArticleHistory {
    /// ninjs arrays of text entries, and the field name each entry gets.
    static let textArrays = ["headlines": "headline", "bodies": "body", "descriptions": "description"]
    /// Members of a text entry that follow from its text (they change whenever it does).
    static let derivedMembers: Set<String> = ["value", "charcount", "wordcount"]

    /// The ninjs fields of an article as `--diff` compares them. Names are lower case (ninjs 2.x wrote
    /// `versioncreated`, 3.x `versionCreated`). `headlines`, `bodies` and `descriptions` become one field per entry:
    /// `headline`, `body`, `description` for the first entry's `value`, `headline[1]`... for later ones, and
    /// `headline.role`, `body.contenttype`... for the entry's other members (its `charcount` and `wordcount` follow
    /// from the text and are left out). `by` (3.x) or the joined `bylines[].byline` (2.x) is `byline`. Every other
    /// member (`subjects`, `places`, `language`, `version`, `edNote`...) is one field holding its whole value.
    public static func fields(of article: [String: JSONValue]) -> [String: JSONValue] {
        var fields: [String: JSONValue] = [:]
        for (key, name) in textArrays {
            for (index, entry) in (article[key]?.arrayValue ?? []).enumerated() {
                let base = index == 0 ? name : "\(name)[\(index)]"
                guard let members = entry.objectValue, let text = members["value"] else {
                    fields[base] = entry
                    continue
                }
                fields[base] = text
                for (member, value) in members where !derivedMembers.contains(member.lowercased()) {
                    fields["\(base).\(member.lowercased())"] = value
                }
            }
        }
        if let by = article["by"] {
            fields["byline"] = by
        } else if let bylines = article["bylines"]?.arrayValue {
            let names = bylines.compactMap { $0["byline"]?.stringValue }
            fields["byline"] = names.count == bylines.count ? .string(names.joined(separator: ", ")) : .array(bylines)
        }
        // Sorted so that of two names differing only in case the same one wins every time.
        for key in article.keys.sorted() where textArrays[key] == nil && key != "by" && key != "bylines" {
            let name = key.lowercased()
            if fields[name] == nil { fields[name] = article[key] }
        }
        return fields
    }

    /// The changes between each version and the next (a deletion's data holds little more than the uri, so the
    /// change into one lists the fields it removed).
    public static func changes(_ versions: [ArticleVersion]) -> [VersionChange] {
        zip(versions, versions.dropFirst()).map { from, to in
            let before = fields(of: from.article)
            let after = fields(of: to.article)
            let names = Set(before.keys).union(after.keys).filter { before[$0] != after[$0] }.sorted()
            return VersionChange(from: from, to: to, changed: names.map {
                FieldChange(field: $0, before: before[$0], after: after[$0])
            })
        }
    }

    /// `--diff --json`: one line per pair, `{"from": OFFSET, "to": OFFSET, "changed": {"FIELD": {"before": …,
    /// "after": …}}}`, plus `fromTopic` and `toTopic` (offsets alone are ambiguous once an article moved between
    /// topics); a side where the field is absent has no `before` (or `after`) member.
    public static func diffJSONLines(_ changes: [VersionChange]) -> [String] {
        changes.map { change in
            var changed: [String: JSONValue] = [:]
            for field in change.changed {
                var sides: [String: JSONValue] = [:]
                sides["before"] = field.before
                sides["after"] = field.after
                changed[field.field] = .object(sides)
            }
            let line: JSONValue = [
                "from": .integer(change.from.offset), "to": .integer(change.to.offset), "changed": .object(changed),
                "fromTopic": .string(change.from.topic), "toTopic": .string(change.to.topic),
            ]
            return line.jsonText
        }
    }

    /// `--diff`: per pair a heading `TOPIC@OFFSET → TOPIC@OFFSET  TIME  TYPE`, then one indented line per changed
    /// field, `FIELD: BEFORE → AFTER`. Strings are quoted and other values compact JSON; long values are cut to
    /// the part that changed, with some context, `…` marking what was left out.
    public static func diffLines(_ changes: [VersionChange]) -> [String] {
        var lines: [String] = []
        for change in changes {
            let time = CloudEvent.formatTime(Date(timeIntervalSince1970: Double(change.to.brokerTime) / 1000))
            lines.append("\(change.from.topic)@\(change.from.offset) → \(change.to.topic)@\(change.to.offset)  \(time)  \(change.to.type)")
            if change.changed.isEmpty { lines.append("  (no ninjs field changed)") }
            for field in change.changed {
                let (before, after) = shortened(field.before.map(rendered), field.after.map(rendered))
                lines.append("  \(field.field): \(before ?? "(absent)") → \(after ?? "(absent)")")
            }
        }
        return lines
    }

    /// A value as one line of text: a string quoted (escapes as in JSON), anything else compact JSON.
    static func rendered(_ value: JSONValue) -> String { value.jsonText }

    /// Texts up to `limit` characters stay whole. Longer ones keep only the part where the two differ, with
    /// `context` characters around it, and the differing part itself at most `limit` characters.
    static func shortened(
        _ before: String?, _ after: String?, limit: Int = 80, context: Int = 20
    ) -> (String?, String?) {
        guard let before, let after else {
            return (before.map { cut(Array($0), limit) }, after.map { cut(Array($0), limit) })
        }
        if before.count <= limit, after.count <= limit { return (before, after) }
        let (old, new) = (Array(before), Array(after))
        var prefix = 0
        while prefix < old.count, prefix < new.count, old[prefix] == new[prefix] { prefix += 1 }
        var suffix = 0
        while suffix < old.count - prefix, suffix < new.count - prefix,
            old[old.count - 1 - suffix] == new[new.count - 1 - suffix]
        {
            suffix += 1
        }
        func excerpt(_ text: [Character]) -> String {
            let start = max(0, prefix - context)
            let end = min(text.count, text.count - suffix + context)
            let middle = cut(Array(text[prefix..<(text.count - suffix)]), limit)
            return (start > 0 ? "…" : "") + String(text[start..<prefix]) + middle
                + String(text[(text.count - suffix)..<end]) + (end < text.count ? "…" : "")
        }
        return (excerpt(old), excerpt(new))
    }

    private static func cut(_ text: [Character], _ limit: Int) -> String {
        text.count <= limit ? String(text) : String(text.prefix(limit)) + "…"
    }
}
