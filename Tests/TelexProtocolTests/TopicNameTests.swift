import TelexProtocol
import Testing

@Suite("Topic names and patterns", .timeLimit(.minutes(1)))
struct TopicNameTests {
    @Test(arguments: [
        "news", "news.world", "news.world.asia-pacific", "wire_AP.2024", "a.b.c.d.e.f",
        String(repeating: "x", count: 64), String(repeating: "abcd.", count: 49) + "abcd",
    ])
    func validTopics(_ topic: String) throws {
        try TopicName.validate(topic)
        try TopicName.validatePattern(topic)
        #expect(!TopicName.isPattern(topic))
    }

    @Test func longestTopicIs249Bytes() throws {
        let longest = String(repeating: "abcdefgh.", count: 24) + String(repeating: "z", count: 33)
        #expect(longest.utf8.count == 249)
        try TopicName.validate(longest)
        expectTelexError(.invalidTopic, mentioning: ["is 250 bytes; the maximum is 249"]) {
            try TopicName.validate(longest + "z")
        }
    }

    @Test func longestTokenIs64Bytes() {
        expectTelexError(.invalidTopic, mentioning: ["longer than 64 bytes"]) {
            try TopicName.validate("news." + String(repeating: "t", count: 65))
        }
    }

    @Test(arguments: [
        ("", "topic is empty"),
        (".news", "empty token at position 1"),
        ("news.", "empty token at position 2"),
        ("news..world", "empty token at position 2"),
        ("news world", "character ' ' in token 'news world' is not allowed"),
        ("news/world", "character '/'"),
        ("nachrichten.welt.köln", "character 'ö'"),
        ("news.*", "wildcards are for subscriptions"),
        ("news.>", "wildcards are for subscriptions"),
    ])
    func invalidTopics(_ topic: String, _ complaint: String) {
        expectTelexError(.invalidTopic, mentioning: [complaint]) { try TopicName.validate(topic) }
    }

    @Test(arguments: ["news.*", "news.>", "*.world", ">", "*", "news.*.>", "*.*.breaking"])
    func validPatterns(_ pattern: String) throws {
        try TopicName.validatePattern(pattern)
        #expect(TopicName.isPattern(pattern))
    }

    @Test(arguments: [
        ("news.>.world", "'>' may only be the last token"),
        (">.news", "'>' may only be the last token"),
        ("news.w*", "character '*' in token 'w*'"),
        ("news.>>", "character '>' in token '>>'"),
        ("news..*", "empty token at position 2"),
        ("", "pattern is empty"),
    ])
    func invalidPatterns(_ pattern: String, _ complaint: String) {
        expectTelexError(.invalidTopic, mentioning: [complaint]) { try TopicName.validatePattern(pattern) }
    }

    @Test(arguments: [
        ("news.world", "news.world", true),
        ("news.world", "news.sport", false),
        ("news.world", "news.world.asia", false),
        ("news.world", "news", false),
        ("news.*", "news.world", true),
        ("news.*", "news.sport", true),
        ("news.*", "news", false),
        ("news.*", "news.world.asia", false),
        ("news.*", "sport.world", false),
        ("news.>", "news.world", true),
        ("news.>", "news.world.asia", true),
        ("news.>", "news", false),
        ("news.>", "newsroom.world", false),
        ("*.world", "news.world", true),
        ("*.world", "news.world.asia", false),
        ("news.*.breaking", "news.world.breaking", true),
        ("news.*.breaking", "news.world.analysis", false),
        ("news.*.>", "news.world.asia.japan", true),
        ("news.*.>", "news.world", false),
        (">", "news", true),
        (">", "news.world.asia", true),
        ("*", "news", true),
        ("*", "news.world", false),
    ])
    func wildcardMatching(_ pattern: String, _ topic: String, _ matches: Bool) {
        #expect(TopicName.matches(pattern: pattern, topic: topic) == matches)
    }
}
