import NIOCore
import TelexProtocol
import TelexStorage

/// Everything `telexd` can be told. A Sendable value; each field documents its unit and default.
public struct ServerConfiguration: Sendable {
    /// Address to listen on. Default `127.0.0.1`.
    public var host: String
    /// TCP port; 0 picks a free one (see `TelexServer.localPort`). Default 7420.
    public var port: Int
    /// Where topic logs and consumer offsets live; created if missing. Default `./telex-data`.
    public var dataDirectory: String
    /// Segment, fsync and retention settings applied to every topic. Default `LogConfiguration()` (fsync always).
    public var log: LogConfiguration
    /// Largest accepted frame, in bytes. Default 8 MiB.
    public var maxFrameSize: Int
    /// Whether publishing to an unknown topic creates it. Default true.
    public var allowTopicCreation: Bool
    /// If set, HELLO must carry exactly this token. Default nil (no authentication).
    public var authToken: String?
    /// Users file, audit log and login backoff (see `AuthConfiguration`). Default: no users file, no audit log.
    public var auth = AuthConfiguration()
    /// Largest run of batches sent in one DELIVER frame, in bytes (a single larger batch is still sent). Default 1 MiB.
    public var maxDeliverBytes: Int
    /// Cap on a subscription's outstanding credit, in batches. Default 4096.
    public var maxCredit: UInt32
    /// How often retention runs, in seconds. Default 60.
    public var retentionCheckSeconds: Int64
    /// Event loop threads. Default: one per core.
    public var eventLoopThreads: Int
    /// Name sent in HELLO_OK. Default `telexd`.
    public var serverName: String
    /// Connection, topic, back-pressure and subscription limits. Default `ServerLimits()`.
    public var limits: ServerLimits
    /// TLS on the listener (certificate, key, client CA). Default nil: plaintext.
    public var tls: ServerTLSConfiguration?
    /// Most distinct `topic` (and `consumer`) label values in metrics; later ones share `_other`. Default 1000.
    public var metricsMaxTopics = 1000
    /// Topics compacted in the background and how (Protocol/STORAGE.md §15). Default: none.
    public var compaction = CompactionConfiguration()
    /// The object-storage tier below the local segments, given to the store: reads below them are served from it
    /// and local retention trusts it (Protocol/STORAGE.md §4.1, §7). Default nil: no archive.
    public var archive: (any ArchiveTier)?
    /// Set on a read replica: PUBLISH, COMMIT and durable SUBSCRIBE are refused, naming the primary. Default nil.
    public var replica: ReplicaRole?

    public init(
        host: String = "127.0.0.1",
        port: Int = 7420,
        dataDirectory: String = "./telex-data",
        log: LogConfiguration = .init(),
        maxFrameSize: Int = 8 << 20,
        allowTopicCreation: Bool = true,
        authToken: String? = nil,
        maxDeliverBytes: Int = 1 << 20,
        maxCredit: UInt32 = 4096,
        retentionCheckSeconds: Int64 = 60,
        eventLoopThreads: Int = System.coreCount,
        serverName: String = "telexd",
        limits: ServerLimits = .init(),
        tls: ServerTLSConfiguration? = nil
    ) {
        self.host = host
        self.port = port
        self.dataDirectory = dataDirectory
        self.log = log
        self.maxFrameSize = maxFrameSize
        self.allowTopicCreation = allowTopicCreation
        self.authToken = authToken
        self.maxDeliverBytes = maxDeliverBytes
        self.maxCredit = maxCredit
        self.retentionCheckSeconds = retentionCheckSeconds
        self.eventLoopThreads = eventLoopThreads
        self.serverName = serverName
        self.limits = limits
        self.tls = tls
    }
}
