import CoreMetrics
import Synchronization

/// The archive's metric handles (names in the README): uploads, fetches, errors per object-store operation.
public final class ArchiveMetrics: Sendable {
    private let factory: any MetricsFactory
    /// `telex_archive_uploaded_segments_total`: segments whose manifest was confirmed.
    let uploadedSegments: Counter
    /// `telex_archive_uploaded_bytes_total`: bytes of `.log` objects confirmed.
    let uploadedBytes: Counter
    /// `telex_archive_pending_segments`: sealed local segments not archived yet, after the last scan.
    let pendingSegments: Gauge
    /// `telex_archive_fetched_bytes_total`: bytes downloaded into the cache (and by restore).
    let fetchedBytes: Counter
    /// `telex_archive_cache_bytes`: bytes of the cache's segments, downloads in progress included.
    let cacheBytes: Gauge
    private let errors = Mutex<[String: Counter]>([:])

    /// Store calls that succeeded so far: "reachable again" is only said after one did.
    let answered = Atomic<Int>(0)

    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        self.factory = factory
        uploadedSegments = Counter(label: "telex_archive_uploaded_segments_total", factory: factory)
        uploadedBytes = Counter(label: "telex_archive_uploaded_bytes_total", factory: factory)
        pendingSegments = Gauge(label: "telex_archive_pending_segments", factory: factory)
        fetchedBytes = Counter(label: "telex_archive_fetched_bytes_total", factory: factory)
        cacheBytes = Gauge(label: "telex_archive_cache_bytes", factory: factory)
    }

    /// Counts a failed object-store call: `telex_archive_errors_total{operation="put"}` (put, get, head, list, delete).
    func error(_ operation: String) {
        let counter = errors.withLock { errors in
            if let counter = errors[operation] { return counter }
            let counter = Counter(label: "telex_archive_errors_total", dimensions: [("operation", operation)],
                                  factory: factory)
            errors[operation] = counter
            return counter
        }
        counter.increment()
    }

    /// Runs an object-store call, counting its failure under `operation`.
    func counting<T>(_ operation: String, _ call: () async throws -> T) async throws -> T {
        do {
            let result = try await call()
            answered.add(1, ordering: .relaxed)
            return result
        } catch {
            self.error(operation)
            throw error
        }
    }
}
