import ArgumentParser
import Foundation
import TelexCLI
import TelexClient
import TelexEvents
import TelexProtocol

@main
struct TelexAdmin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "telex-admin",
        abstract: "Inspect and manage a running Telex broker (admin principals only).",
        discussion: """
            Prints a table, or JSON Lines with --json. The broker refuses principals without "admin": true in its
            users file (NOT_AUTHORIZED); without authentication, or with the shared --auth-token, everyone is admin.

            Examples:
              telex-admin info
              telex-admin topics 'news.>'
              telex-admin consumers search-indexer --json
              telex-admin reset-consumer search-indexer --to beginning --topic news.world
              telex-admin reset-consumer search-indexer --to 2024-03-06T08:00:00Z
              telex-admin delete-topic news.test --yes
              telex-admin purge urn:newsml:example.com:20240305:withdrawn --yes
            """,
        subcommands: [Info.self, Topics.self, Consumers.self, ResetConsumer.self, DeleteTopic.self, Purge.self])
}

/// Options every subcommand takes.
struct AdminOptions: ParsableArguments {
    @OptionGroup var connection: ConnectionOptions

    @Flag(help: "Print JSON Lines (one object per row) instead of a table.")
    var json = false
}

extension AdminOptions {
    /// How results are printed.
    var output: Output { Output(json: json) }

    /// Connects, runs `body`, and turns failures into a message and an exit status. `requestTimeout` replaces the
    /// client's default for commands that may run long on the broker.
    func run(
        _ tool: String, requestTimeout: Duration? = nil, _ body: @escaping @Sendable (TelexClient) async throws -> Void
    ) async throws {
        var configuration = try connection.configuration(defaultName: "telex-admin")
        if let requestTimeout { configuration.requestTimeout = requestTimeout }
        let exitCode = try await TelexClient.withClient(configuration: configuration) { client -> Int32 in
            do {
                try await client.connect()
            } catch {
                printError("telex-admin \(tool): \(describe(error))")
                return connectExitCode(error)
            }
            do {
                try await body(client)
                return 0
            } catch {
                printError("telex-admin \(tool): \(describe(error))")
                return (error as? TelexError)?.code == .notAuthorized ? 77 : 1
            }
        }
        if exitCode != 0 { throw ExitCode(exitCode) }
    }
}

/// Prints results as a table or as JSON Lines.
struct Output: Sendable {
    let json: Bool

    /// Prints `rows` as JSON Lines, or as a table with `headers` and `cells`.
    func print<Row: Encodable>(_ rows: [Row], headers: [String], cells: (Row) -> [String]) throws {
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            for row in rows { Swift.print(String(decoding: try encoder.encode(row), as: UTF8.self)) }
        } else {
            Swift.print(Table.render(headers: headers, rows: rows.map(cells)), terminator: "")
        }
    }
}

/// A plain text table: columns padded to their widest cell, numbers right-aligned.
enum Table {
    static func render(headers: [String], rows: [[String]]) -> String {
        let all = [headers] + rows
        let widths = headers.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        let numeric = headers.indices.map { column in
            !rows.isEmpty && rows.allSatisfy { Int64($0[column]) != nil || $0[column] == "-" }
        }
        var text = ""
        for row in all {
            let cells = row.indices.map { column -> String in
                let padding = String(repeating: " ", count: widths[column] - row[column].count)
                return numeric[column] ? padding + row[column] : row[column] + padding
            }
            text += cells.joined(separator: "  ").trimmingCharacters(in: .whitespaces) + "\n"
        }
        return text
    }
}

/// Times as RFC 3339 text, or nil for 0 ("none" or "unknown").
func timeText(_ milliseconds: Int64) -> String? {
    milliseconds == 0 ? nil : CloudEvent.formatTime(Date(timeIntervalSince1970: Double(milliseconds) / 1000))
}

struct Info: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the broker's version, uptime, address, fsync policy and data directory usage.")

    @OptionGroup var options: AdminOptions

    struct Row: Encodable {
        var server, version, address, fsync, dataDirectory: String
        var uptimeSeconds: Double
        var dataBytes: Int64
        var topics, connections: UInt32
    }

    func run() async throws {
        let output = options.output
        try await options.run("info") { client in
            let info = try await client.brokerInfo()
            let row = Row(
                server: info.serverName, version: info.version, address: info.address, fsync: info.fsyncPolicy,
                dataDirectory: info.dataDirectory, uptimeSeconds: Double(info.uptimeMilliseconds) / 1000,
                dataBytes: info.dataBytes, topics: info.topicCount, connections: info.connectionCount)
            if output.json {
                try output.print([row], headers: [], cells: { _ in [] })
            } else {
                let lines: [(String, String)] = [
                    ("server", "\(row.server) \(row.version)"), ("address", row.address),
                    ("uptime", Self.duration(info.uptimeMilliseconds)), ("fsync", row.fsync),
                    ("data directory", row.dataDirectory), ("data bytes", "\(row.dataBytes)"),
                    ("topics", "\(row.topics)"), ("connections", "\(row.connections)"),
                ]
                for (name, value) in lines { print(name.padding(toLength: 16, withPad: " ", startingAt: 0) + value) }
            }
        }
    }

    static func duration(_ milliseconds: Int64) -> String {
        let seconds = milliseconds / 1000
        let (days, hours, minutes) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60)
        return days > 0 ? "\(days)d \(hours)h \(minutes)m" : "\(hours)h \(minutes)m \(seconds % 60)s"
    }
}

struct Topics: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List topics with their offsets, size, segments and last append time.")

    @OptionGroup var options: AdminOptions

    @Argument(help: "Only topics matching this pattern (news.*, 'news.>').")
    var pattern: String?

    func validate() throws {
        if let pattern { do { try TopicName.validatePattern(pattern) } catch { throw ValidationError(error.message) } }
    }

    struct Row: Encodable {
        var topic: String
        var start, end, bytes: Int64
        var segments: UInt32
        var lastAppend: String?
    }

    func run() async throws {
        let (output, pattern) = (options.output, self.pattern)
        try await options.run("topics") { client in
            let rows = try await client.topics(matching: pattern).map {
                Row(topic: $0.topic, start: $0.startOffset, end: $0.endOffset, bytes: $0.bytes,
                    segments: $0.segmentCount, lastAppend: timeText($0.lastAppendTime))
            }
            try output.print(rows, headers: ["TOPIC", "START", "END", "BYTES", "SEGMENTS", "LAST APPEND"]) {
                [$0.topic, "\($0.start)", "\($0.end)", "\($0.bytes)", "\($0.segments)", $0.lastAppend ?? "-"]
            }
        }
    }
}

struct Consumers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List durable consumers' committed positions and lag, one row per consumer and topic.")

    @OptionGroup var options: AdminOptions

    @Argument(help: "Only this consumer.")
    var name: String?

    struct Row: Encodable {
        var consumer, topic: String
        var committed, end, lag: Int64
        var lastCommit: String?
    }

    func run() async throws {
        let (output, name) = (options.output, self.name)
        try await options.run("consumers") { client in
            let rows = try await client.consumerPositions(consumer: name).map {
                Row(consumer: $0.consumer, topic: $0.topic, committed: $0.committed, end: $0.endOffset, lag: $0.lag,
                    lastCommit: timeText($0.lastCommitTime))
            }
            try output.print(rows, headers: ["CONSUMER", "TOPIC", "COMMITTED", "END", "LAG", "LAST COMMIT"]) {
                [$0.consumer, $0.topic, "\($0.committed)", $0.end < 0 ? "-" : "\($0.end)", "\($0.lag)",
                 $0.lastCommit ?? "-"]
            }
        }
    }
}

struct ResetConsumer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set a durable consumer's committed position (the next offset it will read).",
        discussion: """
            --to beginning (the log start), end (only new events), an OFFSET (kept within the log) or an RFC 3339
            TIME (the first event stored at or after it). Without --topic, every topic the consumer has a position
            in. Refused while the consumer is subscribed anywhere, unless --force.
            """)

    @OptionGroup var options: AdminOptions

    @Argument(help: "The durable consumer name.")
    var name: String

    @Option(help: "beginning, end, an OFFSET or an RFC 3339 TIME.")
    var to: String

    @Option(help: "Only topics matching this pattern.")
    var topic: String?

    @Flag(help: "Reset even while the consumer is subscribed (its running subscriptions may commit over it).")
    var force = false

    var position: StartPosition? {
        if to == "beginning" { return .beginning }
        if to == "end" { return .end }
        if let offset = Int64(to) { return offset >= 0 ? .offset(offset) : nil }
        guard let time = CloudEvent.parseTime(to) else { return nil }
        return .timestamp(Int64((time.timeIntervalSince1970 * 1000).rounded()))
    }

    func validate() throws {
        if position == nil {
            throw ValidationError("--to must be beginning, end, a non-negative offset or an RFC 3339 time, not '\(to)'")
        }
        if let topic { do { try TopicName.validatePattern(topic) } catch { throw ValidationError(error.message) } }
    }

    struct Row: Encodable {
        var consumer, topic: String
        var previous: Int64?
        var committed: Int64
    }

    func run() async throws {
        let (output, name, topic, force, position) = (options.output, self.name, self.topic, self.force, self.position!)
        try await options.run("reset-consumer") { client in
            let rows = try await client.resetConsumer(name, to: position, topics: topic, force: force).map {
                Row(consumer: name, topic: $0.topic, previous: $0.previous < 0 ? nil : $0.previous, committed: $0.committed)
            }
            if rows.isEmpty && !output.json {
                printError("telex-admin reset-consumer: no topic to reset (give --topic for topics '\(name)' has no position in)")
            }
            try output.print(rows, headers: ["CONSUMER", "TOPIC", "PREVIOUS", "COMMITTED"]) {
                [$0.consumer, $0.topic, $0.previous.map(String.init) ?? "-", "\($0.committed)"]
            }
        }
    }
}

struct DeleteTopic: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Delete a topic and all its data; its subscriptions end.",
        discussion: "Asks for confirmation on a terminal unless --yes; not on a terminal, --yes is required.")

    @OptionGroup var options: AdminOptions

    @Argument(help: "The topic (no wildcards).")
    var topic: String

    @Flag(help: "Do not ask for confirmation.")
    var yes = false

    func validate() throws {
        do { try TopicName.validate(topic) } catch { throw ValidationError(error.message) }
    }

    func run() async throws {
        if !yes {
            guard isTerminal(STDIN_FILENO) else {
                throw ValidationError("standard input is not a terminal: give --yes to delete '\(topic)'")
            }
            FileHandle.standardError.write(Data("Delete topic '\(topic)' and all its data? Type the topic name to confirm: ".utf8))
            guard readLine() == topic else {
                printError("telex-admin delete-topic: not confirmed; nothing deleted")
                throw ExitCode(1)
            }
        }
        let (output, topic) = (options.output, self.topic)
        try await options.run("delete-topic") { client in
            try await client.deleteTopic(topic)
            if output.json {
                struct Row: Encodable { var topic: String; var deleted: Bool }
                try output.print([Row(topic: topic, deleted: true)], headers: [], cells: { _ in [] })
            } else {
                print("deleted topic \(topic)")
            }
        }
    }
}
