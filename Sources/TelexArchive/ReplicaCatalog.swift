import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import TelexProtocol

/// The `PREFIX/primary` object: where the primary broker writing the archive listens.
public struct PrimaryRecord: Codable, Sendable, Equatable {
    /// `HOST:PORT` clients publish to.
    public var address: String
    /// When that broker started (ms since the epoch).
    public var startedAt: Int64
    public var dataDirectory: String

    public init(address: String, startedAt: Int64, dataDirectory: String) {
        self.address = address
        self.startedAt = startedAt
        self.dataDirectory = dataDirectory
    }

    func encoded() -> ByteBuffer {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return ByteBuffer(bytes: try! encoder.encode(self))
    }
}

/// A read replica's view of the archive: polls `list(PREFIX/topics/)` every `interval`, reads manifests that are
/// new or changed (by size and ETag), records them in the catalog and reports the topics that grew through
/// `onChange`. Also reads `PREFIX/primary`, for the refusal message of publishes sent to the replica.
public final class ReplicaCatalog: Service, Sendable {
    let objectStore: any ObjectStore
    let layout: ArchiveLayout
    public let catalog: ArchiveCatalog
    let interval: Duration
    /// Every this many polls the whole prefix is listed; the others list each known topic after its newest manifest,
    /// once `fullListBelow` manifests are known (below, every poll lists the whole prefix).
    let fullListEvery: Int
    let fullListBelow: Int
    let logger: Logger
    let metrics: ArchiveMetrics
    let onChange: @Sendable ([String]) -> Void

    struct Known {
        /// Manifest key → (size, ETag) when last read.
        var manifests: [String: StoredObject] = [:]
        var primary: PrimaryRecord?
        var failing = false
        /// Polls so far: every `fullListEvery`-th lists the whole prefix.
        var polls = 0
    }

    private let known = Mutex(Known())

    public init(
        objectStore: any ObjectStore, layout: ArchiveLayout, catalog: ArchiveCatalog = ArchiveCatalog(),
        interval: Duration = .seconds(2), fullListEvery: Int = 30, fullListBelow: Int = 1000, logger: Logger,
        metrics: ArchiveMetrics = ArchiveMetrics(), onChange: @escaping @Sendable ([String]) -> Void
    ) {
        precondition(fullListEvery >= 1, "fullListEvery must be at least 1")
        self.objectStore = objectStore
        self.layout = layout
        self.catalog = catalog
        self.interval = interval
        self.fullListEvery = fullListEvery
        self.fullListBelow = fullListBelow
        self.logger = logger
        self.metrics = metrics
        self.onChange = onChange
    }

    /// The primary's `HOST:PORT` as it last wrote it, nil before it wrote one (or before the first poll).
    public var primaryAddress: String? { known.withLock { $0.primary?.address } }

    /// Polls until cancelled or a graceful shutdown; a failed poll is logged (once while the store stays
    /// unavailable) and retried at the next interval.
    public func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                while !Task.isCancelled {
                    do {
                        _ = try await self.pollOnce()
                        if self.known.withLock({ known in defer { known.failing = false }; return known.failing }) {
                            self.logger.info("archive \(self.objectStore.displayName) reachable again")
                        }
                    } catch {
                        let first = self.known.withLock { known in
                            defer { known.failing = true }
                            return !known.failing
                        }
                        if first {
                            self.logger.warning("""
                                reading archive \(self.objectStore.displayName) failed: \(error); \
                                retrying every \(self.interval)
                                """)
                        }
                    }
                    try await Task.sleep(for: self.interval)
                }
            }
        } catch is CancellationError {
            return
        }
    }

    /// One poll: the primary's address, then every new or changed manifest into the catalog (a large archive is
    /// listed whole every `fullListEvery` polls, and per known topic after its newest manifest in between); calls `onChange`
    /// with the topics that changed (when any) and returns them. A manifest that fails validation is logged and
    /// skipped (it is retried at the next poll). A store failure mid-poll still reports the topics recorded
    /// before it, then throws.
    @discardableResult
    public func pollOnce() async throws -> [String] {
        do {
            let bytes = try await metrics.counting("get") { try await objectStore.get(key: layout.primary, range: nil) }
            let primary = try JSONDecoder().decode(PrimaryRecord.self, from: Data(bytes.readableBytesView))
            known.withLock { $0.primary = primary }
        } catch let error as ObjectStoreError where error.kind == .notFound {
            known.withLock { $0.primary = nil }
        } catch is DecodingError {
            logger.warning("ignoring an unreadable primary address object", metadata: ["key": "\(layout.primary)"])
        }
        // The whole prefix only every `fullListEvery` polls (new topics, rewritten and vanished manifests); in
        // between, each known topic's keys after its newest manifest (new segments), so a poll of a large archive
        // costs a LIST per topic, not a page per thousand objects of ten years.
        let (full, newest) = known.withLock { known in
            defer { known.polls += 1 }
            var newest: [String: String] = [:]
            for key in known.manifests.keys {
                guard let (topic, _) = layout.manifestSegment(key) else { continue }
                if newest[topic].map({ $0.utf8.lexicographicallyPrecedes(key.utf8) }) ?? true { newest[topic] = key }
            }
            // A small archive is listed whole every time: a page or so, and new topics show at once.
            return (known.polls % fullListEvery == 0 || known.manifests.count < fullListBelow, newest)
        }
        var objects: [StoredObject] = []
        if full {
            objects = try await metrics.counting("list") { try await objectStore.list(prefix: layout.topicsPrefix) }
        } else {
            for (topic, after) in newest.sorted(by: { $0.key < $1.key }) {
                objects += try await metrics.counting("list") {
                    try await objectStore.list(prefix: layout.topicPrefix(topic), startAfter: after)
                }
            }
        }
        let listed = Set(objects.map(\.key))
        let (fresh, vanished) = known.withLock { known in
            let fresh = objects.filter { object in
                layout.manifestSegment(object.key) != nil && known.manifests[object.key] != object
            }
            let vanished = full ? known.manifests.keys.filter { !listed.contains($0) } : []
            for key in vanished { known.manifests[key] = nil }
            return (fresh, vanished)
        }
        var changed: Set<String> = []
        // A manifest gone from the bucket (the primary deleted an earlier topic of that name): its segment is no
        // longer in the archive.
        for key in vanished {
            guard let (topic, base) = layout.manifestSegment(key) else { continue }
            catalog.remove(topic: topic, baseOffset: base)
            changed.insert(topic)
        }
        do {
            for object in fresh {
                let bytes: ByteBuffer
                do {
                    bytes = try await metrics.counting("get") { try await objectStore.get(key: object.key, range: nil) }
                } catch let error as ObjectStoreError where error.kind == .notFound {
                    continue
                }
                do {
                    let manifest = try SegmentManifest.decode(bytes, key: object.key, layout: layout)
                    if catalog.record(ArchiveEntry(manifest: manifest), topic: manifest.topic) {
                        changed.insert(manifest.topic)
                    }
                    known.withLock { $0.manifests[object.key] = object }
                } catch {
                    logger.error("ignoring an invalid archive manifest", metadata: ["error": "\(error.message)"])
                }
            }
        } catch {
            // The manifests recorded before the failure are known now (a later poll skips them): report their
            // topics, or their subscribers would never be woken for them.
            if !changed.isEmpty { onChange(changed.sorted()) }
            throw error
        }
        let topics = changed.sorted()
        if !topics.isEmpty { onChange(topics) }
        return topics
    }
}
