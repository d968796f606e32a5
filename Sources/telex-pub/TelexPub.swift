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
        // Per-event lines on the same terminal would land in the middle of the progress line: erase it first.
        let clearsProgress = !quiet && isTerminal(STDOUT_FILENO)
        let reader = LineReader(files: files)
        reader.start()
        while true {
            let chunk = await reader.take(max: 2048)
            if chunk.isEmpty { break }
            var events: [CloudEvent] = []
            var lineNumbers: [(String, Int)] = []
            var stop: TelexError?
            var bytes: Int64 = 0
            for line in chunk {
                switch line {
                case .text(let source, let number, let text):
                    bytes += Int64(text.utf8.count) + 1
                    if text.allSatisfy(\.isWhitespace) { continue }
                    let location = files.count > 1 ? "\(source) line \(number)" : "line \(number)"
                    do {
                        let event = try CloudEvent(jsonText: text.utf8, location: location)
                        if topic == nil, event.topic == nil {
                            throw TelexError(.invalidEvent,
                                "\(location): field 'topic': missing; give --topic or a \"topic\" attribute on the event")
                        }
                        events.append(event)
                        lineNumbers.append((source, number))
                    } catch {
                        stop = error as? TelexError ?? TelexError(.invalidEvent, "\(error)")
                    }
                case .failure(let message):
                    stop = TelexError(.invalidEvent, message)
                }
                if stop != nil { break }
            }
            // Everything before a bad line is published, so the report says exactly where the run stopped.
            if !events.isEmpty {
                let results = try await client.publish(events: events, to: topic)
                if clearsProgress { progress.clear() }
                for (index, result) in results.enumerated() {
                    summary.add(topic: result.topic, offset: result.offset)
                    if !quiet {
                        print(ackLine(line: lineNumbers[index].1, file: files.count > 1 ? lineNumbers[index].0 : nil,
                                      id: events[index].id, result))
                    }
                }
                fflush(nil)  // all output streams: the C `stdout` global is not concurrency-safe to name
                progress.update { counts in
                    counts.events += Int64(results.count)
                    counts.bytes += bytes
                    counts.done += bytes
                }
            }
            if let stop { throw stop }
        }
    }

    private func ackLine(line: Int?, file: String?, id: String, _ ack: EventAck) -> String {
        var object: [String: JSONValue] = ["id": .string(id), "topic": .string(ack.topic), "offset": .integer(ack.offset)]
        if let line { object["line"] = .integer(Int64(line)) }
        if let file { object["file"] = .string(file) }
        return JSONValue.object(object).jsonText
    }
}

/// Reads lines on a background thread so publishing never waits for a slow pipe to fill a batch.
final class LineReader: Sendable {
    enum Line {
        case text(source: String, number: Int, String)
        case failure(String)
    }

    private struct State {
        var lines: [Line] = []
        var done = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let files: [String]
    private let state = NIOLockedValueBox(State())

    init(files: [String]) {
        self.files = files
    }

    func start() {
        Thread.detachNewThread { self.readAll() }
    }

    private func readAll() {
        let sources = files.isEmpty ? ["-"] : files
        for source in sources {
            let handle: FileHandle?
            if source == "-" {
                handle = FileHandle.standardInput
            } else {
                handle = FileHandle(forReadingAtPath: source)
            }
            guard let handle else {
                push(.failure("\(source): cannot open for reading"))
                break
            }
            let name = source == "-" ? "stdin" : source
            var number = 0
            var pending = Data()
            while true {
                let data = handle.availableData
                if data.isEmpty { break }
                pending.append(data)
                var batch: [Line] = []
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    number += 1
                    batch.append(.text(source: name, number: number, String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)))
                    pending.removeSubrange(pending.startIndex...newline)
                }
                if !batch.isEmpty { push(contentsOf: batch) }
            }
            if !pending.isEmpty {
                number += 1
                push(.text(source: name, number: number, String(decoding: pending, as: UTF8.self)))
            }
        }
        let waiter = state.withLockedValue { state in
            state.done = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    private func push(_ line: Line) { push(contentsOf: [line]) }

    private func push(contentsOf newLines: [Line]) {
        let waiter = state.withLockedValue { state in
            state.lines.append(contentsOf: newLines)
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// Up to `max` lines already read; waits only when none are there. Empty means the input ended.
    func take(max: Int) async -> [Line] {
        while true {
            let ready: [Line]? = state.withLockedValue { state in
                if !state.lines.isEmpty {
                    let count = Swift.min(max, state.lines.count)
                    let taken = Array(state.lines.prefix(count))
                    state.lines.removeFirst(count)
                    return taken
                }
                return state.done ? [] : nil
            }
            if let ready { return ready }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLockedValue { state in
                    if !state.lines.isEmpty || state.done { return true }
                    state.waiter = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        }
    }
}
