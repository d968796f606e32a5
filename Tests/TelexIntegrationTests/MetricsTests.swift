import Logging
import NIOCore
import NIOPosix
import Prometheus
import TelexClient
import TelexProtocol
import TelexServer
import Testing

@Suite("Metrics endpoint", .timeLimit(.minutes(1)))
struct MetricsEndpointTests {
    @Test("/metrics shows what was published and delivered, and a durable consumer's lag; /healthz answers")
    func scrape() async throws {
        let registry = PrometheusCollectorRegistry()
        var configuration = ServerConfiguration(port: 0, eventLoopThreads: 2)
        try await withTemporaryDirectory { directory in
            configuration.dataDirectory = directory
            var logger = Logger(label: "telex.test.metrics")
            logger.logLevel = .warning
            let server = TelexServer(configuration: configuration, logger: logger,
                                     metricsFactory: PrometheusMetricsFactory(registry: registry))
            try await server.start()
            let endpoint = MetricsEndpoint(host: "127.0.0.1", port: 0, registry: registry, server: server, logger: logger)
            let serving = Task { try await endpoint.run() }
            defer { serving.cancel() }
            do {
                #expect(await eventually { endpoint.localPort != nil })
                let port = try #require(endpoint.localPort)
                try await TelexClient.withClient(configuration: clientConfiguration(server)) { client in
                    try await client.connect()
                    _ = try await client.publish(records(0..<20), to: "news.world")
                    _ = try await client.publish(records(0..<5), to: "news.sport")
                    let subscription = try await client.subscribe("news.world", from: .beginning, consumer: "search-indexer")
                    #expect(try await collect(subscription, count: 8).map(\.offset) == Array(0..<8))
                    try await subscription.commit()
                    await subscription.cancel()

                    let response = try await httpRequest(port: port, path: "/metrics")
                    #expect(response.status == 200)
                    #expect(response.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
                    let exposition = try Exposition(parsing: response.body)
                    #expect(exposition.types["telex_published_events_total"] == "counter")
                    #expect(exposition.types["telex_consumer_lag"] == "gauge")
                    #expect(exposition.types["telex_fsync_duration_seconds"] == "histogram")
                    #expect(exposition.value("telex_published_events_total", ["topic": "news.world"]) == 20)
                    #expect(exposition.value("telex_published_events_total", ["topic": "news.sport"]) == 5)
                    #expect(exposition.value("telex_published_batches_total", ["topic": "news.world"]) == 1)
                    #expect((exposition.value("telex_delivered_events_total", ["topic": "news.world"]) ?? 0) >= 8)
                    #expect(exposition.value("telex_log_end_offset", ["topic": "news.world"]) == 20)
                    let consumer = ["consumer": "search-indexer", "topic": "news.world"]
                    #expect(exposition.value("telex_consumer_committed_offset", consumer) == 8)
                    #expect(exposition.value("telex_consumer_lag", consumer) == 12)  // end 20 − committed 8
                    #expect(exposition.value("telex_consumer_lag", consumer)
                        == exposition.value("telex_log_end_offset", ["topic": "news.world"])!
                            - exposition.value("telex_consumer_committed_offset", consumer)!)
                    #expect(exposition.value("telex_connections", [:]) == 1)
                    #expect(exposition.value("telex_subscriptions_active", [:]) == 0)
                    #expect((exposition.value("telex_fsync_duration_seconds_count", [:]) ?? 0) > 0)
                    #expect((exposition.value("telex_publish_ack_duration_seconds_count", [:]) ?? 0) == 2)
                    #expect(exposition.value("telex_fsync_duration_seconds_bucket", ["le": "+Inf"])
                        == exposition.value("telex_fsync_duration_seconds_count", [:]))
                }

                let health = try await httpRequest(port: port, path: "/healthz")
                #expect(health.status == 200)
                #expect(health.body == "ok\n")
                #expect(try await httpRequest(port: port, path: "/nothing").status == 404)
                #expect(try await httpRequest(port: port, path: "/metrics", method: "POST").status == 405)
            } catch {
                try? await server.shutdown()
                throw error
            }
            try await server.shutdown()
            serving.cancel()
            try await serving.value
        }
    }

    @Test("the exposition parser rejects what Prometheus would reject")
    func strictParser() throws {
        let good = """
            # HELP telex_x A help text with \\\\ and \\n.
            # TYPE telex_x gauge
            telex_x{a="quote \\" backslash \\\\ newline \\n",b="2"} 1.5
            telex_x{a="",} -Inf

            """
        let parsed = try Exposition(parsing: good)
        #expect(parsed.value("telex_x", ["a": "quote \" backslash \\ newline \n", "b": "2"]) == 1.5)
        #expect(parsed.value("telex_x", ["a": ""]) == -.infinity)
        for bad in [
            "telex_y 1\n",  // no TYPE
            "# TYPE telex_y gauge\ntelex_y{a=\"x} 1\n",  // unterminated value
            "# TYPE telex_y gauge\ntelex_y{a=\"\\t\"} 1\n",  // unknown escape
            "# TYPE telex_y gauge\ntelex_y 1",  // no final newline
            "# TYPE telex_y gauge\ntelex_y one\n",  // not a number
            "# TYPE telex_y gauge\n# TYPE telex_y gauge\ntelex_y 1\n",  // TYPE twice
            "# TYPE telex_y gauge\ntelex_y{1a=\"x\"} 1\n",  // bad label name
            "# TYPE telex_y gauge\ntelex_y{a=\"x\",a=\"y\"} 1\n",  // label twice
        ] {
            #expect(throws: Exposition.Invalid.self, "\(bad)") { try Exposition(parsing: bad) }
        }
    }
}

/// One HTTP/1.1 response, read to the connection's close.
struct HTTPResponse {
    var status: Int
    /// Header names lowercased.
    var headers: [String: String]
    var body: String
}

/// Sends one request with `Connection: close` over a plain TCP connection and reads the whole response.
func httpRequest(port: Int, path: String, method: String = "GET") async throws -> HTTPResponse {
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            }
        }
    let raw = try await channel.executeThenClose { inbound, outbound in
        try await outbound.write(ByteBuffer(string: "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"))
        var response = ByteBuffer()
        for try await var chunk in inbound { response.writeBuffer(&chunk) }
        return String(buffer: response)
    }
    guard let split = raw.range(of: "\r\n\r\n") else { throw Exposition.Invalid(line: 0, reason: "no end of headers in \(raw)") }
    let lines = raw[..<split.lowerBound].components(separatedBy: "\r\n")
    let statusParts = lines[0].split(separator: " ")
    guard statusParts.count >= 2, statusParts[0] == "HTTP/1.1", let status = Int(statusParts[1]) else {
        throw Exposition.Invalid(line: 0, reason: "bad status line \(lines[0])")
    }
    var headers: [String: String] = [:]
    for line in lines.dropFirst() {
        guard let colon = line.firstIndex(of: ":") else { throw Exposition.Invalid(line: 0, reason: "bad header \(line)") }
        headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    let body = String(raw[split.upperBound...])
    guard headers["content-length"] == "\(body.utf8.count)" else {
        throw Exposition.Invalid(line: 0, reason: "Content-Length \(headers["content-length"] ?? "-") for \(body.utf8.count) bytes")
    }
    return HTTPResponse(status: status, headers: headers, body: body)
}

/// A strict reader of the Prometheus text exposition format (0.0.4): `# HELP` and `# TYPE` lines, samples
/// `name{label="value",...} value [timestamp]` with only `\\`, `\"` and `\n` escapes in label values, every sample
/// after its family's TYPE, each TYPE once, no label twice, and a newline ending every line.
struct Exposition {
    struct Invalid: Error, CustomStringConvertible {
        var line: Int
        var reason: String
        var description: String { "line \(line): \(reason)" }
    }

    struct Sample {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    private(set) var types: [String: String] = [:]
    private(set) var samples: [Sample] = []

    /// The value of the one sample named `name` with exactly `labels`; nil if there is none.
    func value(_ name: String, _ labels: [String: String]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }

    init(parsing text: String) throws {
        guard text.isEmpty || text.hasSuffix("\n") else { throw Invalid(line: 0, reason: "the last line has no newline") }
        var helps: Set<String> = []
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().enumerated() {
            let number = index + 1
            if line.isEmpty { continue }
            if line.hasPrefix("#") {
                let parts = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false)
                guard parts.count >= 3, parts[0] == "#", parts[1] == "HELP" || parts[1] == "TYPE" else { continue }
                let name = String(parts[2])
                guard Self.isMetricName(name) else { throw Invalid(line: number, reason: "bad metric name '\(name)'") }
                if parts[1] == "TYPE" {
                    guard parts.count == 4, ["counter", "gauge", "histogram", "summary", "untyped"].contains(parts[3]) else {
                        throw Invalid(line: number, reason: "bad TYPE line")
                    }
                    guard types[name] == nil else { throw Invalid(line: number, reason: "second TYPE for \(name)") }
                    guard !samples.contains(where: { Self.family(of: $0.name, in: [name: ""]) != nil }) else {
                        throw Invalid(line: number, reason: "TYPE for \(name) after its samples")
                    }
                    types[name] = String(parts[3])
                } else {
                    guard helps.insert(name).inserted else { throw Invalid(line: number, reason: "second HELP for \(name)") }
                }
                continue
            }
            samples.append(try Self.sample(Array(line.utf8), line: number, types: types))
        }
    }

    /// The declared family a sample name belongs to (a histogram's `_bucket`, `_sum` and `_count` included).
    static func family(of name: String, in types: [String: String]) -> String? {
        if types[name] != nil { return name }
        for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) {
            let base = String(name.dropLast(suffix.count))
            if let type = types[base], type == "histogram" || (type == "summary" && suffix != "_bucket") { return base }
        }
        return nil
    }

    static func isMetricName(_ name: String) -> Bool {
        func isLetter(_ scalar: Unicode.Scalar) -> Bool {
            ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || scalar == "_" || scalar == ":"
        }
        guard let first = name.unicodeScalars.first, isLetter(first) else { return false }
        return name.unicodeScalars.allSatisfy { isLetter($0) || ("0"..."9").contains($0) }
    }

    static func isLabelName(_ name: String) -> Bool {
        !name.contains(":") && isMetricName(name)
    }

    private static func sample(_ bytes: [UInt8], line: Int, types: [String: String]) throws -> Sample {
        var position = 0
        func fail(_ reason: String) -> Invalid { Invalid(line: line, reason: reason) }
        func readName() -> String {
            let start = position
            while position < bytes.count, bytes[position] != UInt8(ascii: "{"), bytes[position] != UInt8(ascii: " "),
                bytes[position] != UInt8(ascii: "=")
            {
                position += 1
            }
            return String(decoding: bytes[start..<position], as: UTF8.self)
        }
        let name = readName()
        guard isMetricName(name) else { throw fail("bad metric name '\(name)'") }
        guard family(of: name, in: types) != nil else { throw fail("\(name) has no TYPE before it") }
        var labels: [String: String] = [:]
        if position < bytes.count, bytes[position] == UInt8(ascii: "{") {
            position += 1
            while true {
                guard position < bytes.count else { throw fail("unterminated label set") }
                if bytes[position] == UInt8(ascii: "}") {
                    position += 1
                    break
                }
                let label = readName()
                guard isLabelName(label) else { throw fail("bad label name '\(label)'") }
                guard position + 1 < bytes.count, bytes[position] == UInt8(ascii: "="), bytes[position + 1] == UInt8(ascii: "\"") else {
                    throw fail("expected =\" after \(label)")
                }
                position += 2
                var value: [UInt8] = []
                while true {
                    guard position < bytes.count else { throw fail("unterminated value of \(label)") }
                    let byte = bytes[position]
                    position += 1
                    if byte == UInt8(ascii: "\"") { break }
                    if byte == UInt8(ascii: "\\") {
                        guard position < bytes.count else { throw fail("dangling escape") }
                        switch bytes[position] {
                        case UInt8(ascii: "\\"): value.append(UInt8(ascii: "\\"))
                        case UInt8(ascii: "\""): value.append(UInt8(ascii: "\""))
                        case UInt8(ascii: "n"): value.append(UInt8(ascii: "\n"))
                        default: throw fail("unknown escape \\\(Character(UnicodeScalar(bytes[position])))")
                        }
                        position += 1
                    } else {
                        value.append(byte)
                    }
                }
                guard labels.updateValue(String(decoding: value, as: UTF8.self), forKey: label) == nil else {
                    throw fail("label \(label) twice")
                }
                guard position < bytes.count else { throw fail("unterminated label set") }
                if bytes[position] == UInt8(ascii: ",") {
                    position += 1
                } else if bytes[position] != UInt8(ascii: "}") {
                    throw fail("expected , or } after the value of \(label)")
                }
            }
        }
        guard position < bytes.count, bytes[position] == UInt8(ascii: " ") else { throw fail("expected a space before the value") }
        let fields = String(decoding: bytes[(position + 1)...], as: UTF8.self).split(separator: " ", omittingEmptySubsequences: false)
        guard (1...2).contains(fields.count) else { throw fail("expected a value and an optional timestamp") }
        let value: Double
        switch fields[0] {
        case "+Inf": value = .infinity
        case "-Inf": value = -.infinity
        case "NaN": value = .nan
        default:
            guard let number = Double(fields[0]), number.isFinite else { throw fail("bad value '\(fields[0])'") }
            value = number
        }
        if fields.count == 2, Int64(fields[1]) == nil { throw fail("bad timestamp '\(fields[1])'") }
        return Sample(name: name, labels: labels, value: value)
    }
}
