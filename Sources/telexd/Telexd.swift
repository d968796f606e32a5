import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import TelexConsole
import TelexServer
import TelexStorage

/// `telexd`: the Telex broker, `telexd inspect` for an offline dump of a data directory, `telexd verify` to check one.
@main
struct Telexd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "telexd",
        abstract: "The Telex broker for newsroom events.",
        discussion: """
            Runs with no arguments: listens on 127.0.0.1:7420 and keeps data in ./telex-data.
            Every option can also come from a TELEX_* environment variable (flags win).

            Examples:
              telexd
              telexd --port 7500 --data-dir /var/lib/telex --fsync interval:200
              telexd --host 0.0.0.0 --tls-cert server.pem --tls-key server.key
              TELEX_RETENTION_HOURS=72 telexd
              telexd inspect ./telex-data | jq .
              telexd verify ./telex-data
            """,
        subcommands: [Serve.self, Inspect.self, Verify.self, Users.self, Restore.self],
        defaultSubcommand: Serve.self)
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Run the broker (the default).")

    @Option(help: "Address to listen on. Env TELEX_HOST. Default 127.0.0.1.")
    var host: String?
    @Option(help: "TCP port (0 picks a free one). Env TELEX_PORT. Default 7420.")
    var port: Int?
    @Option(name: .customLong("data-dir"), help: "Data directory, created if missing. Env TELEX_DATA_DIR. Default ./telex-data.")
    var dataDirectory: String?
    @Option(help: "always | interval:MS | never. Env TELEX_FSYNC. Default always (ack only after fsync).")
    var fsync: String?
    @Option(name: .customLong("max-frame-bytes"), help: "Largest accepted frame. Env TELEX_MAX_FRAME_BYTES. Default 8388608.")
    var maxFrameBytes: Int?
    @Option(name: .customLong("segment-bytes"), help: "Roll segments at this size. Env TELEX_SEGMENT_BYTES. Default 134217728.")
    var segmentBytes: Int?
    @Option(name: .customLong("retention-hours"), help: "Delete segments older than this. Env TELEX_RETENTION_HOURS. Default: keep forever.")
    var retentionHours: Double?
    @Option(name: .customLong("retention-bytes"), help: "Keep each topic under this size. Env TELEX_RETENTION_BYTES. Default: no limit.")
    var retentionBytes: Int?
    @Flag(name: .customLong("no-key-index"), help: "Keep no key index (latest-version replay and history then find nothing); for measuring its cost.")
    var noKeyIndex = false
    @Option(name: .customLong("key-cache-bytes"), help: "Bytes of sealed segments' key tables each topic keeps in memory for history and latest queries. Env TELEX_KEY_CACHE_BYTES. Default 8388608.")
    var keyCacheBytes: Int?
    @Option(name: .customLong("create-topics"), help: "Whether publishing creates topics: true|false. Env TELEX_CREATE_TOPICS. Default true.")
    var createTopics: Bool?
    @Option(name: .customLong("auth-token"), help: "Require this token in HELLO. Env TELEX_AUTH_TOKEN. Default: none.")
    var authToken: String?
    @OptionGroup var auth: AuthOptions
    @Option(name: .customLong("log-level"), help: "trace|debug|info|notice|warning|error. Env TELEX_LOG_LEVEL. Default info.")
    var logLevel: String?
    @OptionGroup(title: "Limits") var limits: LimitOptions
    @OptionGroup var files: FileOptions
    @OptionGroup var tls: TLSOptions
    @OptionGroup(title: "Metrics") var metrics: MetricsOptions
    @OptionGroup(title: "Compaction") var compaction: CompactionOptions
    @OptionGroup(title: "Archive") var archive: ArchiveOptions
    @OptionGroup(title: "Console") var console: ConsoleOptions

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        func setting<T>(_ flag: T?, _ name: String, _ parse: (String) -> T?) throws -> T? {
            try environmentSetting(flag, name, environment, parse)
        }
        var log = LogConfiguration()
        if let fsyncText = try setting(fsync, "TELEX_FSYNC", { $0 }) {
            guard let policy = FsyncPolicy(parsing: fsyncText) else {
                throw ValidationError("fsync '\(fsyncText)' is not always, never or interval:MS")
            }
            log.fsync = policy
        }
        if let bytes = try setting(segmentBytes, "TELEX_SEGMENT_BYTES", { Int($0) }) {
            guard bytes >= 4096, bytes <= Int(Int32.max) else { throw ValidationError("segment bytes must be 4096...2147483647") }
            log.segmentBytes = bytes
        }
        if let hours = try setting(retentionHours, "TELEX_RETENTION_HOURS", { Double($0) }) {
            log.retentionMilliseconds = Int64(hours * 3_600_000)
        }
        log.retentionBytes = try setting(retentionBytes, "TELEX_RETENTION_BYTES", { Int($0) })
        log.indexKeys = !noKeyIndex
        if let bytes = try setting(keyCacheBytes, "TELEX_KEY_CACHE_BYTES", { Int($0) }) {
            guard bytes >= 0 else { throw ValidationError("key cache bytes must not be negative") }
            log.keyTableCacheBytes = bytes
        }
        let openFileLimit = try files.apply(to: &log, environment: environment)
        var configuration = ServerConfiguration(log: log)
        configuration.host = try setting(host, "TELEX_HOST", { $0 }) ?? configuration.host
        configuration.port = try setting(port, "TELEX_PORT", { Int($0) }) ?? configuration.port
        configuration.dataDirectory = try setting(dataDirectory, "TELEX_DATA_DIR", { $0 }) ?? configuration.dataDirectory
        configuration.maxFrameSize = try setting(maxFrameBytes, "TELEX_MAX_FRAME_BYTES", { Int($0) }) ?? configuration.maxFrameSize
        guard (1024...Int(Int32.max)).contains(configuration.maxFrameSize) else {
            throw ValidationError("max frame bytes must be 1024...\(Int32.max), not \(configuration.maxFrameSize)")
        }
        configuration.allowTopicCreation = try setting(createTopics, "TELEX_CREATE_TOPICS", { Bool($0) }) ?? true
        configuration.authToken = try setting(authToken, "TELEX_AUTH_TOKEN", { $0 })
        auth.apply(to: &configuration)
        configuration.limits = try limits.serverLimits(environment: environment)
        try tls.apply(to: &configuration, environment: environment)
        try compaction.apply(to: &configuration, environment: environment)
        let allowPlaintext = try tls.allowsPlaintext(environment: environment)
        let metricsAddress = try metrics.apply(
            to: &configuration, allowPlaintext: allowPlaintext, environment: environment)
        let consoleConfiguration = try console.configuration(
            tls: configuration.tls, allowPlaintext: allowPlaintext, environment: environment)
        let levelText = try setting(logLevel, "TELEX_LOG_LEVEL", { $0 }) ?? "info"
        guard let level = Logger.Level(rawValue: levelText) else { throw ValidationError("unknown log level '\(levelText)'") }

        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "telexd")
        if let fault = TestFault.requested {
            guard TestFault.active != nil else { throw ValidationError("TELEX_TEST_FAULT='\(fault)' is not a test fault (ack-before-write)") }
            logger.critical("TEST FAULT \(fault) ENABLED by TELEX_TEST_FAULT: acknowledged publishes can be lost; for Scripts/crash-test.sh only")
        }
        openFileLimit?.log(to: logger)
        // Without --metrics-address nothing is bootstrapped and every metric is a no-op.
        let registry = metricsAddress.map { _ in MetricsOptions.bootstrapPrometheus() }
        let serverBox = ServerBox()
        let archived = try await archive.prepare(
            &configuration, server: serverBox, environment: environment, logger: logger)
        let server = TelexServer(configuration: configuration, logger: logger)
        serverBox.value = server
        signal(SIGPIPE, SIG_IGN)
        // Every long-running part of telexd is a Service in this one group: it starts them together, and on
        // SIGTERM or SIGINT shuts them down gracefully in reverse order (the broker last: it quiesces, fsyncs
        // and closes its logs, then run() returns). The metrics endpoint and the console, when enabled, are among them.
        var services: [any Service] = [server]
        if let address = metricsAddress, let registry {
            // After the broker in the list, so it stops first.
            services.append(MetricsEndpoint(host: address.host, port: address.port, tls: configuration.tls,
                                            registry: registry, server: server, logger: logger))
        }
        if let consoleConfiguration {
            // After the broker in the list, so it stops first.
            services.append(ConsoleEndpoint(
                configuration: consoleConfiguration, tls: configuration.tls, server: server,
                data: BrokerConsoleData(server: server, configuration: consoleConfiguration, logger: logger),
                logger: logger))
        }
        // After the broker: they wait for its store, and stop before it.
        services += archived.services
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: services.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            cancellationSignals: [],
            logger: logger))
        let hangup = reloadOnHangup(server, logger: logger)
        defer { hangup.cancel() }
        do {
            try await group.run()
        } catch {
            logger.critical("could not start, or stopped on an error", metadata: ["error": "\(error)"])
            try? await archived.client?.shutdown()
            throw ExitCode(1)
        }
        try? await archived.client?.shutdown()
    }
}

struct Inspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print every stored batch of a data directory as JSON Lines (offline; the broker may be stopped).",
        discussion: "Example: telexd inspect ./telex-data --topic news.world | jq 'select(.crcValid == false)'")

    @Argument(help: "The data directory.")
    var dataDirectory: String = "./telex-data"
    @Option(help: "Only this topic.")
    var topic: String?
    @OptionGroup var source: ArchiveSourceOptions

    func run() async throws {
        if try await source.withRestoredCopy(command: "inspect", { try dump($0) }) == nil { try dump(dataDirectory) }
    }

    private func dump(_ dataDirectory: String) throws {
        do {
            try StorageInspector.dump(dataDirectory: dataDirectory, topic: topic) { print($0) }
        } catch {
            FileHandle.standardError.write(Data("telexd inspect: \(error.message)\n".utf8))
            throw ExitCode(1)
        }
    }
}

/// A flag's value, or else the environment variable `name` parsed, or nil when neither is set. A variable that does
/// not parse is a `ValidationError` naming it.
func environmentSetting<T>(
    _ flag: T?, _ name: String, _ environment: [String: String], _ parse: (String) -> T?
) throws -> T? {
    if let flag { return flag }
    guard let raw = environment[name] else { return nil }
    guard let value = parse(raw) else { throw ValidationError("\(name)=\(raw) is not a valid value") }
    return value
}
