import ArgumentParser
import Foundation
import TelexCLI
import TelexClient
import TelexEvents
import TelexProtocol

/// `telex-bench rebuild`: what latest-version replay saves an index rebuild. Publishes articles with several
/// versions each across three topics (some articles move between them, some are deleted at the end), then times a
/// full replay of the pattern against a latest-per-article replay (PROTOCOL.md §8.9).
struct RebuildBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rebuild",
        abstract: "Time an index rebuild: full replay versus --latest, over articles with about 10 versions each.")

    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Articles in the corpus.") var articles = 5_000
    @Option(help: "Average versions per article (each gets between 0.5x and 1.5x this many).") var versions = 10
    @Option(help: "Share of articles deleted (article.deleted) after their last version.") var deleted = 0.05
    @Option(help: "Share of articles whose versions are spread over two topics (an article that moved).") var moved = 0.1
    @Option(help: "Articles being revised at any moment: each article's versions fall among those of the next this many articles (a newsroom corrects a story within hours, not years).") var window = 200
    @Option(help: "Replays of each kind; medians are reported.") var runs = 3
    @Option(help: "Seed articles for the corpus.") var seeds = "seeds/articles.jsonl"
    @Option(help: "The generated corpus: realistic or easy (the one the README's rebuild figures were measured on).")
    var corpusStyle: Corpus.Style = .realistic
    @Option(help: "Write the JSON summary to this file too.") var jsonOut: String?

    func run() async throws {
        var configuration = try connection.configuration(defaultName: "telex-bench")
        configuration.subscriptionCredit = 256
        let plan = RebuildPlan(articles: articles, versions: versions, deleted: deleted, moved: moved, window: window)
        log("corpus: \(articles) articles, \(plan.events.count) events (\(plan.deletedCount) deletions)")
        let corpus = try Corpus(seedsPath: seeds, count: plan.events.count, style: corpusStyle,
                                uri: { "urn:telex:rebuild:article-\(plan.events[$0].article)" },
                                type: { plan.events[$0].deletion ? "article.deleted" : "article.updated" })
        let prefix = "rebuild.\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
        try await TelexClient.withClient(configuration: configuration) { client in
            try await client.connect()
            for topic in 0..<RebuildPlan.topics {
                let records = plan.events.indices.filter { plan.events[$0].topic == topic }.map { corpus.records[$0] }
                _ = try await client.publish(records, to: "\(prefix).desk\(topic)")
            }
        }
        let pattern = "\(prefix).>"
        var full: [(count: Int, seconds: Double)] = []
        var latest: [(count: Int, seconds: Double)] = []
        for run in 1...runs {
            full.append(try await replay(pattern, from: .beginning, configuration: configuration))
            log("run \(run): full replay: \(full.last!.count) events in \(seconds(full.last!.seconds)) s")
            latest.append(try await replay(pattern, from: .latest, configuration: configuration))
            log("run \(run): latest replay: \(latest.last!.count) events in \(seconds(latest.last!.seconds)) s")
        }
        let expectedLatest = articles - plan.deletedCount
        guard full.allSatisfy({ $0.count == plan.events.count }), latest.allSatisfy({ $0.count == expectedLatest }) else {
            throw TelexError(.internalError,
                "replays returned \(full.map(\.count)) and \(latest.map(\.count)) events; expected \(plan.events.count) and \(expectedLatest)")
        }
        let fullSeconds = Stats.median(full.map(\.seconds))
        let latestSeconds = Stats.median(latest.map(\.seconds))
        print("""

            Telex rebuild benchmark: \(articles) articles, \(plan.events.count) events (~\(versions) versions each, \
            \(plan.deletedCount) deleted), 3 topics; medians of \(runs)

            | replay of '\(prefix).>' | events delivered | seconds | events/s |
            |---|---|---|---|
            | full (`--from beginning`) | \(plan.events.count) | \(seconds(fullSeconds)) | \(Int(Double(plan.events.count) / fullSeconds)) |
            | latest (`--latest`) | \(expectedLatest) | \(seconds(latestSeconds)) | \(Int(Double(expectedLatest) / latestSeconds)) |

            """)
        let summary: JSONValue = [
            "articles": .integer(Int64(articles)), "events": .integer(Int64(plan.events.count)),
            "deleted": .integer(Int64(plan.deletedCount)), "runs": .integer(Int64(runs)),
            "fullReplaySeconds": .double(fullSeconds), "latestReplaySeconds": .double(latestSeconds),
            "fullReplayEvents": .integer(Int64(plan.events.count)), "latestReplayEvents": .integer(Int64(expectedLatest)),
            "samples": [
                "fullReplaySeconds": .array(full.map { .double($0.seconds) }),
                "latestReplaySeconds": .array(latest.map { .double($0.seconds) }),
            ],
        ]
        let json = summary.serialized()
        print(String(decoding: json, as: UTF8.self))
        if let jsonOut { try Data(json).write(to: URL(fileURLWithPath: jsonOut)) }
    }

    /// Replays `pattern` up to the subscribe-time end, decoding every event; returns the count and the seconds.
    func replay(
        _ pattern: String, from start: StartPosition, configuration: ClientConfiguration
    ) async throws -> (count: Int, seconds: Double) {
        try await TelexClient.withClient(configuration: configuration) { client in
            try await client.connect()
            let clock = ContinuousClock()
            let started = clock.now
            var count = 0
            try await client.withSubscription(pattern, from: start, untilCaughtUp: true) { subscription in
                for try await _ in subscription { count += 1 }
            }
            return (count, Stats.seconds(clock.now - started))
        }
    }

    func seconds(_ value: Double) -> String { String(format: "%.2f", value) }
    func log(_ message: String) { printError("telex-bench: " + message) }
}

/// Which article, topic and kind each event of the rebuild corpus is: versions of the `window` oldest unfinished
/// articles interleave, each article's versions stay in order, and deletions come after an article's last version. Topics are published
/// one after the other (desk0, desk1, desk2), so within a topic the plan's order is the append order, and an
/// article that moves to a later topic has its newest versions there.
struct RebuildPlan {
    static let topics = 3

    struct Event {
        var article: Int
        var topic: Int
        var deletion: Bool
    }

    let events: [Event]
    let deletedCount: Int

    init(articles: Int, versions: Int, deleted: Double, moved: Double, window: Int) {
        var generator = Corpus.Generator(state: 0xD1B5_4A32_D192_ED03)
        var remaining: [(article: Int, count: Int, left: Int, topic: Int, movesTo: Int?, delete: Bool)] =
            (0..<articles).map { article in
                let count = max(1, versions / 2 + generator.next(max(1, versions + 1)))
                let topic = generator.next(Self.topics)
                // Topics are published in order, so an article moves to a later one: its versions there are newer.
                let moves = topic + 1 < Self.topics && Double(generator.next(1000)) < moved * 1000
                return (article, count, count, topic, moves ? topic + 1 : nil, Double(generator.next(1000)) < deleted * 1000)
            }
        var events: [Event] = []
        var deletedCount = 0
        while !remaining.isEmpty {
            let index = generator.next(min(max(1, window), remaining.count))
            var entry = remaining[index]
            // An article that moves publishes its later half of versions (and its deletion) to the next topic.
            let laterHalf = entry.count - entry.left >= entry.count / 2
            let topic = entry.movesTo.map { laterHalf ? $0 : entry.topic } ?? entry.topic
            events.append(Event(article: entry.article, topic: topic, deletion: false))
            entry.left -= 1
            if entry.left == 0 {
                if entry.delete {
                    events.append(Event(article: entry.article, topic: topic, deletion: true))
                    deletedCount += 1
                }
                remaining.remove(at: index)
            } else {
                remaining[index] = entry
            }
        }
        self.events = events
        self.deletedCount = deletedCount
    }
}

/// Medians and durations for every benchmark.
enum Stats {
    static func seconds(_ duration: Duration) -> Double {
        let (whole, fraction) = duration.components
        return Double(whole) + Double(fraction) / 1e18
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return 0 }
        return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }
}
