import ArgumentParser
import Foundation
import TelexCLI
import TelexClient
import TelexEvents
import TelexProtocol

@main
struct TelexHistory: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "telex-history",
        abstract: "Print every stored version of one article, oldest first.",
        discussion: """
            URI is the article's ninjs uri (its record key). Versions are ordered by the time the broker stored \
            them, then topic name, then offset, across every topic matching --topics (an article can move). Each \
            line: broker time (UTC), topic, offset, event type, headline ("(deleted)" for article.deleted). --json \
            prints each version as telex-sub does: the stored event plus "topic", "offset", "brokertime".

            --at TIME prints the version current at TIME: the newest stored at or before it (exit 1 if none).

            --diff prints, for each version after the first, the ninjs fields of "data" that changed, as \
            "FIELD: BEFORE → AFTER" (long values cut to the part that changed). With --json, one line per pair: \
            {"from":OFFSET,"to":OFFSET,"changed":{"FIELD":{"before":...,"after":...}}}, a side where the field is \
            absent left out. Field names are lower case: headline, body, description (the first entry's value; \
            later entries headline[1]...; the entry's other members headline.role, body.contenttype...), byline \
            (ninjs "by", or 2.x "bylines"), and every other member of "data" compared whole (subjects, places, \
            version, versioncreated, pubstatus, ednote...).

            Examples:
              telex-history urn:telex:article:harbin-npc-new-quality-productive-forces
              telex-history URI --topics 'news.>' --at 2024-03-06T10:00:00Z
              telex-history URI --diff --json | jq .changed
            """)

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The article's ninjs uri (its record key).")
    var uri: String

    @Option(help: "Topic or pattern to look in. Default: every topic ('>').")
    var topics: String = ">"

    @Option(help: "Print the version current at this RFC 3339 time, e.g. 2024-03-06T10:00:00Z.")
    var at: String?

    @Flag(help: "Print which ninjs fields changed between consecutive versions.")
    var diff = false

    @Flag(help: "Print JSON Lines instead of readable text.")
    var json = false

    func validate() throws {
        if uri.isEmpty { throw ValidationError("URI must not be empty") }
        do { try TopicName.validatePattern(topics) } catch { throw ValidationError(error.message) }
        if let at, CloudEvent.parseTime(at) == nil {
            throw ValidationError("--at '\(at)' is not an RFC 3339 time such as 2024-03-06T08:00:00Z")
        }
        if at != nil, diff { throw ValidationError("give --at or --diff, not both") }
    }

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        let configuration = try connection.configuration(defaultName: "telex-history")
        let (uri, topics, json, diff) = (self.uri, self.topics, self.json, self.diff)
        let at = self.at.flatMap(CloudEvent.parseTime)
        let exitCode = try await TelexClient.withClient(configuration: configuration) { client -> Int32 in
            do {
                try await client.connect()
            } catch {
                printError("telex-history: \(describe(error))")
                return connectExitCode(error)
            }
            var versions: [ArticleVersion] = []
            do {
                for delivered in try await client.history(of: uri, topics: topics) {
                    do {
                        versions.append(try ArticleVersion(delivered))
                    } catch {
                        printError("telex-history: skipping \(delivered.topic)@\(delivered.offset): \(describe(error))")
                    }
                }
            } catch {
                printError("telex-history: \(describe(error))")
                return 1
            }
            guard let first = versions.first else {
                printError("telex-history: no stored version of \(uri) in topics matching '\(topics)'")
                return 1
            }
            let lines: [String]
            if let at {
                guard let current = ArticleHistory.version(at: CloudEvent.milliseconds(at), in: versions) else {
                    let firstTime = CloudEvent.formatTime(Date(timeIntervalSince1970: Double(first.brokerTime) / 1000))
                    printError("telex-history: \(uri) has no version at or before \(CloudEvent.formatTime(at)) (the first was stored at \(firstTime))")
                    return 1
                }
                lines = json ? ArticleHistory.jsonLines([current]) : ArticleHistory.listLines([current])
            } else if diff {
                let changes = ArticleHistory.changes(versions)
                if changes.isEmpty { printError("telex-history: \(uri) has one version: nothing to compare") }
                lines = json ? ArticleHistory.diffJSONLines(changes) : ArticleHistory.diffLines(changes)
            } else {
                lines = json ? ArticleHistory.jsonLines(versions) : ArticleHistory.listLines(versions)
            }
            for line in lines { print(line) }
            return 0
        }
        if exitCode != 0 { throw ExitCode(exitCode) }
    }
}
