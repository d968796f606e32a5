#if canImport(Glibc)
import Glibc
#endif
import TelexProtocol

/// When appended bytes are forced to disk, and so when an append may be acknowledged.
public enum FsyncPolicy: Sendable, Equatable, CustomStringConvertible {
    /// An append completes only after `fdatasync` has covered its bytes; concurrent appends share one fsync
    /// (group commit). Consumers see a batch only once it is durable. A crash loses nothing acknowledged.
    case always
    /// Appends complete once written to the page cache; dirty logs are fsynced every `milliseconds`.
    /// A machine crash (not a process crash) may lose up to that interval of acknowledged appends.
    case interval(milliseconds: Int)
    /// Appends complete once written to the page cache; the kernel decides when they reach disk, and
    /// closing a log fsyncs it. A machine crash may lose any acknowledged append not yet written back.
    case never

    public var description: String {
        switch self {
        case .always: "always"
        case .interval(let milliseconds): "interval:\(milliseconds)ms"
        case .never: "never"
        }
    }

    /// Parses `always`, `never`, `interval` (1000 ms) or `interval:N` / `Nms`.
    public init?(parsing text: String) {
        let lowered = text.lowercased()
        switch lowered {
        case "always": self = .always
        case "never": self = .never
        case "interval": self = .interval(milliseconds: 1000)
        default:
            var digits = Substring(lowered)
            if digits.hasPrefix("interval:") { digits = digits.dropFirst("interval:".count) }
            if digits.hasSuffix("ms") { digits = digits.dropLast(2) }
            guard let milliseconds = Int(digits), milliseconds > 0 else { return nil }
            self = .interval(milliseconds: milliseconds)
        }
    }
}

/// How each topic log is kept. A Sendable value; every field has a documented default.
public struct LogConfiguration: Sendable, Equatable {
    /// Roll to a new segment once the active one would pass this many bytes. Default 128 MiB; at most 2 GiB.
    public var segmentBytes: Int
    /// Roll to a new segment once the active one's first batch is this old, in milliseconds. Default 7 days.
    public var segmentAgeMilliseconds: Int64
    /// Bytes of log between two sparse index entries. Default 4 KiB.
    public var indexIntervalBytes: Int
    /// Delete whole segments whose newest batch is older than this, in milliseconds. Default nil (keep forever).
    public var retentionMilliseconds: Int64?
    /// Delete the oldest whole segments while the log is larger than this, in bytes. Default nil (no limit).
    public var retentionBytes: Int?
    /// With an archive tier (`TopicStore(archive:)`): delete the oldest local segments the archive holds while the
    /// local segments take more than this, in bytes (Protocol/STORAGE.md §7). Ignored without an archive. Default
    /// nil (off).
    public var localRetentionBytes: Int?
    /// When appends reach the disk. Default `.always`.
    public var fsync: FsyncPolicy
    /// Limits applied when checking appended batches. Default `RecordBatchLimits()`.
    public var batchLimits: RecordBatchLimits
    /// Segment and index files kept open at once by a `TopicStore`, all topics together (or by a `TopicLog`
    /// opened on its own); idle ones are closed least recently used first and opened again when needed.
    /// Default: half the process's soft open-file limit (`RLIMIT_NOFILE`, `ulimit -n`) when the configuration is
    /// made, at least 8, leaving the other half to sockets and other files. At least 1.
    public var maxOpenFiles: Int
    /// Keep a key index (article key → versions) per segment, in memory and in sealed segments' `.keys` files
    /// (Protocol/STORAGE.md §14). Off: nothing is indexed and key queries answer empty. Default true.
    public var indexKeys: Bool
    /// Bytes of sealed segments' key tables a log keeps in memory for key queries, least recently used evicted
    /// first; the others are read from their `.keys` files when a query needs them (Protocol/STORAGE.md §14.1).
    /// A table larger than this is read for each query that needs it. Per topic log. Default 8 MiB; 0 keeps none.
    public var keyTableCacheBytes: Int

    public init(
        segmentBytes: Int = 128 << 20,
        segmentAgeMilliseconds: Int64 = 7 * 24 * 3600 * 1000,
        indexIntervalBytes: Int = 4096,
        retentionMilliseconds: Int64? = nil,
        retentionBytes: Int? = nil,
        fsync: FsyncPolicy = .always,
        batchLimits: RecordBatchLimits = .init(),
        maxOpenFiles: Int = LogConfiguration.defaultMaxOpenFiles(),
        indexKeys: Bool = true,
        keyTableCacheBytes: Int = 8 << 20,
        localRetentionBytes: Int? = nil
    ) {
        self.localRetentionBytes = localRetentionBytes
        precondition(segmentBytes > RecordBatchHeader.size && segmentBytes <= Int(Int32.max), "segmentBytes out of range")
        self.segmentBytes = segmentBytes
        self.segmentAgeMilliseconds = segmentAgeMilliseconds
        self.indexIntervalBytes = indexIntervalBytes
        self.retentionMilliseconds = retentionMilliseconds
        self.retentionBytes = retentionBytes
        self.fsync = fsync
        self.batchLimits = batchLimits
        precondition(maxOpenFiles >= 1, "maxOpenFiles must be at least 1")
        self.maxOpenFiles = maxOpenFiles
        self.indexKeys = indexKeys
        precondition(keyTableCacheBytes >= 0, "keyTableCacheBytes must not be negative")
        self.keyTableCacheBytes = keyTableCacheBytes
    }

    /// The default `maxOpenFiles`: half the process's soft `RLIMIT_NOFILE` now, at least 8 (an unlimited or
    /// unreadable limit counts as 1,048,576).
    public static func defaultMaxOpenFiles() -> Int {
        var limit = rlimit()
        let soft = getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 && limit.rlim_cur != rlim_t.max
            ? Int(clamping: limit.rlim_cur) : 1 << 20
        return max(8, soft / 2)
    }
}
