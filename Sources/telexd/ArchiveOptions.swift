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
        "Bytes of archived segments kept on local disk for replays (least recently used evicted first; at least two "
            + "segments). Env TELEX_ARCHIVE_CACHE_BYTES. Default 536870912.",
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
        let localRetention = try localRetentionBytes ?? environment["TELEX_LOCAL_RETENTION_BYTES"].map { text in
            guard let value = Int(text) else { throw ValidationError("TELEX_LOCAL_RETENTION_BYTES '\(text)' is not a number") }
            return value
        }
        if archive != nil, replicaOf != nil {
            throw ValidationError("--archive and --replica-of exclude each other: a replica only reads the archive")
        }
        if archive == nil {
            if localRetention != nil { throw ValidationError("--local-retention-bytes needs --archive (local retention trusts the archive)") }
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
        let cacheBytes = try cacheBytes ?? environment["TELEX_ARCHIVE_CACHE_BYTES"].map { text in
            guard let value = Int(text) else { throw ValidationError("TELEX_ARCHIVE_CACHE_BYTES '\(text)' is not a number") }
            return value
        } ?? (512 << 20)
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
        let store = S3ObjectStore(client: client)
        let layout = ArchiveLayout(prefix: location.prefix)
        let dataDirectory = configuration.dataDirectory
        if archive != nil {
            let catalog = try ArchiveCatalog.load(dataDirectory: dataDirectory, layout: layout, logger: logger)
            configuration.archive = try ArchiveCache(
                directory: dataDirectory + "/archive-cache", objectStore: store, catalog: catalog,
                cacheBytes: cacheBytes, segmentBytes: configuration.log.segmentBytes, logger: logger)
            let archiver = ArchiverService(
                server: server, objectStore: store, layout: layout, catalog: catalog,
                advertisedHost: Self.advertisedHost(configuration.host), logger: logger)
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
        return Prepared(services: [AfterServerStarted(server: server, service: replica)], client: client)
    }
}

extension ArchiveOptions {
    /// The host replicas name in their refusals: the listening address, or this machine's name when telexd
    /// listens on every interface.
    static func advertisedHost(_ host: String) -> String {
        ["0.0.0.0", "::", "[::]", ""].contains(host) ? ProcessInfo.processInfo.hostName : host
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

    func run() async throws {
        guard try await waitForStore(server) != nil else { return }
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
    let advertisedHost: String
    let logger: Logger

    func run() async throws {
        guard let (store, port) = try await waitForStore(server) else { return }
        let archiver = Archiver(
            store: store, objectStore: objectStore, layout: layout, catalog: catalog,
            configuration: .init(advertisedAddress: "\(advertisedHost):\(port)"), logger: logger)
        try await archiver.run()
    }
}
