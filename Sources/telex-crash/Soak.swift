import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import TelexCLI
import TelexClient
import TelexProtocol

/// A long steady workload: paced publishers, live subscribers and durable consumers, with a report line every
/// `--report-seconds` (broker RSS and open files from /proc, publish→ack latency, events, consumer lag).
struct Soak: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "soak", abstract: "Run a steady workload for a while and report the broker's health over time.")

    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Minutes to run.") var minutes = 10.0
    @Option(help: "The broker's process id, to read its RSS and open files.") var serverPid: Int
    @Option(help: "Publishing connections, one topic each (soak.N).") var publishers = 4
    @Option(help: "Events per second per publisher.") var rate = 500
    @Option(help: "Live subscribers (soak.>).") var subscribers = 2
    @Option(help: "Durable consumers (soak.>), committing every 100 events.") var consumers = 2
    @Option(help: "Seconds between report lines.") var reportSeconds = 30.0

    struct Period {
        var latencies: [Double] = []
        var published = 0
        var consumed = 0
    }

    func run() async throws {
        let configuration = try patientConfiguration(connection, name: "soak", attempts: 8)
        let period = NIOLockedValueBox(Period())
        let reports = max(1, Int((minutes * 60 / reportSeconds).rounded()))
        let rate = self.rate
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<publishers {
                group.addTask {
                    try await Self.publish(
                        rate: rate, topic: "soak.\(index)", configuration: configuration, period: period)
                }
            }
            for index in 0..<(subscribers + consumers) {
                let consumer = index < subscribers ? nil : "soak-consumer-\(index - subscribers)"
                group.addTask { try await Self.read(consumer: consumer, configuration: configuration, period: period) }
            }
            try await TelexClient.withClient(configuration: configuration) { admin in
                var next = ContinuousClock.now + .seconds(reportSeconds)
                let started = ContinuousClock.now
                for _ in 0..<reports {
                    try await Task.sleep(until: next)
                    next += .seconds(reportSeconds)
                    let taken = period.withLockedValue { period in
                        defer { period = Period() }
                        return period
                    }
                    let lag = try await admin.consumerPositions().reduce(Int64(0)) { $0 + $1.lag }
                    let sorted = taken.latencies.sorted()
                    func percentile(_ p: Double) -> String {
                        sorted.isEmpty
                            ? "-" : String(format: "%.1f", sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))])
                    }
                    let elapsed = (ContinuousClock.now - started).components.seconds
                    FileHandle.standardOutput.write(
                        Data(
                            """
                            soak: t=\(elapsed)s rss_kb=\(brokerRSS()) open_files=\(brokerOpenFiles()) \
                            published=\(taken.published) consumed=\(taken.consumed) \
                            ack_p50_ms=\(percentile(0.5)) ack_p99_ms=\(percentile(0.99)) consumer_lag=\(lag)

                            """.utf8))
                }
            }
            group.cancelAll()
        }
    }

    /// Publishes `rate` events a second in batches of 10, one batch in flight, timing each publish→ack.
    private static func publish(
        rate: Int, topic: String, configuration: ClientConfiguration, period: NIOLockedValueBox<Period>
    ) async throws {
        try await TelexClient.withClient(configuration: configuration) { client in
            let clock = ContinuousClock()
            let interval = Duration.seconds(10.0 / Double(rate))
            var next = clock.now
            var number = 0
            while !Task.isCancelled {
                let records = (0..<10).map { record("\(topic)-\(number + $0) " + String(repeating: "x", count: 200)) }
                number += 10
                let start = clock.now
                do {
                    _ = try await client.publish(records, to: topic)
                } catch is CancellationError {
                    return
                } catch let error as PublishError where error.underlying is CancellationError {
                    return
                }
                let milliseconds = Double((clock.now - start) / .microseconds(1)) / 1000
                period.withLockedValue {
                    $0.latencies.append(milliseconds)
                    $0.published += records.count
                }
                next += interval
                if next > clock.now { try? await Task.sleep(until: next) } else { next = clock.now }
            }
        }
    }

    /// A live subscriber (no consumer) or a durable consumer committing every 100 events.
    private static func read(consumer: String?, configuration: ClientConfiguration, period: NIOLockedValueBox<Period>)
        async throws
    {
        try await TelexClient.withClient(configuration: configuration) { client in
            let subscription = try await client.subscribe("soak.>", from: .beginning, consumer: consumer)
            var uncommitted = 0
            for try await _ in subscription {
                period.withLockedValue { $0.consumed += 1 }
                uncommitted += 1
                if consumer != nil, uncommitted >= 100 {
                    try await subscription.commit()
                    uncommitted = 0
                }
            }
        }
    }

    private func brokerRSS() -> String {
        let status = (try? String(contentsOfFile: "/proc/\(serverPid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }
        return line.map {
            $0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.map(String.init) ?? "?"
        } ?? "?"
    }

    private func brokerOpenFiles() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(serverPid)/fd").count) ?? -1
    }
}
