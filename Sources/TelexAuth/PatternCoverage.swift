import TelexProtocol

/// Whether one subscription pattern is covered by a permission pattern (Protocol/PROTOCOL.md §10.1).
public enum PatternCoverage {
    /// True iff every topic `pattern` can match is also matched by `permission`. Both must be valid patterns
    /// (`TopicName.validatePattern`); a plain topic name is a pattern that matches only itself.
    ///
    /// Decided token by token, without enumerating topics: `>` in the permission covers any non-empty rest; a `*`
    /// in the pattern is covered only by `*`; a literal by the same literal or `*`; a `>` in the pattern only by `>`.
    public static func covers(permission: String, pattern: String) -> Bool {
        let granted = permission.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        let asked = pattern.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        for index in granted.indices {
            let grant = granted[index]
            if grant.elementsEqual(">".utf8) { return index < asked.count }
            guard index < asked.count else { return false }
            let token = asked[index]
            if token.elementsEqual(">".utf8) { return false }
            if grant.elementsEqual("*".utf8) { continue }
            if token.elementsEqual("*".utf8) || !token.elementsEqual(grant) { return false }
        }
        return asked.count == granted.count
    }
}
