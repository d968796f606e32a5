import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import TelexCLI
import TelexClient
import TelexProtocol

/// `telex-crash`: the client side of Scripts/crash-test.sh and Scripts/soak.sh.
@main
struct TelexCrash: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "telex-crash",
        abstract: "Drive a telexd that is being killed (crash test) or run for long (soak), and check what it kept.",
        discussion: "Scripts/crash-test.sh and Scripts/soak.sh start the broker and run this.",
        subcommands: [Drive.self, Verify.self, Soak.self])
}

/// The topics the crash workload publishes to: two publishers each.
let crashTopics = ["crash.a", "crash.b"]

/// A client configuration that keeps reconnecting while the broker is down (it comes back within seconds).
func patientConfiguration(_ options: ConnectionOptions, name: String, attempts: Int = 1_000_000) throws
    -> ClientConfiguration
{
    var configuration = try options.configuration(defaultName: name)
    configuration.maxReconnectAttempts = attempts
    configuration.initialReconnectDelay = .milliseconds(20)
    configuration.maxReconnectDelay = .milliseconds(200)
    configuration.connectTimeout = .seconds(2)
    configuration.requestTimeout = .seconds(10)
    configuration.maxBatchRecords = 10
    return configuration
}

func record(_ id: String) -> Record {
    Record(timestamp: 0, key: ByteBuffer(), value: ByteBuffer(string: id))
}

/// What the workload saw, shared by its tasks.
struct Observations {
    /// Acknowledged events: topic, offset, payload id.
    var acknowledged: [(topic: String, offset: Int64, id: String)] = []
    /// What the live subscriber was delivered, per topic, by offset.
    var delivered: [String: [Int64: String]] = [:]
    var subscriberDuplicates = 0
    var subscriberGaps = 0
    var subscriberSessions = 0
    var consumerSessions = 0
    var consumerResumeViolations = 0
    var consumerGaps = 0
    var commitsAcknowledged = 0
    var duplicateAcks = 0
    /// The next offset per topic of the live subscriber and of the durable consumer.
    var subscriberNext: [String: Int64] = [:]
    var consumerNext: [String: Int64] = [:]
    var problems: [String] = []

    /// Whether both readers have reached every acknowledged event.
    var readersCaughtUp: Bool {
        var ends: [String: Int64] = [:]
        for event in acknowledged { ends[event.topic] = max(ends[event.topic, default: 0], event.offset + 1) }
        return ends.allSatisfy {
            subscriberNext[$0.key, default: 0] >= $0.value && consumerNext[$0.key, default: 0] >= $0.value
        }
    }
}

/// Runs the crash workload until `DIR/stop` appears, then lets the readers catch up and writes `DIR/acks.txt`,
/// `DIR/delivered.txt` and `DIR/live.txt`.
struct Drive: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drive", abstract: "Publish, subscribe and consume across broker kills until DIR/stop exists.")

    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Directory for the stop file and the results.") var dir: String
    @Option(help: "Publishing connections (idempotent producers).") var publishers = 4
    @Option(help: "Records per published batch.") var batch = 10
    @Option(help: "Pause between a publisher's batches, in milliseconds (keeps the log, and the final check, small).")
    var pauseMilliseconds = 5
    @Option(help: "Events the durable consumer reads between commits.") var commitEvery = 100

    func run() async throws {
        let seen = NIOLockedValueBox(Observations())
        let stopping = NIOLockedValueBox(false)
        let stopPath = dir + "/stop"
        let publishConfiguration = try patientConfiguration(connection, name: "crash-publisher")
        let readConfiguration = try patientConfiguration(connection, name: "crash-subscriber")
        let consumerConfiguration = try patientConfiguration(connection, name: "crash-consumer", attempts: 1)
        let batchSize = batch
        let pause = Duration.milliseconds(pauseMilliseconds)
        let commitEvery = self.commitEvery
        try await withThrowingTaskGroup(of: Void.self) { readers in
            readers.addTask { try await Self.subscribe(configuration: readConfiguration, seen: seen) }
            readers.addTask {
                try await Self.consume(configuration: consumerConfiguration, commitEvery: commitEvery, seen: seen)
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<publishers {
                    group.addTask {
                        try await Self.publish(
                            index: index, batchSize: batchSize, pause: pause, configuration: publishConfiguration,
                            seen: seen, stopping: stopping)
                    }
                }
                while !FileManager.default.fileExists(atPath: stopPath) {
                    try await Task.sleep(for: .milliseconds(100))
                }
                stopping.withLockedValue { $0 = true }
                try await group.waitForAll()
            }
            // The readers get everything acknowledged, or 30 s, before they are stopped.
            let deadline = ContinuousClock.now + .seconds(30)
            while !seen.withLockedValue({ $0.readersCaughtUp }), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            seen.withLockedValue { seen in
                if !seen.readersCaughtUp {
                    seen.problems.append("the readers did not catch up within 30 s of the stop")
                }
            }
            readers.cancelAll()
        }
        try write(seen.withLockedValue { $0 })
    }

    /// Publishes batches of `batch` events, one at a time, and records each acknowledged event. A batch is
    /// re-sent unchanged until acknowledged, so a retry after a crash is answered as a duplicate.
    private static func publish(
        index: Int, batchSize: Int, pause: Duration, configuration: ClientConfiguration,
        seen: NIOLockedValueBox<Observations>,
        stopping: NIOLockedValueBox<Bool>
    ) async throws {
        let topic = crashTopics[index % crashTopics.count]
        try await TelexClient.withClient(configuration: configuration) { client in
            var number = 0
            while !stopping.withLockedValue({ $0 }) {
                let ids = (0..<batchSize).map { "p\(index)-\(number + $0)" }
                number += batchSize
                var pending = try await client.prepare(ids.map(record), topic: topic)
                var acks: [PublishAck] = []
                var failures = 0
                var gaveUp = false
                while !pending.isEmpty, !gaveUp {
                    do {
                        acks += try await client.publish(prepared: pending)
                        pending = []
                    } catch let error as PublishError {
                        acks += error.acknowledged
                        pending = error.unacknowledged
                        failures += 1
                        // A broker that keeps refusing (not just restarting) must not hang the run.
                        gaveUp = failures >= 500
                        if gaveUp {
                            seen.withLockedValue { $0.problems.append("publisher \(index) gave up: \(error)") }
                        }
                        try await Task.sleep(for: .milliseconds(20))
                    }
                }
                var offsets: [Int64] = []
                for ack in acks { offsets += (0..<Int64(ack.recordCount)).map { ack.baseOffset + $0 } }
                seen.withLockedValue { seen in
                    seen.duplicateAcks += acks.filter(\.duplicate).count
                    for (id, offset) in zip(ids, offsets) { seen.acknowledged.append((topic, offset, id)) }
                    if offsets.count != ids.count, !gaveUp {
                        seen.problems.append(
                            "publisher \(index): \(ids.count) events acknowledged with \(offsets.count) offsets")
                    }
                }
                if gaveUp { return }
                try await Task.sleep(for: pause)
            }
        }
    }

    /// The live subscriber: one subscription that resumes by itself after each reconnect; within it every
    /// topic's offsets must follow on one by one. Runs until cancelled.
    private static func subscribe(configuration: ClientConfiguration, seen: NIOLockedValueBox<Observations>)
        async throws
    {
        try await TelexClient.withClient(configuration: configuration) { client in
            var next: [String: Int64] = [:]
            while !Task.isCancelled {
                seen.withLockedValue { $0.subscriberSessions += 1 }
                do {
                    let subscription = try await client.subscribe("crash.>", from: .beginning)
                    // A new subscription (after an error ended the last one) may deliver again what was seen.
                    var fresh: Set<String> = []
                    for try await delivered in subscription {
                        let expected = next[delivered.topic, default: 0]
                        if delivered.offset < expected, !fresh.contains(delivered.topic) { continue }
                        fresh.insert(delivered.topic)
                        next[delivered.topic] = max(expected, delivered.offset + 1)
                        let id = String(buffer: delivered.record.value)
                        seen.withLockedValue { seen in
                            if delivered.offset < expected { seen.subscriberDuplicates += 1 }
                            if delivered.offset > expected { seen.subscriberGaps += 1 }
                            seen.delivered[delivered.topic, default: [:]][delivered.offset] = id
                            seen.subscriberNext = next
                        }
                    }
                } catch {
                    try? await Task.sleep(for: .milliseconds(50))
                }
            }
        }
    }

    /// The durable consumer: each session subscribes afresh with its consumer name, so the broker picks the start
    /// from the committed positions; it must be at or after the last commit acknowledged (and not past the
    /// newest sent). A session ends when the connection drops (one connection attempt); the next begins once the
    /// broker is back. Commits every `commitEvery` events; runs until cancelled.
    private static func consume(
        configuration: ClientConfiguration, commitEvery: Int, seen: NIOLockedValueBox<Observations>
    ) async throws {
        var acknowledged: [String: Int64] = [:]
        var sent: [String: Int64] = [:]
        while !Task.isCancelled {
            do {
                try await TelexClient.withClient(configuration: configuration) { client in
                    let subscription = try await client.subscribe(
                        "crash.>", from: .beginning, consumer: "crash-durable")
                    seen.withLockedValue { $0.consumerSessions += 1 }
                    var next: [String: Int64] = [:]
                    for range in subscription.topics {
                        let committed = acknowledged[range.topic, default: 0]
                        let newest = sent[range.topic, default: 0]
                        if range.startOffset < committed || range.startOffset > newest {
                            seen.withLockedValue {
                                $0.consumerResumeViolations += 1
                                $0.problems.append(
                                    "durable consumer resumed \(range.topic) at \(range.startOffset); last commit acknowledged \(committed), newest sent \(newest)"
                                )
                            }
                        }
                        next[range.topic] = range.startOffset
                    }
                    var uncommitted = 0
                    for try await delivered in subscription {
                        if delivered.offset != next[delivered.topic, default: 0] {
                            seen.withLockedValue { $0.consumerGaps += 1 }
                        }
                        next[delivered.topic] = delivered.offset + 1
                        uncommitted += 1
                        if uncommitted >= commitEvery {
                            let offsets = subscription.nextOffsets
                            for (topic, offset) in offsets { sent[topic] = max(sent[topic, default: 0], offset) }
                            try await subscription.commit()
                            for (topic, offset) in offsets {
                                acknowledged[topic] = max(acknowledged[topic, default: 0], offset)
                            }
                            seen.withLockedValue { $0.commitsAcknowledged += 1 }
                            uncommitted = 0
                        }
                        seen.withLockedValue { $0.consumerNext.merge(next) { max($0, $1) } }
                    }
                }
            } catch {
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    private func write(_ seen: Observations) throws {
        try seen.acknowledged.map { "\($0.topic) \($0.offset) \($0.id)\n" }.joined()
            .write(toFile: dir + "/acks.txt", atomically: true, encoding: .utf8)
        try seen.delivered.sorted { $0.key < $1.key }.flatMap { topic, events in
            events.sorted { $0.key < $1.key }.map { "\(topic) \($0.key) \($0.value)\n" }
        }.joined().write(toFile: dir + "/delivered.txt", atomically: true, encoding: .utf8)
        let live = """
            acknowledged=\(seen.acknowledged.count) duplicate_acks=\(seen.duplicateAcks) \
            delivered=\(seen.delivered.values.reduce(0) { $0 + $1.count }) subscriber_sessions=\(seen.subscriberSessions) \
            subscriber_duplicates=\(seen.subscriberDuplicates) subscriber_gaps=\(seen.subscriberGaps) \
            consumer_sessions=\(seen.consumerSessions) commits=\(seen.commitsAcknowledged) \
            consumer_resume_violations=\(seen.consumerResumeViolations) consumer_gaps=\(seen.consumerGaps)

            """
        try (live + seen.problems.map { "problem: \($0)\n" }.joined())
            .write(toFile: dir + "/live.txt", atomically: true, encoding: .utf8)
    }
}

/// Reads the whole log back and checks it against what the workload recorded; prints the summary line and
/// exits 1 if anything acknowledged is missing or any check failed.
struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check the broker's log against DIR/acks.txt, DIR/delivered.txt and DIR/live.txt.")

    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Directory the drive command wrote its results to.") var dir: String
    @Option(help: "Kills survived, for the summary line.") var crashes = 0

    func run() async throws {
        let configuration = try patientConfiguration(connection, name: "crash-verify", attempts: 50)
        var stored: [String: [Int64: String]] = [:]
        try await TelexClient.withClient(configuration: configuration) { client in
            let subscription = try await client.subscribe("crash.>", from: .beginning, untilCaughtUp: true)
            for try await delivered in subscription {
                stored[delivered.topic, default: [:]][delivered.offset] = String(buffer: delivered.record.value)
            }
        }
        let acknowledged = try events(in: "acks.txt")
        let lost = acknowledged.filter { stored[$0.topic]?[$0.offset] != $0.id }
        let deliveredLost = try events(in: "delivered.txt").filter { stored[$0.topic]?[$0.offset] != $0.id }
        var offsetsByID: [String: Int] = [:]
        for events in stored.values { for id in events.values { offsetsByID[id, default: 0] += 1 } }
        let storedTwice = offsetsByID.values.filter { $0 > 1 }.count
        let live = try String(contentsOfFile: dir + "/live.txt", encoding: .utf8)
        let liveLine = live.split(separator: "\n").first.map(String.init) ?? ""
        let liveFailures = ["subscriber_duplicates", "subscriber_gaps", "consumer_resume_violations", "consumer_gaps"]
            .filter { name in liveLine.split(separator: " ").contains { $0.hasPrefix(name + "=") && $0 != name + "=0" }
            }
        for event in lost.prefix(10) {
            let found = stored[event.topic]?[event.offset] ?? "nothing"
            printError("lost: \(event.id) acknowledged at \(event.topic)@\(event.offset), stored there: \(found)")
        }
        for line in live.split(separator: "\n").dropFirst() { printError(String(line)) }
        print(
            """
            crashes=\(crashes) acknowledged=\(acknowledged.count) lost=\(lost.count) \
            stored=\(stored.values.reduce(0) { $0 + $1.count }) stored_twice=\(storedTwice) \
            delivered_not_stored=\(deliveredLost.count) \(liveLine.replacingOccurrences(of: "acknowledged=\(acknowledged.count) ", with: ""))
            """)
        let problems = live.split(separator: "\n").count > 1
        if !lost.isEmpty || storedTwice > 0 || !deliveredLost.isEmpty || !liveFailures.isEmpty || problems {
            throw ExitCode(1)
        }
    }

    private func events(in file: String) throws -> [(topic: String, offset: Int64, id: String)] {
        try String(contentsOfFile: dir + "/" + file, encoding: .utf8).split(separator: "\n").map { line in
            let fields = line.split(separator: " ")
            guard fields.count == 3, let offset = Int64(fields[1]) else {
                throw ValidationError("bad line in \(file): \(line)")
            }
            return (String(fields[0]), offset, String(fields[2]))
        }
    }
}
