import ArgumentParser
import Foundation
import TelexCLI
import TelexClient
import TelexEvents
import TelexProtocol

@main
struct TelexSub: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "telex-sub",
        abstract: "Print article events from a Telex broker as JSON Lines.",
        discussion: """
            Each line is the stored CloudEvent plus "topic", "offset" and "brokertime" (when the broker stored it).
            The output is valid telex-pub input. PATTERN is a topic or a wildcard: '*' matches one token,
            '>' the rest ('news.>' also picks up topics created later).

            Examples:
              telex-sub 'news.>'                                  follow new events
              telex-sub 'news.>' --no-follow                      everything stored, then exit
              telex-sub 'news.>' --latest --no-follow             each live article's newest version (index rebuild)
              telex-sub news.world --from 120 --limit 10
              telex-sub 'sport.*' --since 2024-03-06T00:00:00Z
              telex-sub 'news.>' --consumer search-indexer        resume where this consumer stopped
              telex-sub 'news.>' --no-follow | telex-pub --server other:7420 --quiet
              telex-sub news.world --from beginning --skip-damaged   read on past records damaged on the broker's disk
            """)

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "Topic or pattern, e.g. news.world, news.*, 'news.>'.")
    var pattern: String

    @Option(help: "Where to start: beginning, end or an OFFSET. Default: end, or beginning with --no-follow.")
    var from: String?

    @Option(help: "Start at the first event stored at or after this RFC 3339 time.")
    var since: String?

    @Option(help: "Durable consumer name: resume from its committed positions and commit as events are printed.")
    var consumer: String?

    @Option(help: "Stop after printing this many events.")
    var limit: Int?

    @Flag(help: "Stop once everything stored when the subscription began has been printed.")
    var noFollow = false

    @Flag(help: "Of the events stored when the subscription began, print only each article's newest version, leaving out articles whose newest event is article.deleted; then follow every new event (with --no-follow: stop). Not with --from, --since or --consumer.")
    var latest = false

    @Option(help: "With --consumer, commit after this many events (and always at exit).")
    var commitEvery: Int = 100

    @Option(help: "With --consumer, when retention passed a committed position: beginning, end or fail (needs an admin principal to reset).")
    var onOutOfRange: OutOfRangePolicy = .fail
    @Flag(help: "Read on past records the broker finds damaged on its disk, logging each skipped range on stderr. Without it telex-sub stops with an error naming the topic and the lost offsets.")
    var skipDamaged = false

    @OptionGroup var progressOptions: ProgressOptions

    func validate() throws {
        do { try TopicName.validatePattern(pattern) } catch { throw ValidationError(error.message) }
        if from != nil, since != nil { throw ValidationError("give --from or --since, not both") }
        if latest, let conflicting = [from.map { _ in "--from" }, since.map { _ in "--since" }, consumer.map { _ in "--consumer" }]
            .compactMap({ $0 }).first {
            throw ValidationError("--latest replays its own snapshot from the beginning: it cannot be combined with \(conflicting)")
        }
        if let from, !["beginning", "end"].contains(from), Int64(from).map({ $0 < 0 }) ?? true {
            throw ValidationError("--from must be beginning, end or a non-negative offset, not '\(from)'")
        }
        if let since, CloudEvent.parseTime(since) == nil {
            throw ValidationError("--since '\(since)' is not an RFC 3339 time such as 2024-03-06T08:00:00Z")
        }
        if let limit, limit <= 0 { throw ValidationError("--limit must be positive") }
        if commitEvery <= 0 { throw ValidationError("--commit-every must be positive") }
    }

    var start: StartPosition {
        if latest { return .latest }
        if let since, let date = CloudEvent.parseTime(since) { return .timestamp(Int64(date.timeIntervalSince1970 * 1000)) }
        switch from {
        case "beginning": return .beginning
        case "end": return .end
        case let text?: return .offset(Int64(text)!)
        case nil: return noFollow ? .beginning : .end
        }
    }

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        let configuration = try connection.configuration(defaultName: "telex-sub")
        let (pattern, start, consumer, noFollow) = (self.pattern, self.start, self.consumer, self.noFollow)
        let (limit, commitEvery, onOutOfRange, skipDamaged) = (self.limit, self.commitEvery, self.onOutOfRange, self.skipDamaged)
        // By default only a --no-follow run whose output goes elsewhere shows progress: on a terminal it would mix.
        let showProgress = progressOptions.isEnabled(
            automatic: noFollow && isTerminal(STDERR_FILENO) && !isTerminal(STDOUT_FILENO))
        let exitCode = try await TelexClient.withClient(configuration: configuration) { client -> Int32 in
            do {
                try await client.connect()
            } catch {
                printError("telex-sub: \(describe(error))")
                return connectExitCode(error)
            }
            let subscription: TelexSubscription
            do {
                subscription = try await Self.subscribe(client, pattern: pattern, start: start, consumer: consumer,
                                                        untilCaughtUp: noFollow, skipDamaged: skipDamaged,
                                                        onOutOfRange: onOutOfRange)
            } catch {
                printError("telex-sub: \(describe(error))")
                return 1
            }
            let progress = ProgressReporter(label: "telex-sub", enabled: showProgress)
            // A latest replay prints an unknown share of the offsets: no total.
            if noFollow, !start.selects {
                let total = subscription.topics.reduce(Int64(0)) { $0 + max(0, $1.endOffset - $1.startOffset) }
                progress.update { $0.total = limit.map { min(Int64($0), total) } ?? total }
            }
            // SIGINT/SIGTERM cancel the printing task: its iteration ends at once, and what was printed is committed.
            let printing = Task {
                try await Self.printEvents(subscription, limit: limit, commitEvery: consumer == nil ? nil : commitEvery,
                                           progress: progress)
            }
            let stop = StopSignal()
            stop.install { printing.cancel() }
            var exitCode: Int32 = 0
            let result = await printing.result
            progress.finish()
            // The subscription's positions are past every event iterated, but lines still queued when standard
            // output failed were never written: then only the periodic commits (each after a flush) stand.
            var outputLost = false
            switch result {
            case .success(let failure):
                if let failure {
                    outputLost = true
                    // A closed pipe (`| head`) is how a reader says it has enough; anything else is an error.
                    if failure != EPIPE {
                        printError("telex-sub: could not write to standard output: \(String(cString: strerror(failure)))"
                            + (consumer == nil ? "" : "; positions after the last commit were not committed"))
                        exitCode = 1
                    }
                }
            case .failure(let error):
                printError("telex-sub: \(describe(error))")
                if (error as? TelexError)?.code == .corruptBatch {
                    printError("telex-sub: nothing of that delivery was printed; 'telexd verify' on the broker finds stored damage")
                }
                exitCode = 1
            }
            if consumer != nil, !outputLost {
                do { try await subscription.commit() } catch {
                    printError("telex-sub: could not commit positions: \(describe(error))")
                    exitCode = 1
                }
            }
            return exitCode
        }
        if exitCode != 0 { throw ExitCode(exitCode) }
    }

    /// Prints events until the subscription ends, `limit` is reached, standard output closes or the task is
    /// cancelled; commits every `commitEvery` events when given, and counts each printed event in `progress`.
    /// Returns the errno of a failed write to standard output (some iterated events were then not written), or nil.
    private static func printEvents(
        _ subscription: TelexSubscription, limit: Int?, commitEvery: Int?, progress: ProgressReporter
    ) async throws -> Int32? {
        // On a terminal each line is written before the next (the progress line is erased first); elsewhere the
        // writer thread gathers lines into large writes.
        let clearsProgress = isTerminal(STDOUT_FILENO)
        let writer = OutputWriter()
        writer.start()
        var printed = 0
        var sinceCommit = 0
        var line: [UInt8] = []
        do {
            for try await delivered in subscription {
                if let skipped = delivered.skippedBefore {
                    let offsets = skipped.count == 1
                        ? "offset \(skipped.lowerBound)" : "offsets \(skipped.lowerBound)-\(skipped.upperBound - 1)"
                    printError("telex-sub: skipped \(offsets) of \(delivered.topic): the broker could not read them (damaged on its disk, or removed by compaction; --skip-damaged)")
                }
                line.removeAll(keepingCapacity: true)
                do {
                    try CloudEvent.appendOutputLine(value: delivered.record.value, topic: delivered.topic,
                                                    offset: delivered.offset, brokerTime: delivered.brokerTime,
                                                    to: &line)
                } catch {
                    printError("telex-sub: skipping \(delivered.topic)@\(delivered.offset): \(error.message)")
                    continue
                }
                if clearsProgress { progress.clear() }
                // False means standard output is gone (a closed pipe).
                guard await writer.write(line) else { break }
                if clearsProgress, await !writer.flush() { break }
                printed += 1
                progress.update { counts in
                    counts.events += 1
                    counts.done += 1
                    counts.bytes += Int64(line.count)
                }
                sinceCommit += 1
                if let commitEvery, sinceCommit >= commitEvery {
                    // Commit only what has reached standard output.
                    guard await writer.flush() else { break }
                    try await subscription.commit()
                    sinceCommit = 0
                }
                if let limit, printed >= limit { break }
            }
        } catch is CancellationError {
            // Stopped by a signal: the caller commits what was printed.
        } catch {
            await writer.flush()
            throw error
        }
        await writer.flush()
        return writer.failure
    }
}

/// Turns SIGINT/SIGTERM into a clean stop, so a durable consumer commits what it printed.
/// Used only by the task that runs the command; the signal sources live as long as it does.
final class StopSignal {
    private var sources: [DispatchSourceSignal] = []

    func install(_ action: @escaping @Sendable () -> Void) {
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler(handler: action)
            source.resume()
            sources.append(source)
        }
    }
}
