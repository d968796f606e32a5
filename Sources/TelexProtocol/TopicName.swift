/// Topic names and subscription patterns: dot-separated tokens of `[A-Za-z0-9_-]`.
public enum TopicName {
    /// Longest topic or pattern, in bytes.
    public static let maxLength = 249
    /// Longest single token, in bytes.
    public static let maxTokenLength = 64

    /// Checks a concrete topic name (no wildcards).
    public static func validate(_ topic: String) throws(TelexError) {
        try check(topic, allowWildcards: false)
    }

    /// Checks a subscription pattern: a topic, where a token may be `*` (one token) or the last token `>` (the rest).
    public static func validatePattern(_ pattern: String) throws(TelexError) {
        try check(pattern, allowWildcards: true)
    }

    /// Whether `topic` matches `pattern`.
    public static func matches(pattern: String, topic: String) -> Bool {
        let patternTokens = pattern.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        let topicTokens = topic.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        for (index, token) in patternTokens.enumerated() {
            if token.elementsEqual(">".utf8) { return topicTokens.count > index }
            guard index < topicTokens.count else { return false }
            if token.elementsEqual("*".utf8) { continue }
            if !token.elementsEqual(topicTokens[index]) { return false }
        }
        return patternTokens.count == topicTokens.count
    }

    /// Whether `pattern` has wildcards.
    public static func isPattern(_ pattern: String) -> Bool {
        pattern.split(separator: ".").contains { $0 == "*" || $0 == ">" }
    }

    private static func check(_ name: String, allowWildcards: Bool) throws(TelexError) {
        let what = allowWildcards ? "pattern" : "topic"
        guard !name.isEmpty else { throw TelexError(.invalidTopic, "\(what) is empty") }
        guard name.utf8.count <= maxLength else {
            throw TelexError(.invalidTopic, "\(what) '\(name.prefix(40))…' is \(name.utf8.count) bytes; the maximum is \(maxLength)")
        }
        let tokens = name.split(separator: ".", omittingEmptySubsequences: false)
        for (index, token) in tokens.enumerated() {
            guard !token.isEmpty else {
                throw TelexError(.invalidTopic, "\(what) '\(name)' has an empty token at position \(index + 1) (no leading, trailing or double dots)")
            }
            guard token.utf8.count <= maxTokenLength else {
                throw TelexError(.invalidTopic, "\(what) '\(name)': token '\(token.prefix(20))…' is longer than \(maxTokenLength) bytes")
            }
            if allowWildcards, token == "*" { continue }
            if allowWildcards, token == ">" {
                guard index == tokens.count - 1 else {
                    throw TelexError(.invalidTopic, "pattern '\(name)': '>' may only be the last token")
                }
                continue
            }
            for scalar in token.unicodeScalars {
                let ok = (scalar >= "a" && scalar <= "z") || (scalar >= "A" && scalar <= "Z")
                    || (scalar >= "0" && scalar <= "9") || scalar == "_" || scalar == "-"
                guard ok else {
                    let hint = (scalar == "*" || scalar == ">") && !allowWildcards
                        ? " (wildcards are for subscriptions; publish to a concrete topic)" : ""
                    throw TelexError(.invalidTopic,
                        "\(what) '\(name)': character '\(scalar)' in token '\(token)' is not allowed (use A-Z a-z 0-9 _ -)\(hint)")
                }
            }
        }
    }
}
