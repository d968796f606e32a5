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
    @Option(help: "Seed articles for the generated corpus.") var seeds = "seeds/articles.jsonl"
    @Option(help: "The generated corpus: realistic (compresses like real articles) or easy (issues 5-12's, built from the seeds' sentences).")
    var corpusStyle: Corpus.Style = .realistic
    @Option(help: "A JSON Lines file to publish instead of the generated corpus: each line one record value, as is (cycled if shorter than --events).")
    var corpus: String?
    @Option(help: "The dotted field of each --corpus line that is its key (empty when absent).") var keyField = "data.uri"
    @Option(help: "The broker's data directory, to measure bytes on disk per event (and fdatasync there).") var dataDir: String?
    @Option(help: "The broker's process id, to read its peak RSS (VmHWM).") var serverPid: Int?
    @Option(help: "The broker's fsync policy, as its startup line reports it.") var serverFsync = "unknown"
    @Option(help: "Write the JSON summary to this file too.") var jsonOut: String?
    @Flag(help: "Skip the parallel publish and latency runs (for profiling publish and replay).") var publishAndReplayOnly = false
    @Flag(help: "Run only the latency workload (bench.sh's second broker, with another fsync policy).") var latencyOnly = false

    func validate() throws {
        guard events > 0, batch > 0, runs > 0, rate > 0, duration > 0 else {
            throw ValidationError("--events, --batch, --runs, --rate and --duration must be positive")
        }
        guard !(publishAndReplayOnly && latencyOnly) else {
            throw ValidationError("--publish-and-replay-only and --latency-only exclude each other")
        }
    }

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

        // A latency-only run sends rate x duration events (plus the one that creates the topic): build no more.
        let count = latencyOnly ? min(events, Int(Double(rate) * duration) + 1) : events
        let corpus = try self.corpus.map { try Corpus(file: $0, keyField: keyField, count: count) }
            ?? Corpus(seedsPath: seeds, count: count, style: corpusStyle)
        let corpusName = self.corpus ?? "generated, \(corpusStyle.rawValue)"
        let averageJSON = Double(corpus.jsonBytes) / Double(count)
        let floorDirectory = dataDir ?? FileManager.default.temporaryDirectory.path
        let floors = try Floors.measure(corpus: corpus, batch: batch, level: level, implementation: implementation,
                                        directory: floorDirectory)
        log("corpus (\(corpusName)): \(count) events, ~\(Int(averageJSON)) bytes of JSON, compresses "
            + "\(String(format: "%.2f", floors.ratio)):1 at level \(level) in \(batch)-event batches"
            + (corpus.distinctEvents < count ? " (\(corpus.distinctEvents) distinct events, cycled)" : ""))
        log("floors: fdatasync of one \(batch)-event batch in \(floorDirectory): p50 \(ms(floors.fdatasyncP50)) ms, "
            + "p99 \(ms(floors.fdatasyncP99)) ms; \(implementation) level \(level) on one core: compress "
            + "\(Int(floors.compressMBPerSecond)) MB/s, inflate \(Int(floors.inflateMBPerSecond)) MB/s")
        let tag = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let pingFloor = try await pingRoundTrips(configuration: configuration)
        log("PING round trip: p50 \(ms(pingFloor.p50)) ms, p99 \(ms(pingFloor.p99)) ms (the floor under every latency)")

        var publishOne: [Double] = []
        var publishMany: [Double] = []
        var replay: [Double] = []
        var latencies: [LatencyResult] = []
        var diskPerEvent: [Double] = []
        for run in 1...runs {
            if !latencyOnly {
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
            }
            let latency = try await latencyRun(corpus.records, topic: "bench.\(tag).latency-\(run)", configuration: configuration)
            latencies.append(latency)
            log("run \(run): publish→delivery at \(rate) ev/s (from intended send times): \(describe(latency.delivery))")
            log("run \(run): publish→ack: \(describe(latency.ack))")
            log("run \(run): the publisher's own lateness (intended time → send returned): \(describe(latency.send))")
        }
        let peakRSS = serverPid.flatMap(peakRSSBytes)
        let delivery = Percentiles.median(latencies.map(\.delivery))
        let ack = Percentiles.median(latencies.map(\.ack))
        let megabytes = averageJSON / 1_000_000
        func number(_ value: Int) -> JSONValue { .integer(Int64(value)) }
        func number(_ value: Double) -> JSONValue { value.isFinite ? .double(value) : .null }
        func optional(_ values: [Double], _ transform: (Double) -> JSONValue) -> JSONValue {
            values.isEmpty ? .null : transform(median(values))
        }
        func milliseconds(_ values: [Double]) -> JSONValue { .array(values.map { number($0 / 1e6) }) }
        let summary: JSONValue = [
            "events": number(events), "runs": number(runs), "codec": .string(codec.description),
            "zlibLevel": number(Int(level)), "batch": number(batch), "window": number(window),
            "eventsInFlight": number(window * batch), "connections": number(connections), "serverFsync": .string(serverFsync),
            "corpus": .string(corpusName), "corpusDistinctEvents": number(corpus.distinctEvents),
            "averageEventJSONBytes": number(Int(averageJSON)), "corpusCompressionRatio": number(floors.ratio),
            "floorFdatasyncP50Ms": number(floors.fdatasyncP50 / 1e6), "floorFdatasyncP99Ms": number(floors.fdatasyncP99 / 1e6),
            "floorCodec": .string(implementation.rawValue),
            "floorCompressMBPerSecond": number(floors.compressMBPerSecond),
            "floorInflateMBPerSecond": number(floors.inflateMBPerSecond),
            "publishEventsPerSecond": optional(publishOne) { number(Int($0)) },
            "publishMBPerSecond": optional(publishOne) { number(round($0 * megabytes * 10) / 10) },
            "publishParallelEventsPerSecond": optional(publishMany) { number(Int($0)) },
            "publishParallelMBPerSecond": optional(publishMany) { number(round($0 * megabytes * 10) / 10) },
            "replayEventsPerSecond": optional(replay) { number(Int($0)) },
            "pingP50Ms": number(pingFloor.p50 / 1e6), "pingP99Ms": number(pingFloor.p99 / 1e6),
            "latencyRate": number(rate), "latencySeconds": number(duration), "latencyFromIntendedSendTime": true,
            "latencyP50Ms": optional(latencies.map(\.delivery.p50)) { number($0 / 1e6) },
            "latencyP99Ms": optional(latencies.map(\.delivery.p99)) { number($0 / 1e6) },
            "latencyP999Ms": optional(latencies.map(\.delivery.p999)) { number($0 / 1e6) },
            "latencyMaxMs": optional(latencies.map(\.delivery.max)) { number($0 / 1e6) },
            "ackP50Ms": optional(latencies.map(\.ack.p50)) { number($0 / 1e6) },
            "ackP99Ms": optional(latencies.map(\.ack.p99)) { number($0 / 1e6) },
            "ackP999Ms": optional(latencies.map(\.ack.p999)) { number($0 / 1e6) },
            "ackMaxMs": optional(latencies.map(\.ack.max)) { number($0 / 1e6) },
            "sendLatenessP50Ms": optional(latencies.map(\.send.p50)) { number($0 / 1e6) },
            "sendLatenessP99Ms": optional(latencies.map(\.send.p99)) { number($0 / 1e6) },
            "diskBytesPerEvent": optional(diskPerEvent) { number(Int($0)) },
            "diskBytesPerJSONByte": optional(diskPerEvent) { number($0 / averageJSON) },
            "serverPeakRSSMiB": peakRSS.map { number(Double($0) / 1_048_576) } ?? .null,
            "samples": [
                "publish": .array(publishOne.map { number(Int($0)) }),
                "publishParallel": .array(publishMany.map { number(Int($0)) }),
                "replay": .array(replay.map { number(Int($0)) }),
                "diskBytesPerEvent": .array(diskPerEvent.map { number(Int($0)) }),
                "latencyP99Ms": milliseconds(latencies.map(\.delivery.p99)),
                "ackP99Ms": milliseconds(latencies.map(\.ack.p99)),
            ],
        ]
        func throughput(_ values: [Double]) -> String {
            values.isEmpty ? "not run" : "\(Int(median(values))) ev/s (\(String(format: "%.1f", median(values) * megabytes)) MB/s of JSON)"
        }
        print("""

            Telex benchmark: \(events) events of ~\(Int(averageJSON)) B JSON (\(corpusName), \
            \(String(format: "%.2f", floors.ratio)):1 at level \(level)), codec \(codec)\(codec == .zlib ? " level \(level)" : ""), \
            batches of \(batch), \(window * batch) events in flight, server fsync \(serverFsync); medians of \(runs)

            | workload | result |
            |---|---|
            | publish, 1 connection | \(throughput(publishOne)) |
            | publish, \(connections) connections | \(throughput(publishMany)) |
            | replay into decoded events | \(replay.isEmpty ? "not run" : "\(Int(median(replay))) ev/s") |
            | publish→delivery at \(rate) ev/s, from intended send times | \(latencies.isEmpty ? "not run" : describe(delivery)) |
            | publish→ack at \(rate) ev/s, from intended send times | \(latencies.isEmpty ? "not run" : describe(ack)) |
            | disk bytes per event | \(diskPerEvent.isEmpty ? "n/a (no --data-dir or not run)" : String(format: "%.0f (%.3f x the JSON)", median(diskPerEvent), median(diskPerEvent) / averageJSON)) |
            | server peak RSS | \(peakRSS.map { String(format: "%.1f MiB", Double($0) / 1_048_576) } ?? "n/a (no --server-pid)") |

            """)
        let json = summary.serialized()
        print(String(decoding: json, as: UTF8.self))
        if let jsonOut { try Data(json).write(to: URL(fileURLWithPath: jsonOut)) }
    }

    func describe(_ latency: Percentiles) -> String {
        "p50 \(ms(latency.p50)) ms, p99 \(ms(latency.p99)) ms, p99.9 \(ms(latency.p999)) ms, max \(ms(latency.max)) ms"
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

    /// Publishes single-event batches at `rate` for `duration` while a subscriber on another connection records
    /// each event's publish→delivery time (see `LatencyRun`).
    func latencyRun(_ records: [Record], topic: String, configuration: ClientConfiguration) async throws -> LatencyResult {
        var single = configuration
        single.maxBatchRecords = 1
        // The same events in flight as the publish runs (256): a window of 4 single-event batches would cap the
        // rate at 4 per ack round trip, and the schedule, measured from intended send times, would show it.
        single.publishWindow = window * batch
        return try await withClients(2, configuration: single) { clients in
            try await LatencyRun(rate: rate, duration: duration)
                .run(records, topic: topic, publisher: clients[0], consumer: clients[1])
        }
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
