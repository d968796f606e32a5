import ArgumentParser
import Foundation
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import TelexArchive
import TelexS3
import TelexServer
import TelexStorage

/// Where the object store is and how to sign for it: shared by `telexd --archive`, `--replica-of` and
/// `telexd restore`.
struct ObjectStoreOptions: ParsableArguments {
    @Option(name: .customLong("archive-endpoint"), help: ArgumentHelp(
        "The S3 API's base URL, for S3-compatible stores (MinIO, Ceph, a local test server); requests are "
            + "path-style. Env TELEX_ARCHIVE_ENDPOINT. Default https://s3.REGION.amazonaws.com.",
        valueName: "URL"))
    var endpoint: String?
    @Option(name: .customLong("archive-region"), help: ArgumentHelp(
        "The region requests are signed for. Env TELEX_ARCHIVE_REGION (or AWS_REGION). Default us-east-1.",
        valueName: "REGION"))
    var region: String?
    @Option(name: .customLong("archive-credentials"), help: ArgumentHelp(
        "An AWS shared-credentials file (profile AWS_PROFILE, default 'default'). Env TELEX_ARCHIVE_CREDENTIALS. "
            + "Default: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN.",
        valueName: "FILE"))
    var credentialsFile: String?

    /// The location and a client for it; errors name the flag and what was wrong. Never logs the credentials.
    func client(
        for text: String, flag: String, environment: [String: String], logger: Logger
    ) throws -> (location: S3Location, client: S3Client) {
        let location: S3Location
        do {
            location = try S3Location(parsing: text)
        } catch {
            throw ValidationError("\(flag) '\(text)': \(error)")
        }
        let credentials: S3Credentials
        do {
            if let file = credentialsFile ?? environment["TELEX_ARCHIVE_CREDENTIALS"] {
                credentials = try S3Credentials.fromFile(path: file, profile: environment["AWS_PROFILE"] ?? "default")
            } else {
                credentials = try S3Credentials.fromEnvironment(environment)
            }
        } catch {
            throw ValidationError("\(flag): \(error)")
        }
        var endpointURL: URL?
        if let endpoint = endpoint ?? environment["TELEX_ARCHIVE_ENDPOINT"] {
            guard let url = URL(string: endpoint), let scheme = url.scheme, ["http", "https"].contains(scheme),
                url.host != nil
            else {
                throw ValidationError("--archive-endpoint '\(endpoint)' is not an http:// or https:// URL with a host")
            }
            // Requests are path-style from the endpoint's root; credentials belong in the environment or a file,
            // never in a URL that logs and errors print.
            guard url.user == nil, url.password == nil, url.query == nil, url.path.isEmpty || url.path == "/" else {
                throw ValidationError("--archive-endpoint must be scheme://host[:port] only (no path, query or user:password)")
            }
            endpointURL = url
        }
        let region = region ?? environment["TELEX_ARCHIVE_REGION"] ?? environment["AWS_REGION"] ?? "us-east-1"
        let configuration = S3Configuration(
            bucket: location.bucket, credentials: credentials, region: region, endpoint: endpointURL)
        return (location, S3Client(configuration: configuration, logger: logger))
    }
}

/// `--archive`, `--replica-of` and the options that go with them (README "Keeping ten years of news",
/// Protocol/STORAGE.md §16).
struct ArchiveOptions: ParsableArguments {
    @Option(name: .customLong("archive"), help: ArgumentHelp(
        "Upload every sealed segment (once, verified), the consumer offsets and this broker's address to this S3 "
            + "bucket and prefix; replays below the local log are served from it. Env TELEX_ARCHIVE. Default: none.",
        valueName: "s3://BUCKET/PREFIX"))
    var archive: String?
    @Option(name: .customLong("replica-of"), help: ArgumentHelp(
        "Run as a read replica of this archive: serve replays of every archived segment, follow new ones, refuse "
            + "publishing, commits and durable consumers. Env TELEX_REPLICA_OF. Default: none.",
        valueName: "s3://BUCKET/PREFIX"))
    var replicaOf: String?
    @OptionGroup var objectStore: ObjectStoreOptions
    @Option(name: .customLong("archive-cache-bytes"), help: ArgumentHelp(
        "Bytes of archived segments kept on local disk for replays (least recently used evicted first; at least three "
            + "segments of --segment-bytes, which a replica must set to the primary's). Env TELEX_ARCHIVE_CACHE_BYTES. "
            + "Default 536870912.",
        valueName: "N"))
    var cacheBytes: Int?
    @Option(name: .customLong("segment-max-age"), help: ArgumentHelp(
        "Roll the active segment once its first batch is this old (N followed by s, m, h or d), so the archive is "
            + "never further behind. Env TELEX_SEGMENT_MAX_AGE. Default 10m with --archive, 7d without.",
        valueName: "DURATION"))
    var segmentMaxAge: String?
    @Option(name: .customLong("local-retention-bytes"), help: ArgumentHelp(
        "With --archive: delete the oldest local segments the archive has confirmed while a topic's local log is "
            + "larger than this; clients still see the log from its first archived offset. "
            + "Env TELEX_LOCAL_RETENTION_BYTES. Default: no limit.",
        valueName: "N"))
    var localRetentionBytes: Int?
    @Option(name: .customLong("advertise-address"), help: ArgumentHelp(
        "With --archive: the HOST:PORT clients publish to, written to the archive for replicas' refusals. "
            + "Env TELEX_ADVERTISE_ADDRESS. Default: --host (this machine's name for 0.0.0.0 or ::) and the bound port.",
        valueName: "HOST:PORT"))
    var advertiseAddress: String?
    @Option(name: .customLong("retention-check-interval"), help: ArgumentHelp(
        "How often retention (and local retention) runs, N followed by s, m, h or d. "
            + "Env TELEX_RETENTION_CHECK_INTERVAL. Default 60s.",
        valueName: "DURATION"))
    var retentionCheckInterval: String?

    /// What `prepare` set up: the services to run beside the broker, and how to close the store's client.
    struct Prepared: Sendable {
        var services: [any Service]
        var client: S3Client?
    }

    /// Validates the options, applies them to `configuration`, and (with an archive or a replica) checks the
    /// bucket: a missing bucket or rejected credentials stop telexd here; an unreachable store is a warning.
    func prepare(
        _ configuration: inout ServerConfiguration, server: ServerBox, environment: [String: String], logger: Logger
    ) async throws -> Prepared {
        if let text = retentionCheckInterval ?? environment["TELEX_RETENTION_CHECK_INTERVAL"] {
            guard let milliseconds = CompactionConfiguration.milliseconds(parsing: text), milliseconds >= 1000 else {
                throw ValidationError("--retention-check-interval '\(text)' is not N followed by s, m, h or d, at least 1s")
            }
            configuration.retentionCheckSeconds = milliseconds / 1000
        }
        let archive = archive ?? environment["TELEX_ARCHIVE"]
        let replicaOf = replicaOf ?? environment["TELEX_REPLICA_OF"]
        let localRetention = try environmentSetting(localRetentionBytes, "TELEX_LOCAL_RETENTION_BYTES", environment) {
            Int($0)
        }
        if archive != nil, replicaOf != nil {
            throw ValidationError("--archive and --replica-of exclude each other: a replica only reads the archive")
        }
        if archive == nil {
            if localRetention != nil { throw ValidationError("--local-retention-bytes needs --archive (local retention trusts the archive)") }
            if advertiseAddress != nil { throw ValidationError("--advertise-address needs --archive (it is written there for replicas)") }
        }
        if archive == nil, replicaOf == nil {
            let stray = [("--archive-cache-bytes", cacheBytes != nil), ("--archive-endpoint", objectStore.endpoint != nil),
                         ("--archive-region", objectStore.region != nil),
                         ("--archive-credentials", objectStore.credentialsFile != nil)].filter(\.1).map(\.0)
            if let first = stray.first { throw ValidationError("\(first) needs --archive or --replica-of") }
        }
        if let text = segmentMaxAge ?? environment["TELEX_SEGMENT_MAX_AGE"] {
            guard let milliseconds = CompactionConfiguration.milliseconds(parsing: text), milliseconds >= 1000 else {
                throw ValidationError("--segment-max-age '\(text)' is not N followed by s, m, h or d, at least 1s")
            }
            configuration.log.segmentAgeMilliseconds = milliseconds
        } else if archive != nil {
            configuration.log.segmentAgeMilliseconds = 10 * 60 * 1000
        }
        guard let source = archive ?? replicaOf else { return Prepared(services: [], client: nil) }
        let flag = archive != nil ? "--archive" : "--replica-of"
        if let localRetention {
            guard localRetention >= 0 else { throw ValidationError("--local-retention-bytes must not be negative") }
            configuration.log.localRetentionBytes = localRetention
        }
        let cacheBytes = try environmentSetting(cacheBytes, "TELEX_ARCHIVE_CACHE_BYTES", environment) { Int($0) }
            ?? (512 << 20)
        let minimumCache = ArchiveCache.minimumCacheBytes(segmentBytes: configuration.log.segmentBytes)
        guard cacheBytes >= minimumCache else {
            throw ValidationError("""
                --archive-cache-bytes \(cacheBytes) is too small: the cache holds the segment being read and the two \
                prefetched after it, at least \(minimumCache) bytes with --segment-bytes \(configuration.log.segmentBytes)
                """)
        }
        let (location, client) = try objectStore.client(for: source, flag: flag, environment: environment, logger: logger)
        do {
            try await client.checkBucket()
        } catch {
            switch error.kind {
            case .notFound, .denied:
                try? await client.shutdown()
                throw ValidationError("\(flag) \(location): \(error)")
            case .unavailable, .invalidResponse:
                logger.warning("archive unreachable at startup; publishing goes on locally and uploads are retried",
                               metadata: ["archive": "\(location)", "error": "\(error)"])
            }
        }
        do {
            return try await services(
                &configuration, source: archive != nil ? .primary : .replica, location: location, client: client,
                cacheBytes: cacheBytes, server: server, environment: environment, logger: logger)
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    private enum Role { case primary, replica }

    /// The archive's pieces for a primary (the cache and the archiver) or a replica (the cache and its catalog).
    private func services(
        _ configuration: inout ServerConfiguration, source role: Role, location: S3Location, client: S3Client,
        cacheBytes: Int, server: ServerBox, environment: [String: String], logger: Logger
    ) async throws -> Prepared {
        let store = S3ObjectStore(client: client)
        let layout = ArchiveLayout(prefix: location.prefix)
        let dataDirectory = configuration.dataDirectory
        if role == .primary {
            try ArchiveLocationFile.check(dataDirectory: dataDirectory, location: location)
            let catalog = try ArchiveCatalog.load(dataDirectory: dataDirectory, layout: layout, logger: logger)
            configuration.archive = try ArchiveCache(
                directory: dataDirectory + "/archive-cache", objectStore: store, catalog: catalog,
                cacheBytes: cacheBytes, segmentBytes: configuration.log.segmentBytes, logger: logger, layout: layout,
                dataDirectory: dataDirectory)
            let advertised = advertiseAddress ?? environment["TELEX_ADVERTISE_ADDRESS"]
            let archiver = ArchiverService(
                server: server, objectStore: store, layout: layout, catalog: catalog,
                advertisedAddress: advertised, advertisedHost: Self.advertisedHost(configuration.host), logger: logger)
            return Prepared(services: [archiver], client: client)
        }
        let catalog = ArchiveCatalog()
        let replica = ReplicaCatalog(objectStore: store, layout: layout, catalog: catalog, logger: logger) { topics in
            guard let server = server.value else { return }
            Task { await server.archiveGrew(topics: topics) }
        }
        configuration.archive = try ArchiveCache(
            directory: dataDirectory + "/archive-cache", objectStore: store, catalog: catalog, cacheBytes: cacheBytes,
            segmentBytes: configuration.log.segmentBytes, logger: logger)
        configuration.replica = ReplicaRole(source: location.description) { replica.primaryAddress }
        // The first look at the bucket before the broker listens, so that its first subscribers see the archive
        // (the topics are created as soon as the store is open, before the polling goes on).
        do {
            _ = try await replica.pollOnce()
        } catch {
            logger.warning("the replica's first look at the archive failed; it keeps polling",
                           metadata: ["archive": "\(location)", "error": "\(error)"])
        }
        let startup = AfterServerStarted(server: server, service: replica) { server in
            await server.archiveGrew(topics: catalog.topics)
        }
        return Prepared(services: [startup], client: client)
    }
}

extension ArchiveOptions {
    /// The host replicas name in their refusals: the listening address, or this machine's name when telexd
    /// listens on every interface.
    static func advertisedHost(_ host: String) -> String {
        if ["0.0.0.0", "::", "[::]", ""].contains(host) { return ProcessInfo.processInfo.hostName }
        return host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
    }
}

/// The broker, once made: services built before it (the replica's catalog) reach it through this.
final class ServerBox: Sendable {
    private let box = NIOLockedValueBox<TelexServer?>(nil)
    var value: TelexServer? {
        get { box.withLockedValue { $0 } }
        set { box.withLockedValue { $0 = newValue } }
    }
}

/// Waits until the broker listens (its store is open), then runs `service`.
struct AfterServerStarted: Service {
    let server: ServerBox
    let service: any Service
    /// Runs once the store is open, before `service`.
    var started: @Sendable (TelexServer) async -> Void = { _ in }

    func run() async throws {
        guard try await waitForStore(server) != nil, let running = server.value else { return }
        await started(running)
        try await service.run()
    }
}

/// The store of the running broker, polled every 50 ms until it is open; nil on cancellation or shutdown.
func waitForStore(_ server: ServerBox) async throws -> (TopicStore, Int)? {
    while !Task.isCancelled && !Task.isShuttingDownGracefully {
        if let server = server.value, let store = server.topicStore, let port = server.localPort { return (store, port) }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return nil
}

/// The archiver of a primary: made once the broker's store is open (it needs the store and the bound port).
struct ArchiverService: Service {
    let server: ServerBox
    let objectStore: any ObjectStore
    let layout: ArchiveLayout
    let catalog: ArchiveCatalog
    /// `--advertise-address`, else `advertisedHost` and the bound port.
    let advertisedAddress: String?
    let advertisedHost: String
    let logger: Logger

    func run() async throws {
        guard let (store, port) = try await waitForStore(server) else { return }
        let archiver = Archiver(
            store: store, objectStore: objectStore, layout: layout, catalog: catalog,
            configuration: .init(advertisedAddress: advertisedAddress ?? "\(advertisedHost):\(port)"), logger: logger)
        try await archiver.run()
    }
}

/// `DATA/archive-location`: the archive a data directory's `archive.state` files describe. Local retention trusts
/// those files, so a directory archived to one place must not be started against another (its segments would count
/// as archived there and be deleted locally). Written at the first start with `--archive` and by `telexd restore`.
enum ArchiveLocationFile {
    static func path(_ dataDirectory: String) -> String { dataDirectory + "/archive-location" }

    /// Refuses a directory recorded for another archive; records `location` for a directory that has none.
    static func check(dataDirectory: String, location: S3Location) throws {
        let path = path(dataDirectory)
        if let recorded = try? String(contentsOfFile: path, encoding: .utf8) {
            let recorded = recorded.trimmingCharacters(in: .whitespacesAndNewlines)
            guard recorded == location.description else {
                throw ValidationError("""
                    --archive \(location): \(dataDirectory) is archived to \(recorded) (\(path)), whose uploads its \
                    archive.state files record; give that --archive, or start over in the new one by removing \
                    \(path) and every topics/*/archive.state
                    """)
            }
            return
        }
        try write(dataDirectory: dataDirectory, location: location)
    }

    static func write(dataDirectory: String, location: S3Location) throws {
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        try Data((location.description + "\n").utf8).write(to: URL(fileURLWithPath: path(dataDirectory)), options: .atomic)
    }
}
