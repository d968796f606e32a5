import ArgumentParser
import Foundation
import Logging
import NIOCore
import TelexProtocol
import TelexStorage

/// `telex-bench log`: how fast one `TopicLog` takes batches of article events, per fsync policy and appender count.
///
/// Batches are built before the clock starts, so a run measures storage alone: validation, stamping, the write
/// and, under `always`, the group-committed fdatasync that `appendDurably` waits for.
struct StorageBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log",
        abstract: "Measure TopicLog append throughput with batches of realistic article events.",
        discussion: """
            Each run appends the same pre-built batches to a fresh log with `appendDurably`, spread over the \
            appenders, and is timed until the last append returns; closing the log (its final fsync) is timed \
            apart. At most \(maxDistinctBatches) distinct batches are built and then reused, which the log \
            cannot tell apart from new ones.
            """)

    /// Most distinct batches built up-front (256 MiB of events at the defaults); longer runs reuse them in turn.
    static let maxDistinctBatches = 2048

    @Option(help: "Directory to put the logs in (default: a new temporary directory, removed afterwards).")
    var directory: String?

    @Option(help: "Batch codec: zlib (level 1) or none.")
    var codec: BenchmarkCodec = .zlib

    @Option(help: "Uncompressed event bytes appended per run; accepts KiB, MiB and GiB suffixes.")
    var totalBytes: String = "1GiB"

    @Option(help: "Events appended per run, instead of --total-bytes.")
    var events: Int?

    @Option(help: "Events per batch.")
    var batchEvents: Int = 64

    @Option(help: "Average event size in bytes; each event is between 3/4 and 5/4 of it.")
    var eventBytes: Int = 2048

    @Option(name: .customLong("fsync"), help: "An fsync policy to measure: never, always, interval:N (repeatable).")
    var policies: [String] = ["never", "always"]

    @Option(name: .customLong("appenders"), help: "A number of concurrent appenders to measure (repeatable).")
    var appenderCounts: [Int] = [1, 8]

    @Flag(name: .customLong("no-key-index"), help: "Measure with the key index off (LogConfiguration.indexKeys false).")
    var noKeyIndex = false

    @Option(help: "Runs of each configuration; the table shows medians.")
    var runs: Int = 3

    func validate() throws {
        guard events.map({ $0 > 0 }) ?? (Self.parseByteCount(totalBytes).map { $0 > 0 } ?? false) else {
            throw ValidationError(
                "--total-bytes '\(totalBytes)' is not a positive byte count (e.g. 1GiB, 512MiB, 1000000)")
        }
        guard batchEvents > 0, eventBytes >= 256 else {
            throw ValidationError("--batch-events must be positive and --event-bytes at least 256")
        }
        for policy in policies where FsyncPolicy(parsing: policy) == nil {
            throw ValidationError("--fsync '\(policy)' is not always, never or interval:N")
        }
        guard appenderCounts.allSatisfy({ $0 > 0 }), runs > 0 else {
            throw ValidationError("--appenders and --runs must be positive")
        }
    }

    func run() async throws {
        let eventCount = events ?? max(1, Self.parseByteCount(totalBytes)! / eventBytes)
        let batchCount = (eventCount + batchEvents - 1) / batchEvents
        let workload = Workload.build(
            batchCount: batchCount, eventsPerBatch: batchEvents,
            lastBatchEvents: eventCount - (batchCount - 1) * batchEvents,
            eventBytes: eventBytes, codec: codec.codec, distinctLimit: Self.maxDistinctBatches)

        let root =
            directory
            ?? FileManager.default.temporaryDirectory
            .appendingPathComponent("telex-bench-log-\(UUID().uuidString)").path
        let removeRoot = directory == nil
        defer { if removeRoot { try? FileManager.default.removeItem(atPath: root) } }
        var logger = Logger(label: "telex.bench.log")
        logger.logLevel = .warning

        print("codec \(codec.rawValue), \(eventCount) events of ~\(eventBytes) B", terminator: "")
        print(" in \(batchCount) batches of \(batchEvents)")
        let ratio = Report.ratio(workload.recordBytes, workload.storedBytes)
        print(
            "per run: \(Report.mebibytes(workload.eventBytes)) MiB of events, "
                + "\(Report.mebibytes(workload.recordBytes)) MiB of records, "
                + "\(Report.mebibytes(workload.storedBytes)) MiB stored (\(ratio):1); "
                + "\(workload.distinct.count) distinct batches; directory \(root)")

        var rows: [(policy: String, appenders: Int, runs: [RunResult])] = []
        for policyText in policies {
            let policy = FsyncPolicy(parsing: policyText)!
            for appenders in appenderCounts {
                var results: [RunResult] = []
                for number in 1...runs {
                    let path = root + "/\(policy)-\(appenders)-\(number)".replacingOccurrences(of: ":", with: "_")
                    let result = try await Self.measure(
                        workload: workload, policy: policy, appenders: appenders, indexKeys: !noKeyIndex,
                        directory: path, logger: logger)
                    try? FileManager.default.removeItem(atPath: path)
                    let rate = Report.format(Double(workload.storedBytes) / result.appendSeconds / 1e6)
                    print(
                        "run \(number)/\(runs): \(policy) x\(appenders): \(rate) MB/s stored, "
                            + "close \(Report.format(result.closeSeconds, decimals: 3)) s")
                    results.append(result)
                }
                rows.append((policy.description, appenders, results))
            }
        }

        print("")
        print("medians of \(runs) run(s); MB = 10^6 bytes of stored batches; close = final fsync, not in the rates")
        let header = ["policy", "appenders", "batches/s", "events/s", "stored MB/s", "close s"]
        var table = [header]
        for row in rows {
            let seconds = Report.median(row.runs.map(\.appendSeconds))
            table.append([
                row.policy, "\(row.appenders)",
                Report.format(Double(workload.batchCount) / seconds, decimals: 0),
                Report.format(Double(workload.eventCount) / seconds, decimals: 0),
                Report.format(Double(workload.storedBytes) / seconds / 1e6),
                Report.format(Report.median(row.runs.map(\.closeSeconds)), decimals: 3),
            ])
        }
        let widths = header.indices.map { column in table.map { $0[column].count }.max()! }
        for line in table {
            print(
                line.indices.map { column in
                    column == 0
                        ? Report.pad(line[column], widths[column]) : Report.padLeft(line[column], widths[column])
                }.joined(separator: "  "))
        }
    }

    /// One run: a fresh log, every batch appended durably by `appenders` concurrent tasks, then closed.
    static func measure(
        workload: Workload, policy: FsyncPolicy, appenders: Int, indexKeys: Bool, directory: String, logger: Logger
    ) async throws -> RunResult {
        let log = try TopicLog(
            topic: "bench.log", directory: directory,
            configuration: LogConfiguration(fsync: policy, indexKeys: indexKeys), logger: logger)
        let clock = ContinuousClock()
        let start = clock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for appender in 0..<appenders {
                group.addTask {
                    var index = appender
                    while index < workload.batchCount {
                        _ = try await log.appendDurably(workload.batch(index))
                        index += appenders
                    }
                }
            }
            try await group.waitForAll()
        }
        let appended = clock.now
        try log.close()
        let closed = clock.now
        guard log.endOffset == Int64(workload.eventCount), log.sizeInBytes == workload.storedBytes else {
            throw TelexError(
                .internalError,
                "log holds \(log.endOffset) events in \(log.sizeInBytes) bytes; "
                    + "expected \(workload.eventCount) in \(workload.storedBytes)")
        }
        return RunResult(
            appendSeconds: Report.seconds(appended - start), closeSeconds: Report.seconds(closed - appended))
    }

    /// Parses `1GiB`, `512MiB`, `64KiB` or a plain number of bytes.
    static func parseByteCount(_ text: String) -> Int? {
        let units: [(String, Int)] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            return Int(text.dropLast(suffix.count)).map { $0 * scale }
        }
        return Int(text)
    }
}

extension StorageBenchmark {
    /// The codec batches are built with.
    enum BenchmarkCodec: String, ExpressibleByArgument, CaseIterable {
        case zlib
        case none

        var codec: Codec {
            switch self {
            case .zlib: .zlib
            case .none: .none
            }
        }
    }

    /// Timings of one run, in seconds.
    struct RunResult {
        var appendSeconds: Double
        var closeSeconds: Double
    }

    /// The batches one run appends, built once: `distinct` are used in turn for `batchCount` appends.
    struct Workload: Sendable {
        var distinct: [ByteBuffer]
        /// A shorter final batch when the event count is not a multiple of the batch size.
        var last: ByteBuffer
        var batchCount: Int
        var eventCount: Int
        /// Bytes of event JSON, records encoding (keys, headers, framing) and stored batches per run.
        var eventBytes: Int
        var recordBytes: Int
        var storedBytes: Int

        func batch(_ index: Int) -> ByteBuffer {
            index == batchCount - 1 ? last : distinct[index % distinct.count]
        }

        static func build(
            batchCount: Int, eventsPerBatch: Int, lastBatchEvents: Int, eventBytes: Int, codec: Codec,
            distinctLimit: Int
        ) -> Workload {
            var generator = ArticleEventGenerator(seed: 0x7E1E_2024)
            let compressor = BatchCompressor(level: 1)
            var sizes: [(event: Int, record: Int, stored: Int)] = []
            func makeBatch(events: Int) -> ByteBuffer {
                var builder = RecordBatchBuilder(reservingCapacity: events * (eventBytes + 128))
                var json = 0
                for _ in 0..<events {
                    let event = generator.next(averageBytes: eventBytes)
                    json += event.value.utf8.count
                    builder.append(
                        timestamp: event.timestamp, key: ByteBuffer(string: event.key),
                        headers: [
                            RecordHeader(name: "ce-type", value: event.type),
                            RecordHeader(name: "content-type", value: "application/cloudevents+json"),
                        ],
                        value: ByteBuffer(string: event.value))
                }
                let batch = builder.build(codec: codec, compressor: compressor)
                sizes.append((json, builder.uncompressedBytes, batch.readableBytes))
                return batch
            }
            let distinctCount = min(max(batchCount - 1, 1), distinctLimit)
            let distinct = (0..<distinctCount).map { _ in makeBatch(events: eventsPerBatch) }
            let last = makeBatch(events: lastBatchEvents)
            var totals = (event: 0, record: 0, stored: 0)
            for index in 0..<batchCount {
                let size = index == batchCount - 1 ? sizes[distinctCount] : sizes[index % distinctCount]
                totals.event += size.event
                totals.record += size.record
                totals.stored += size.stored
            }
            return Workload(
                distinct: distinct, last: last, batchCount: batchCount,
                eventCount: (batchCount - 1) * eventsPerBatch + lastBatchEvents,
                eventBytes: totals.event, recordBytes: totals.record, storedBytes: totals.stored)
        }
    }

    /// Makes CloudEvents-wrapped ninjs article events of varied English news text, so zlib ratios are honest.
    struct ArticleEventGenerator {
        private var state: UInt64
        private var number = 0

        init(seed: UInt64) { state = seed }

        private mutating func random() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE5_E9B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }

        private mutating func below(_ bound: Int) -> Int { Int(random() % UInt64(bound)) }

        private mutating func pick(_ words: [String]) -> String { words[below(words.count)] }

        private mutating func hex(_ digits: Int) -> String {
            String((0..<digits).map { _ in Self.hexDigits[below(16)] })
        }

        private mutating func sentence() -> String {
            var words: [String] = []
            for index in 0..<(6 + below(16)) {
                switch below(16) {
                case 0: words.append(pick(Self.names))
                case 1: words.append(pick(Self.places))
                case 2: words.append(String(below(index.isMultiple(of: 2) ? 100 : 10_000)))
                // Rarer words: news text has a long tail of vocabulary that zlib cannot predict.
                case 3, 4: words.append((0..<(2 + below(3))).map { _ in pick(Self.syllables) }.joined())
                default: words.append(pick(Self.words))
                }
            }
            let text = words.joined(separator: " ")
            return text.prefix(1).uppercased() + text.dropFirst() + (below(8) == 0 ? ", officials said." : ".")
        }

        /// The next event: `averageBytes` on average (between 3/4 and 5/4 of it), with its key, type and time.
        mutating func next(averageBytes: Int) -> (key: String, type: String, timestamp: Int64, value: String) {
            number += 1
            let target = averageBytes * 3 / 4 + below(averageBytes / 2 + 1)
            let desk = pick(Self.desks)
            let uri = "urn:telex:article:\(desk):\(hex(12))"
            let type = below(3) == 0 ? "article.created" : "article.updated"
            let timestamp = 1_709_712_000_000 + Int64(number) * 1_500 + Int64(below(1000))
            let seconds = timestamp / 1000
            let time =
                "2024-03-\(pad2(6 + Int(seconds / 86_400) % 20))T\(pad2(Int(seconds / 3600) % 24)):"
                + "\(pad2(Int(seconds / 60) % 60)):\(pad2(Int(seconds % 60)))Z"
            let headline = String(sentence().dropLast().prefix(90))
            let subjects = (0..<(1 + below(3))).map { _ in
                let subject = pick(Self.words)
                let code = 20_000_000 + below(1_000_000)
                return "{\"name\":\"\(subject)\",\"uri\":\"http://cv.iptc.org/newscodes/mediatopic/\(code)\"}"
            }.joined(separator: ",")
            var value =
                "{\"specversion\":\"1.0\",\"id\":\"\(hex(8))-\(hex(4))-5\(hex(3))-\(hex(4))-\(hex(12))\","
                + "\"source\":\"urn:telex:newsroom:\(desk)\",\"type\":\"\(type)\",\"subject\":\"\(uri)\","
                + "\"time\":\"\(time)\",\"datacontenttype\":\"application/json\","
                + "\"topic\":\"news.\(desk).\(pick(Self.places).lowercased())\","
                + "\"data\":{\"uri\":\"\(uri)\",\"type\":\"text\",\"version\":\"\(1 + below(9))\","
                + "\"versioncreated\":\"\(time)\","
                + "\"language\":\"en\",\"urgency\":\(1 + below(8)),\"headline\":\"\(headline)\","
                + "\"byline\":\"\(pick(Self.names)) \(pick(Self.names))\",\"subject\":[\(subjects)],\"body_text\":\""
            let closing = "\"}}"
            while value.utf8.count + closing.utf8.count < target {
                value += sentence() + (below(5) == 0 ? "\\n\\n" : " ")
            }
            return (uri, type, timestamp, value + closing)
        }

        private func pad2(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }

        static let hexDigits = Array("0123456789abcdef")
        static let syllables = [
            "ka", "ren", "mo", "lit", "sa", "vor", "ni", "tal", "pe", "ros", "gu", "dan", "fi", "mar", "lo", "ber",
            "tu", "sch", "ein", "ja", "kow", "ski", "zu", "ha", "nen", "qi", "ang", "ova", "el", "ric", "de", "ste",
            "in", "ion", "tra", "con", "ex", "pro", "ment", "ity",
        ]
        static let desks = ["china", "europe", "business", "sport", "politics", "culture", "science", "world"]
        static let names = [
            "Li", "Wang", "Schmidt", "Rossi", "Dubois", "Nowak", "Silva", "Okafor", "Haddad", "Tanaka", "Jensen",
            "Murphy",
            "Garcia", "Ivanova", "Kowalski", "Nguyen", "Andersson", "Moreau", "Fischer", "Bianchi",
        ]
        static let places = [
            "Harbin", "Berlin", "Brussels", "Lagos", "Oslo", "Madrid", "Warsaw", "Tokyo", "Nairobi", "Lisbon", "Geneva",
            "Chicago", "Manila", "Kyiv", "Athens", "Lima", "Dublin", "Seoul",
        ]
        static let words = [
            "the", "the", "the", "of", "of", "and", "and", "to", "to", "in", "in", "a", "a", "for", "on", "with",
            "said",
            "was", "were", "has", "have", "had", "will", "would", "after", "before", "during", "while", "from", "by",
            "at",
            "government", "minister", "ministry", "parliament", "election", "vote", "voters", "campaign", "party",
            "opposition", "coalition", "budget", "deficit", "inflation", "prices", "market", "markets", "shares",
            "stocks",
            "investors", "bank", "central", "interest", "rates", "economy", "growth", "exports", "imports", "trade",
            "tariffs", "company", "companies", "chief", "executive", "profit", "revenue", "quarter", "annual", "report",
            "police", "court", "judge", "trial", "ruling", "appeal", "law", "bill", "reform", "protest", "protesters",
            "strike", "union", "workers", "wages", "energy", "gas", "oil", "power", "climate", "emissions", "weather",
            "storm", "flood", "snow", "festival", "ice", "winter", "summer", "city", "capital", "region", "province",
            "border", "talks", "summit", "agreement", "deal", "sanctions", "security", "defence", "troops", "ceasefire",
            "hospital", "health", "vaccine", "patients", "doctors", "school", "students", "university", "research",
            "scientists", "study", "data", "technology", "software", "internet", "network", "mobile", "launch", "space",
            "match", "season", "league", "coach", "goal", "goals", "victory", "defeat", "championship", "final", "team",
            "players", "fans", "stadium", "record", "week", "month", "year", "Monday", "Tuesday", "Wednesday",
            "Thursday",
            "Friday", "Saturday", "Sunday", "officials", "spokesperson", "statement", "announced", "confirmed",
            "denied",
            "expected", "increase", "decrease", "percent", "million", "billion", "nearly", "about", "more", "less",
            "than", "new", "first", "last", "second", "local", "national", "international", "public", "private",
            "according", "sources", "reported", "warned", "agreed", "rejected", "plans", "plan", "proposal", "crisis",
        ]
    }
    /// Number formatting and statistics for the table.
    enum Report {
        static func seconds(_ duration: Duration) -> Double { Stats.seconds(duration) }

        static func median(_ values: [Double]) -> Double { Stats.median(values) }

        static func mebibytes(_ bytes: Int) -> String { format(Double(bytes) / Double(1 << 20), decimals: 1) }

        static func ratio(_ numerator: Int, _ denominator: Int) -> String {
            format(Double(numerator) / Double(max(denominator, 1)), decimals: 2)
        }

        static func format(_ value: Double, decimals: Int = 1) -> String { String(format: "%.\(decimals)f", value) }

        static func pad(_ text: String, _ width: Int) -> String {
            text + String(repeating: " ", count: max(0, width - text.count))
        }

        static func padLeft(_ text: String, _ width: Int) -> String {
            String(repeating: " ", count: max(0, width - text.count)) + text
        }
    }
}
