import CoreMetrics
import Logging
import TelexProtocol
import TelexStorage

/// Which topics are compacted, and how (`telexd --compact PATTERN`, `--compact-tombstone-retention`).
public struct CompactionConfiguration: Sendable, Equatable {
    /// Topic patterns whose topics are compacted (PROTOCOL.md §10 wildcards). Default none: full history.
    public var patterns: [String]
    /// How long a tombstone (`article.deleted`) stays once it is its key's newest record, in milliseconds
    /// (broker append time). Default 24 hours.
    public var tombstoneRetentionMilliseconds: Int64
    /// Most segments rewritten per round, across all topics, so one round stays short. Default 8.
    public var maxSegmentsPerRound: Int

    public init(
        patterns: [String] = [], tombstoneRetentionMilliseconds: Int64 = 86_400_000, maxSegmentsPerRound: Int = 8
    ) {
        self.patterns = patterns
        self.tombstoneRetentionMilliseconds = tombstoneRetentionMilliseconds
        self.maxSegmentsPerRound = maxSegmentsPerRound
    }

    /// Whether `topic` is compacted.
    public func compacts(_ topic: String) -> Bool {
        patterns.contains { TopicName.matches(pattern: $0, topic: topic) }
    }

    /// A duration as `telexd --compact-tombstone-retention` takes it (`90s`, `30m`, `24h`, `7d`), in milliseconds;
    /// nil for anything else.
    public static func milliseconds(parsing text: String) -> Int64? {
        guard let unit = text.last, let count = Int64(text.dropLast()), count >= 0 else { return nil }
        let scale: Int64? = switch unit {
        case "s": 1000
        case "m": 60_000
        case "h": 3_600_000
        case "d": 86_400_000
        default: nil
        }
        guard let scale else { return nil }
        let (product, overflow) = count.multipliedReportingOverflow(by: scale)
        return overflow ? nil : product
    }
}

/// The background cleaner: one round per retention run, on the server's thread pool, rewriting sealed segments of
/// the topics matching a `--compact` pattern (Protocol/STORAGE.md §15.3).
///
/// Metrics: `telex_compaction_segments_total` and `telex_compaction_reclaimed_bytes_total` (per topic label),
/// `telex_compaction_skipped_segments_total` for segments that could not be rewritten (damaged).
struct Compactor: Sendable {
    let configuration: CompactionConfiguration
    let logger: Logger
    let metrics: TelexMetrics

    /// Runs one round over `store`'s compacted topics, at most `maxSegmentsPerRound` rewrites. Blocking.
    func runRound(_ store: TopicStore) {
        guard !configuration.patterns.isEmpty else { return }
        var budget = configuration.maxSegmentsPerRound
        for topic in store.topics where budget > 0 && configuration.compacts(topic) {
            guard let log = store.log(topic) else { continue }
            do {
                let report = try log.compact(
                    tombstoneRetentionMilliseconds: configuration.tombstoneRetentionMilliseconds, maxSegments: budget)
                budget -= report.rewrites.count
                let label = log.metrics.label
                if !report.rewrites.isEmpty {
                    Counter(label: "telex_compaction_segments_total", dimensions: [("topic", label)],
                            factory: metrics.factory).increment(by: report.rewrites.count)
                    Counter(label: "telex_compaction_reclaimed_bytes_total", dimensions: [("topic", label)],
                            factory: metrics.factory).increment(by: report.bytesReclaimed)
                }
                if !report.skipped.isEmpty {
                    Counter(label: "telex_compaction_skipped_segments_total", dimensions: [("topic", label)],
                            factory: metrics.factory).increment(by: report.skipped.count)
                }
            } catch {
                // A topic deleted, or the broker stopping, mid-round is no failure.
                logger.log(level: error.code == .shuttingDown ? .info : .error, "compaction failed",
                           metadata: ["topic": "\(topic)", "error": "\(error)"])
            }
        }
    }
}
