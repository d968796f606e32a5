import PropertyBased
import TelexAuth
import TelexProtocol
import Testing

@Suite("Pattern coverage", .timeLimit(.minutes(1)))
struct CoverageTests {
    @Test(arguments: [
        ("news.>", "news.*", true), ("news.*", "news.>", false), ("*.*", "*.sport", true), (">", "news.>", true),
        (">", "a", true), ("news.>", "news", false), ("news.*", "news.world", true), ("news.world", "news.*", false),
        ("news.*.>", "news.>", false), ("news.>", "news.*.>", true), ("news.*", "news.*", true),
        ("news.*.breaking", "news.sport.breaking", true), ("news.sport.>", "news.>", false), ("*", ">", false),
        ("news", "news", true), ("news", "news.world", false), ("a.b", "a.*", false),
    ])
    func examples(permission: String, pattern: String, covered: Bool) {
        #expect(PatternCoverage.covers(permission: permission, pattern: pattern) == covered)
    }

    /// Patterns over tokens `a`, `b`, `*` and a last `>`. Topics over `a`, `b` and `c` (a token no pattern names,
    /// standing for every other token), one token longer than any pattern: enough to witness any non-coverage.
    static let pattern = Generator<String, _> { rng in
        let length = Int.random(in: 1...4, using: &rng)
        return (0..<length).map { index in
            let choices = index == length - 1 ? ["a", "b", "*", ">"] : ["a", "b", "*"]
            return choices.randomElement(using: &rng)!
        }.joined(separator: ".")
    }

    static let topics: [String] = {
        var all: [[String]] = [[]]
        var result: [String] = []
        for _ in 1...5 {
            all = all.flatMap { prefix in ["a", "b", "c"].map { prefix + [$0] } }
            result += all.map { $0.joined(separator: ".") }
        }
        return result
    }()

    @Test func coverageAgreesWithABruteForceMatcher() async {
        await propertyCheck(count: 1000, input: Self.pattern, Self.pattern) { permission, pattern in
            let bruteForce = Self.topics.allSatisfy { topic in
                !TopicName.matches(pattern: pattern, topic: topic) || TopicName.matches(pattern: permission, topic: topic)
            }
            #expect(
                PatternCoverage.covers(permission: permission, pattern: pattern) == bruteForce,
                "permission \(permission), pattern \(pattern)")
        }
    }

    @Test func permissionsCheckEveryKindOfRight() {
        let desk = Permissions(publish: ["news.sport.>"], subscribe: ["news.>", "wire.*"], consumers: ["push-*", "audit"])
        #expect(desk.mayPublish(to: "news.sport.football"))
        #expect(!desk.mayPublish(to: "news.politics"))
        #expect(desk.maySubscribe(to: "news.*.breaking"))
        #expect(desk.maySubscribe(to: "wire.ap"))
        #expect(!desk.maySubscribe(to: "wire.>"))
        #expect(!desk.maySubscribe(to: ">"))
        #expect(desk.mayUse(consumer: "push-alerts"))
        #expect(desk.mayUse(consumer: "audit"))
        #expect(!desk.mayUse(consumer: "audit-2"))
        #expect(!desk.mayUse(consumer: "pull"))
        #expect(Permissions.all.mayUse(consumer: "anything"))
        #expect(!Permissions.none.mayPublish(to: "news"))
    }
}
