import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import TelexProtocol
import TelexStorage

/// Uploads every sealed segment of a `TopicStore` to the archive exactly once per (segment, rewrites), plus the
/// consumer offsets and the primary's address (Protocol/STORAGE.md §16.2). Publishing never waits for it.
///
/// Runs in its own task (`run()`, a `Service`); its blocking file I/O (hashing segments, appending the state
/// files, reading consumer files) runs on NIO's thread pool, never on an event loop nor Swift's cooperative pool
/// (`ArchiveFiles.offload`). `runOnce()` and
/// `uploadConsumerOffsets()` are one round each, for tests.
public final class Archiver: Service, Sendable {
    /// Timing of the archiver's rounds.
    public struct Configuration: Sendable {
        /// How often sealed segments are listed. Default 1 s.
        public var scanInterval: Duration
        /// The first wait after an `unavailable` store; doubled per failed round up to `maximumBackoff`. Default 1 s.
        public var minimumBackoff: Duration
        /// The longest wait between rounds while the store fails (and the wait after `denied`). Default 60 s.
        public var maximumBackoff: Duration
        /// How often changed consumer-offsets files are uploaded. Default 10 s.
        public var consumerOffsetsInterval: Duration
        /// The broker's advertised `HOST:PORT`, written to `PREFIX/primary`; nil writes no such object.
        public var advertisedAddress: String?

        public init(
            scanInterval: Duration = .seconds(1), minimumBackoff: Duration = .seconds(1),
            maximumBackoff: Duration = .seconds(60), consumerOffsetsInterval: Duration = .seconds(10),
            advertisedAddress: String? = nil
        ) {
            self.scanInterval = scanInterval
            self.minimumBackoff = minimumBackoff
            self.maximumBackoff = maximumBackoff
            self.consumerOffsetsInterval = consumerOffsetsInterval
            self.advertisedAddress = advertisedAddress
        }
    }

    /// What one round did.
    public struct Round: Sendable, Equatable {
        /// Segments uploaded (manifest confirmed) in this round.
        public var uploaded = 0
        /// Segments found in the archive already (a crash after the manifest) and recorded without an upload.
        public var adopted = 0
        /// Sealed segments still not archived after the round.
        public var pending = 0
        /// The worst store failure of the round, nil when every call succeeded.
        public var failure: ObjectStoreError.Kind?
    }

    let store: TopicStore
    let objectStore: any ObjectStore
    let layout: ArchiveLayout
    let catalog: ArchiveCatalog
    let configuration: Configuration
    let logger: Logger
    let metrics: ArchiveMetrics
    private let startedAt = FileIO.nowMilliseconds()

    /// One topic's upload progress, valid for one incarnation of the topic (one `TopicLog` instance).
    struct TopicProgress {
        let log: TopicLog
        /// Its local state (loaded from the file on first use).
        var state: [Int64: ArchivedSegmentRecord]
        /// Whether the bucket is known to hold nothing of an earlier topic of this name (its state file existed, or
        /// the bucket was checked and cleared).
        var bucketChecked: Bool
    }

    struct Progress {
        var topics: [String: TopicProgress] = [:]
        /// Consumer-offsets file name → MD5 of the bytes last confirmed uploaded.
        var consumerUploads: [String: String] = [:]
        var primaryWritten = false
        /// Whether the store is failing (a warning was logged once for it).
        var failing = false
        /// Topics not archived because the bucket holds another topic of their name (logged once each).
        var conflicts: Set<String> = []
    }

    let progress = Mutex(Progress())

    public init(
        store: TopicStore, objectStore: any ObjectStore, layout: ArchiveLayout, catalog: ArchiveCatalog,
        configuration: Configuration = .init(), logger: Logger, metrics: ArchiveMetrics = ArchiveMetrics()
    ) {
        self.store = store
        self.objectStore = objectStore
        self.layout = layout
        self.catalog = catalog
        self.configuration = configuration
        self.logger = logger
        self.metrics = metrics
    }

    /// Runs rounds until cancelled or a graceful shutdown: `PREFIX/primary` first, then a segment scan every
    /// `scanInterval` and the consumer offsets every `consumerOffsetsInterval`; after a failed round it waits
    /// with exponential backoff (`denied` and a missing bucket: the maximum).
    public func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                var backoff = self.configuration.minimumBackoff
                var lastOffsetsUpload = ContinuousClock.now - self.configuration.consumerOffsetsInterval
                while !Task.isCancelled {
                    var failure: ObjectStoreError.Kind? = nil
                    if !self.progress.withLock({ $0.primaryWritten }) { failure = await self.writePrimary() }
                    let round = await self.runOnce()
                    failure = failure ?? round.failure
                    if ContinuousClock.now - lastOffsetsUpload >= self.configuration.consumerOffsetsInterval {
                        let offsetsFailure = await self.uploadConsumerOffsets()
                        if offsetsFailure == nil { lastOffsetsUpload = .now }
                        failure = failure ?? offsetsFailure
                    }
                    let wait: Duration
                    switch failure {
                    case nil:
                        wait = self.configuration.scanInterval
                        backoff = self.configuration.minimumBackoff
                    case .unavailable?, .invalidResponse?:
                        wait = backoff
                        backoff = min(backoff * 2, self.configuration.maximumBackoff)
                    case .denied?, .notFound?:
                        wait = self.configuration.maximumBackoff
                    }
                    try await Task.sleep(for: wait)
                }
            }
        } catch is CancellationError {
            return
        }
    }

    /// Writes `PREFIX/primary` (the advertised address); returns the failure's kind, nil when written.
    @discardableResult
    public func writePrimary() async -> ObjectStoreError.Kind? {
        guard let address = configuration.advertisedAddress else { return nil }
        let json = PrimaryRecord(address: address, startedAt: startedAt, dataDirectory: store.directory).encoded()
        do {
            _ = try await metrics.counting("put") { try await objectStore.putBytes(key: layout.primary, bytes: json) }
            progress.withLock { $0.primaryWritten = true }
            return nil
        } catch {
            return failed(error, "writing the primary's address to \(layout.primary)")
        }
    }

    /// One scan: uploads every sealed segment not archived yet, oldest first per topic (steps 1-5 of §16.2). A
    /// store failure ends the round (the next one resumes); a local file error skips that segment.
    public func runOnce() async -> Round {
        var round = Round()
        var pending = 0
        let answeredBefore = metrics.answered.load(ordering: .relaxed)
        round.failure = await deleteObjectsOfDeletedTopics()
        for topic in store.topics {
            guard let log = store.log(topic) else { continue }
            // A purge of the topic's archived segments writes its state file and objects too (ArchiveCache+Purge).
            await catalog.topicLock.lock(topic)
            defer { catalog.topicLock.unlock(topic) }
            let sealed = log.sealedSegmentFiles()
            let state: [Int64: ArchivedSegmentRecord]
            do {
                state = try await loadState(topic, log: log)
            } catch {
                logger.error("cannot read the archive state; the topic is not archived", metadata: [
                    "topic": "\(topic)", "error": "\(error.message)",
                ])
                continue
            }
            let todo = sealed.filter { file in
                guard let done = state[file.baseOffset] else { return true }
                return done.bytes != file.bytes || done.rewrites != file.rewrites
            }
            pending += todo.count
            guard round.failure == nil, !todo.isEmpty else { continue }
            do {
                try await checkEarlierIncarnation(topic, log: log, sealed: sealed)
            } catch let conflict as ArchiveConflict {
                metrics.error("conflict")
                if progress.withLock({ $0.conflicts.insert(topic).inserted }) { logger.error("\(conflict)") }
                continue
            } catch let error as ObjectStoreError {
                round.failure = error.kind
                _ = failed(error, "checking the archive for an earlier topic '\(topic)'")
                continue
            } catch {
                logger.warning("checking the archive of a topic failed; retried next round", metadata: [
                    "topic": "\(topic)", "error": "\(error)",
                ])
                continue
            }
            // Oldest first, stopping at the first segment not committed: the manifests always form a prefix of the
            // topic's segments in offset order, without holes.
            for file in todo {
                do {
                    switch try await archive(file, log: log) {
                    case .uploaded: round.uploaded += 1
                    case .adopted: round.adopted += 1
                    case .changed: break
                    }
                } catch let error as ObjectStoreError {
                    round.failure = error.kind
                    _ = failed(error, "archiving segment \(ArchiveLayout.base20(file.baseOffset)) of topic '\(topic)'")
                    break
                } catch {
                    logger.warning("archiving a segment failed; it and the later ones are retried next round", metadata: [
                        "topic": "\(topic)", "baseOffset": "\(file.baseOffset)", "error": "\(error)",
                    ])
                    break
                }
                guard progress.withLock({ $0.topics[topic]?.state[file.baseOffset] }).map({
                    $0.bytes == file.bytes && $0.rewrites == file.rewrites
                }) == true else { break }
                pending -= 1
            }
        }
        round.pending = pending
        metrics.pendingSegments.record(pending)
        // Only a round in which the store answered tells that it is reachable again.
        if round.failure == nil, metrics.answered.load(ordering: .relaxed) > answeredBefore { recovered() }
        return round
    }

    /// The topic's state for this incarnation of it. A topic deleted and created again is another `TopicLog` and
    /// lost its state file with its directory: what was remembered of the earlier one is forgotten (catalog too).
    private func loadState(
        _ topic: String, log: TopicLog
    ) async throws(TelexError) -> [Int64: ArchivedSegmentRecord] {
        let path = statePath(topic)
        let exists = try await ArchiveFiles.offload { () throws(TelexError) in FileIO.exists(path) }
        let earlier = progress.withLock { $0.topics[topic] }
        if let earlier, earlier.log === log, earlier.state.isEmpty || exists { return earlier.state }
        let logger = self.logger
        let state = try await ArchiveFiles.offload { () throws(TelexError) in
            try ArchiveState.load(path: path, logger: logger)
        }
        if earlier != nil && !exists { catalog.removeTopic(topic) }
        progress.withLock { $0.topics[topic] = TopicProgress(log: log, state: state, bucketChecked: exists) }
        return state
    }

    func statePath(_ topic: String) -> String {
        ArchiveState.path(dataDirectory: store.directory, topic: topic)
    }

    enum Outcome { case uploaded, adopted, changed }

    /// Steps 2-5 for one sealed segment.
    private func archive(_ file: SealedSegmentFile, log: TopicLog) async throws -> Outcome {
        let topic = file.topic
        let digest = try await ArchiveFiles.offload { () throws(TelexError) in
            try FileDigest(path: file.logPath, length: file.bytes)
        }
        let manifestKey = layout.manifest(topic: topic, baseOffset: file.baseOffset)
        // 2. A manifest matching the local file: the upload was confirmed before a crash lost its state line.
        if try await metrics.counting("head", { try await objectStore.head(key: manifestKey) }) != nil {
            let bytes = try await metrics.counting("get") { try await objectStore.get(key: manifestKey, range: nil) }
            if let found = try? SegmentManifest.decode(bytes, key: manifestKey, layout: layout),
                found.bytes == file.bytes, found.rewrites == file.rewrites, found.sha256 == digest.sha256,
                try await logObjectMatches(found)
            {
                guard try await commit(found, log: log) else { return .changed }
                logger.info("segment found archived already; recorded", metadata: [
                    "topic": "\(topic)", "baseOffset": "\(file.baseOffset)",
                ])
                try await deleteOlderRewrites(of: found)
                return .adopted
            }
        }
        // 3. The objects, each confirmed by size and MD5; a file that changed meanwhile is left to the next round.
        let logKey = layout.segmentLog(topic: topic, baseOffset: file.baseOffset, rewrites: file.rewrites)
        let stored = try await metrics.counting("put") {
            try await objectStore.putFile(key: logKey, path: file.logPath, offset: 0, length: file.bytes)
        }
        try await confirm(stored, key: logKey, bytes: file.bytes, md5: digest.md5)
        var compactedKey: String? = nil
        if let markerPath = file.compactionMarkerPath {
            let marker = try await ArchiveFiles.offload { () throws(TelexError) in try ArchiveFiles.readFile(markerPath) }
            let key = layout.compactionMarker(topic: topic, baseOffset: file.baseOffset, rewrites: file.rewrites)
            _ = try await metrics.counting("put") { try await objectStore.putBytes(key: key, bytes: marker) }
            compactedKey = key
        }
        let now = log.sealedSegmentFiles().first { $0.baseOffset == file.baseOffset }
        guard let now, now.bytes == file.bytes, now.rewrites == file.rewrites, store.log(topic) === log else {
            return .changed
        }
        // 4. The manifest: the commit point.
        let manifest = SegmentManifest(
            topic: topic, baseOffset: file.baseOffset, nextOffset: file.nextOffset, bytes: file.bytes,
            sha256: digest.sha256, md5: digest.md5, rewrites: file.rewrites, firstAppendTime: file.firstAppendTime,
            lastAppendTime: file.lastAppendTime, logKey: logKey, compactedKey: compactedKey,
            uploadedAt: FileIO.nowMilliseconds())
        _ = try await metrics.counting("put") {
            try await objectStore.putBytes(key: manifestKey, bytes: manifest.encoded())
        }
        // 5. The local state, then the superseded objects.
        guard try await commit(manifest, log: log) else { return .changed }
        metrics.uploadedSegments.increment()
        metrics.uploadedBytes.increment(by: file.bytes)
        logger.debug("archived segment", metadata: [
            "topic": "\(topic)", "baseOffset": "\(file.baseOffset)", "rewrites": "\(file.rewrites)",
            "bytes": "\(file.bytes)",
        ])
        try await deleteOlderRewrites(of: manifest)
        return .uploaded
    }

    /// Step 5: the state line (fdatasynced), the in-memory state and the catalog. Returns false (nothing recorded)
    /// when the topic was deleted while its upload ran: its state file would be the new topic's.
    private func commit(_ manifest: SegmentManifest, log: TopicLog) async throws(TelexError) -> Bool {
        guard store.log(manifest.topic) === log else { return false }
        let record = ArchivedSegmentRecord(manifest: manifest)
        let path = statePath(manifest.topic)
        try await ArchiveFiles.offload { () throws(TelexError) in try ArchiveState.append(record, path: path) }
        progress.withLock { progress in
            if progress.topics[manifest.topic]?.log === log {
                progress.topics[manifest.topic]?.state[manifest.baseOffset] = record
            }
        }
        catalog.record(ArchiveEntry(manifest: manifest), topic: manifest.topic)
        return true
    }

    /// Deletes the objects of the segment's earlier rewrites (a compaction or purge replaced them).
    private func deleteOlderRewrites(of manifest: SegmentManifest) async throws {
        guard manifest.rewrites > 0 else { return }
        let prefix = layout.rewritesPrefix(topic: manifest.topic, baseOffset: manifest.baseOffset)
        let current = prefix + "\(manifest.rewrites)."
        for object in try await metrics.counting("list", { try await objectStore.list(prefix: prefix) })
        where !object.key.hasPrefix(current) {
            try await metrics.counting("delete") { try await objectStore.delete(key: object.key) }
        }
    }
}
