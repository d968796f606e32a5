import ArgumentParser
import Dispatch
import Foundation
import Histogram
import NIOCore
import TelexCLI
import TelexClient
import TelexEvents
import TelexProtocol

@main
struct TelexBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "telex-bench",
        abstract: "Measure a running telexd: publish rate, replay rate, latency, disk use and memory.",
        discussion: "Scripts/bench.sh builds release, starts a broker on a temporary directory and runs this.",
        subcommands: [BrokerBenchmark.self, StorageBenchmark.self, RebuildBenchmark.self],
        defaultSubcommand: BrokerBenchmark.self)
}

struct BrokerBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "broker", abstract: "Run the broker workloads against a running telexd (the default).")

    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Events per publish run.") var events = 200_000
    @Option(help: "Connections for the parallel publish run.") var connections = 4
    @Option(help: "Records per batch.") var batch = 64
    @Option(help: "Batches awaiting their ack per connection (64-event batches: 4 = 256 events in flight).") var window = 4
    @Option(help: "zlib or none.") var codec = "zlib"
    @Option(help: "zlib level 1-9.") var level: Int32 = 1
    @Option(help: "Deflate library for codec zlib: libdeflate or zlib.") var deflate = DeflateImplementation.libdeflate.rawValue
    @Option(help: "Events per second in the latency run.") var rate = 5000
    @Option(help: "Seconds of the latency run.") var duration = 10.0
    @Option(help: "Runs of each workload; medians are reported.") var runs = 3
    @Option(help: "Seed articles for the corpus.") var seeds = "seeds/articles.jsonl"
    @Option(help: "The broker's data directory, to measure bytes on disk per event.") var dataDir: String?
    @Option(help: "The broker's process id, to read its peak RSS (VmHWM).") var serverPid: Int?
    @Option(help: "The broker's fsync policy, as its startup line reports it.") var serverFsync = "unknown"
    @Option(help: "Write the JSON summary to this file too.") var jsonOut: String?
    @Flag(help: "Skip the parallel publish and latency runs (for profiling publish and replay).") var publishAndReplayOnly = false

    func run() async throws {
        guard let codec = Codec.allCases.first(where: { $0.description == self.codec }) else {
            throw ValidationError("--codec must be zlib or none")
        }
        var configuration = try connection.configuration(defaultName: "telex-bench")
        configuration.codec = codec
        configuration.compressionLevel = level
        guard let implementation = DeflateImplementation(rawValue: deflate) else {
            throw ValidationError("--deflate must be libdeflate or zlib")
        }
        configuration.deflateImplementation = implementation
        log("deflate implementation: \(implementation)")
        configuration.maxBatchRecords = batch
        configuration.publishWindow = window
        configuration.subscriptionCredit = 256

        let corpus = try Corpus(seedsPath: seeds, count: events)
        let averageJSON = Double(corpus.jsonBytes) / Double(events)
        log("corpus: \(events) events, \(Int(averageJSON)) bytes of JSON each on average")
        let tag = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let pingFloor = try await pingRoundTrips(configuration: configuration)
        log("PING round trip: p50 \(ms(pingFloor.p50)) ms, p99 \(ms(pingFloor.p99)) ms (the floor under every latency)")

        var publishOne: [Double] = []
        var publishMany: [Double] = []
        var replay: [Double] = []
        var latencies: [LatencyResult] = []
        var diskPerEvent: [Double] = []
        for run in 1...runs {
            let topic = "bench.\(tag).publish-\(run)"
            let single = try await publish(corpus.records, topic: topic, clients: 1, configuration: configuration)
            publishOne.append(single)
            log("run \(run): publish, 1 connection: \(Int(single)) ev/s")
            if let dataDir { diskPerEvent.append(Double(diskBytes(dataDir, topic: topic)) / Double(events)) }
            let replayed = try await replayRate(topic: topic, expected: events, configuration: configuration)
            replay.append(replayed)
            log("run \(run): replay: \(Int(replayed)) ev/s")
            if publishAndReplayOnly { continue }
            let parallel = try await publish(corpus.records, topic: "bench.\(tag).parallel-\(run)", clients: connections,
                                             configuration: configuration)
            publishMany.append(parallel)
            log("run \(run): publish, \(connections) connections: \(Int(parallel)) ev/s")
            let latency = try await latencyRun(corpus.records, topic: "bench.\(tag).latency-\(run)", configuration: configuration)
            latencies.append(latency)
            log("run \(run): latency at \(rate) ev/s: p50 \(ms(latency.p50)) p99 \(ms(latency.p99)) p99.9 \(ms(latency.p999)) max \(ms(latency.max)) ms")
        }
        let peakRSS = serverPid.flatMap(peakRSSBytes)
        let latency = LatencyResult(
            p50: median(latencies.map(\.p50)), p99: median(latencies.map(\.p99)), p999: median(latencies.map(\.p999)),
            max: median(latencies.map(\.max)), count: latencies.map(\.count).min() ?? 0)
        let megabytes = averageJSON / 1_000_000
        func number(_ value: Int) -> JSONValue { .integer(Int64(value)) }
        func number(_ value: Double) -> JSONValue { .double(value) }
        let summary: JSONValue = [
            "events": number(events), "runs": number(runs), "codec": .string(codec.description),
            "zlibLevel": number(Int(level)), "batch": number(batch), "window": number(window),
            "eventsInFlight": number(window * batch), "connections": number(connections), "serverFsync": .string(serverFsync),
            "averageEventJSONBytes": number(Int(averageJSON)),
            "publishEventsPerSecond": number(Int(median(publishOne))),
            "publishMBPerSecond": number(round(median(publishOne) * megabytes * 10) / 10),
            "publishParallelEventsPerSecond": number(Int(median(publishMany))),
            "publishParallelMBPerSecond": number(round(median(publishMany) * megabytes * 10) / 10),
            "replayEventsPerSecond": number(Int(median(replay))),
            "pingP50Ms": number(pingFloor.p50 / 1e6), "pingP99Ms": number(pingFloor.p99 / 1e6),
            "latencyRate": number(rate), "latencySeconds": number(duration),
            "latencyP50Ms": number(latency.p50 / 1e6), "latencyP99Ms": number(latency.p99 / 1e6),
            "latencyP999Ms": number(latency.p999 / 1e6), "latencyMaxMs": number(latency.max / 1e6),
            "diskBytesPerEvent": diskPerEvent.isEmpty ? .null : number(Int(median(diskPerEvent))),
            "serverPeakRSSMiB": peakRSS.map { number(Double($0) / 1_048_576) } ?? .null,
            "samples": [
                "publish": .array(publishOne.map { number(Int($0)) }),
                "publishParallel": .array(publishMany.map { number(Int($0)) }),
                "replay": .array(replay.map { number(Int($0)) }),
                "latencyP99Ms": .array(latencies.map { number($0.p99 / 1e6) }),
            ],
        ]
        print("""

            Telex benchmark: \(events) events of ~\(Int(averageJSON)) B JSON, codec \(codec)\(codec == .zlib ? " level \(level)" : ""), \
            batches of \(batch), \(window * batch) events in flight, server fsync \(serverFsync); medians of \(runs)

            | workload | result |
            |---|---|
            | publish, 1 connection | \(Int(median(publishOne))) ev/s (\(String(format: "%.1f", median(publishOne) * megabytes)) MB/s of JSON) |
            | publish, \(connections) connections | \(Int(median(publishMany))) ev/s (\(String(format: "%.1f", median(publishMany) * megabytes)) MB/s of JSON) |
            | replay into decoded events | \(Int(median(replay))) ev/s |
            | publish→delivery latency at \(rate) ev/s | p50 \(ms(latency.p50)) ms, p99 \(ms(latency.p99)) ms, p99.9 \(ms(latency.p999)) ms, max \(ms(latency.max)) ms |
            | disk bytes per event | \(diskPerEvent.isEmpty ? "n/a (no --data-dir)" : String(Int(median(diskPerEvent)))) |
            | server peak RSS | \(peakRSS.map { String(format: "%.1f MiB", Double($0) / 1_048_576) } ?? "n/a (no --server-pid)") |

            """)
        let json = summary.serialized()
        print(String(decoding: json, as: UTF8.self))
        if let jsonOut { try Data(json).write(to: URL(fileURLWithPath: jsonOut)) }
    }

    /// Publishes all records to `topic`, split across `clients` connections; returns events per second.
    func publish(_ records: [Record], topic: String, clients: Int, configuration: ClientConfiguration) async throws -> Double {
        try await withClients(clients, configuration: configuration) { connected in
            let share = (records.count + clients - 1) / clients
            let clock = ContinuousClock()
            let started = clock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, client) in connected.enumerated() {
                    let slice = Array(records[min(records.count, index * share)..<min(records.count, (index + 1) * share)])
                    group.addTask { _ = try await client.publish(slice, to: topic) }
                }
                try await group.waitForAll()
            }
            return Double(records.count) / (clock.now - started).seconds
        }
    }

    /// Replays `topic` from the beginning into decoded records; returns events per second.
    func replayRate(topic: String, expected: Int, configuration: ClientConfiguration) async throws -> Double {
        let (count, seconds) = try await TelexClient.withClient(configuration: configuration) { client in
            try await client.connect()
            let clock = ContinuousClock()
            let started = clock.now
            var count = 0
            var bytes = 0
            try await client.withSubscription(topic, from: .beginning, untilCaughtUp: true) { subscription in
                for try await delivered in subscription {
                    count += 1
                    bytes &+= delivered.record.value.readableBytes &+ delivered.record.key.readableBytes
                }
            }
            return (count, (clock.now - started).seconds)
        }
        guard count == expected else {
            throw TelexError(.internalError, "replay of \(topic) returned \(count) events, expected \(expected)")
        }
        return Double(count) / seconds
    }

    struct LatencyResult {
        var p50: Double
        var p99: Double
        var p999: Double
        var max: Double
        var count: Int
    }

    /// Publishes single-event batches at `rate` for `duration` while a subscriber on another connection records
    /// publish→delivery time of each event in an HdrHistogram (nanoseconds).
    func latencyRun(_ records: [Record], topic: String, configuration: ClientConfiguration) async throws -> LatencyResult {
        var single = configuration
        single.maxBatchRecords = 1
        return try await withClients(2, configuration: single) { clients in
            try await latencyRun(records, topic: topic, publisher: clients[0], consumer: clients[1])
        }
    }

    private func latencyRun(_ records: [Record], topic: String, publisher: TelexClient, consumer: TelexClient) async throws
        -> LatencyResult
    {
        // Create the topic, then subscribe from its end so only timed events are measured.
        _ = try await publisher.publish([records[0]], to: topic)
        let subscription = try await consumer.subscribe(topic, from: .end)
        let total = Int(Double(rate) * duration)
        let receiving = Task { () throws -> Histogram<UInt64> in
            var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
            var received = 0
            for try await delivered in subscription {
                let now = DispatchTime.now().uptimeNanoseconds
                guard let sent = delivered.record.header("bench-sent-ns").flatMap(UInt64.init) else { continue }
                _ = histogram.record(now - sent)
                received += 1
                if received >= total { break }
            }
            return histogram
        }
        let interval = 1_000_000_000 / UInt64(rate)
        let start = DispatchTime.now().uptimeNanoseconds
        // Each ack is awaited by its own child task, so its time is taken when it arrives, not when it is read.
        var ackTimes = try await withThrowingTaskGroup(of: Double.self) { acks in
            for index in 0..<total {
                let due = start + UInt64(index) * interval
                let now = DispatchTime.now().uptimeNanoseconds
                // Sleep, not spin: on two cores a spinning publisher would steal the broker's CPU.
                if due > now { try await Task.sleep(nanoseconds: due - now) }
                var record = records[(index + 1) % records.count]
                record.headers.append(RecordHeader(name: "bench-sent-ns", value: String(DispatchTime.now().uptimeNanoseconds)))
                let sentAt = DispatchTime.now().uptimeNanoseconds
                let prepared = try await publisher.prepare([record], topic: topic)
                let pending = try await publisher.send(prepared[0])
                acks.addTask {
                    _ = try await pending.ack()
                    return Double(DispatchTime.now().uptimeNanoseconds - sentAt)
                }
            }
            var times: [Double] = []
            for try await time in acks { times.append(time) }
            return times
        }
        ackTimes.sort()
        // The 30 s limit ends the wait even if deliveries stop: cancelling the receiving task ends its iteration.
        let timeout = Task {
            try await Task.sleep(nanoseconds: 30_000_000_000)
            receiving.cancel()
        }
        let histogram = try await receiving.value
        timeout.cancel()
        guard histogram.totalCount >= UInt64(total) else {
            throw TelexError(.timeout, "latency subscriber received \(histogram.totalCount) of \(total) events in 30 s")
        }
        await subscription.cancel()
        log("publish→ack latency: p50 \(ms(ackTimes[ackTimes.count / 2])) ms, p99 \(ms(ackTimes[ackTimes.count * 99 / 100])) ms")
        return LatencyResult(
            p50: Double(histogram.valueAtPercentile(50)), p99: Double(histogram.valueAtPercentile(99)),
            p999: Double(histogram.valueAtPercentile(99.9)), max: Double(histogram.max), count: Int(histogram.totalCount))
    }

    /// Round-trip times of 2,000 sequential PINGs, in nanoseconds.
    func pingRoundTrips(configuration: ClientConfiguration) async throws -> (p50: Double, p99: Double) {
        var samples = try await TelexClient.withClient(configuration: configuration) { client in
            var samples: [Double] = []
            for _ in 0..<2000 {
                let duration = try await client.ping()
                samples.append(duration.seconds * 1e9)
            }
            return samples
        }
        samples.sort()
        return (samples[samples.count / 2], samples[samples.count * 99 / 100])
    }

    func diskBytes(_ dataDir: String, topic: String) -> Int {
        let directory = dataDir + "/topics/" + topic
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasSuffix(".log") || $0.hasSuffix("index") }.reduce(0) { total, name in
            let size = (try? FileManager.default.attributesOfItem(atPath: directory + "/" + name)[.size] as? NSNumber)?.intValue ?? 0
            return total + size
        }
    }

    func peakRSSBytes(_ pid: Int) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            let kilobytes = line.split(separator: " ").compactMap { Int($0) }.first
            return kilobytes.map { $0 * 1024 }
        }
        return nil
    }

    func median(_ values: [Double]) -> Double { Stats.median(values) }

    func ms(_ nanoseconds: Double) -> String { String(format: "%.3f", nanoseconds / 1e6) }

    func log(_ message: String) { printError("telex-bench: " + message) }
}

extension Duration {
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

/// Runs `count` clients for the duration of `body`.
func withClients<Result: Sendable>(
    _ count: Int, configuration: ClientConfiguration, _ body: ([TelexClient]) async throws -> Result
) async throws -> Result {
    let clients = (0..<count).map { _ in TelexClient(configuration: configuration) }
    return try await withThrowingTaskGroup(of: Void.self, returning: Result.self) { group in
        for client in clients { group.addTask { await client.run() } }
        defer { group.cancelAll() }
        for client in clients { try await client.connect() }
        return try await body(clients)
    }
}
