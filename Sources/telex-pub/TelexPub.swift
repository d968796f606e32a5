import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import TelexCLI
import TelexClient
import TelexEvents
import TelexProtocol

@main
struct TelexPub: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "telex-pub",
        abstract: "Publish article events (CloudEvents JSON Lines) to a Telex broker.",
        discussion: """
            Reads one CloudEvent per line from the files given (or standard input) and publishes each to --topic
            or, without it, to the event's own "topic" attribute. Prints one JSON line per stored event:
            {"line":N,"id":...,"topic":...,"offset":...}. A bad line stops the run with its line number and the
            field that is wrong (exit 65), after reporting what was already published.
            Attributes "offset" and "brokertime" (added by telex-sub) are dropped, so telex-sub output re-publishes.
            An "article.deleted" event (the article's tombstone) needs in "data" only the non-empty string "uri" of
            the article it deletes; other ninjs fields are optional.

            Examples:
              telex-pub seeds/articles.jsonl
              telex-pub --topic news.world --type article.created article.json
              telex-pub --topic news.world --type article.deleted deletion.json     deletion.json: {"uri":"..."}
              telex-sub 'news.>' --no-follow | telex-pub --server other-host:7420 --quiet
            """)

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "Publish every event to this topic (overrides the events' own topic attribute).")
    var topic: String?

    @Option(help: "Treat each FILE as one ninjs article and wrap it in a CloudEvent of this type (e.g. article.created).")
    var type: String?

    @Option(help: "CloudEvents source for events made with --type.")
    var source: String = "urn:telex:telex-pub"

    @Flag(help: "Print only a summary instead of a line per event.")
    var quiet = false

    @OptionGroup var progressOptions: ProgressOptions

    @Argument(help: "JSON Lines files (or, with --type, ninjs article files). Default: standard input.")
    var files: [String] = []

    func validate() throws {
        if let topic {
            do { try TopicName.validate(topic) } catch { throw ValidationError(error.message) }
        }
        if type != nil, files.isEmpty { throw ValidationError("--type needs at least one ninjs article file") }
        if type != nil, topic == nil { throw ValidationError("--type needs --topic (an article file has no topic of its own)") }
    }

    func run() async throws {
        let configuration = try connection.configuration(defaultName: "telex-pub")
        let exitCode = try await TelexClient.withClient(configuration: configuration) { client -> Int32 in
            do {
                try await client.connect()
            } catch {
                printError("telex-pub: \(describe(error))")
                return connectExitCode(error)
            }
            var summary = Summary()
            var exitCode: Int32 = 0
            let showProgress = progressOptions.isEnabled(automatic: isTerminal(STDERR_FILENO))
            let progress = ProgressReporter(label: "telex-pub", enabled: showProgress)
            progress.update { $0.total = Self.totalSize(of: files) }
            do {
                if let type {
                    try await publishArticles(type: type, client: client, summary: &summary, progress: progress)
                } else {
                    try await publishLines(client: client, summary: &summary, progress: progress)
                }
            } catch let error as TelexError where error.code == .invalidEvent {
                printError("telex-pub: \(error.message)")
                exitCode = 65
            } catch {
                printError("telex-pub: \(describe(error))")
                exitCode = 1
            }
            progress.finish()
            let report = summary.text
            if quiet || exitCode != 0 {
                if exitCode != 0 { printError("telex-pub: stopped; \(report)") } else { print(report) }
            }
            return exitCode
        }
        if exitCode != 0 { throw ExitCode(exitCode) }
    }

    struct Summary {
        var events = 0
        var perTopic: [String: (count: Int, first: Int64, last: Int64)] = [:]

        mutating func add(topic: String, offset: Int64) {
            events += 1
            let entry = perTopic[topic] ?? (0, offset, offset)
            perTopic[topic] = (entry.count + 1, min(entry.first, offset), max(entry.last, offset))
        }

        var text: String {
            let topics = perTopic.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.count) (offsets \($0.value.first)-\($0.value.last))" }
            return "published \(events) event\(events == 1 ? "" : "s")" + (topics.isEmpty ? "" : ": " + topics.joined(separator: ", "))
        }
    }

    /// The total size of the files when all are regular files (so percent and ETA can be shown); nil for stdin.
    static func totalSize(of files: [String]) -> Int64? {
        guard !files.isEmpty else { return nil }
        var total: Int64 = 0
        for file in files {
            guard file != "-", let attributes = try? FileManager.default.attributesOfItem(atPath: file),
                  attributes[.type] as? FileAttributeType == .typeRegular, let size = attributes[.size] as? Int64
            else { return nil }
            total += size
        }
        return total
    }

    private func publishArticles(
        type: String, client: TelexClient, summary: inout Summary, progress: ProgressReporter
    ) async throws {
        var events: [CloudEvent] = []
        var bytes: Int64 = 0
        for file in files {
            let data: Data
            do {
                data = try Data(contentsOf: URL(fileURLWithPath: file))
            } catch {
                throw TelexError(.invalidEvent, "\(file): cannot read (\(error.localizedDescription))")
            }
            bytes += Int64(data.count)
            guard let article = (try? JSONValue(parsing: data))?.objectValue else {
                throw TelexError(.invalidEvent, "\(file): not a JSON object (a ninjs article)")
            }
            do {
                events.append(try CloudEvent(type: type, article: article, source: source, topic: topic))
            } catch {
                throw TelexError(.invalidEvent, "\(file): \(error.message.replacingOccurrences(of: "article: ", with: ""))")
            }
        }
        let results = try await client.publish(events: events, to: topic)
        for (index, result) in results.enumerated() {
            summary.add(topic: result.topic, offset: result.offset)
            if !quiet { print(ackLine(line: nil, file: files[index], id: events[index].id, result)) }
        }
        progress.update { counts in
            counts.events += Int64(results.count)
            (counts.bytes, counts.done) = (bytes, bytes)
        }
    }

    private func publishLines(client: TelexClient, summary: inout Summary, progress: ProgressReporter) async throws {
        let publisher = LinePublisher(client: client, topic: topic, namesFiles: files.count > 1, quiet: quiet,
                                      progress: progress)
        try await publisher.run(files: files, summary: &summary)
    }

    private func ackLine(line: Int?, file: String?, id: String, _ ack: EventAck) -> String {
        var object: [String: JSONValue] = ["id": .string(id), "topic": .string(ack.topic), "offset": .integer(ack.offset)]
        if let line { object["line"] = .integer(Int64(line)) }
        if let file { object["file"] = .string(file) }
        return JSONValue.object(object).jsonText
    }
}
