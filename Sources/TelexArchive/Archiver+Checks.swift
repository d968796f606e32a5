import Logging
import TelexProtocol
import TelexStorage

/// The archiver's checks against the bucket: an earlier topic of the same name, an adopted manifest's `.log`, a
/// PUT's confirmation (Protocol/STORAGE.md §16.2).
extension Archiver {
    /// Before the first upload of a topic without a state file: if the bucket holds manifests that do not describe
    /// this log's sealed segments (another data directory's topic of the same name, or this one's before it was
    /// deleted and created again), the topic is not archived: throws `ArchiveConflict`, and the next round checks
    /// again. Nothing is deleted from the bucket on an inference; the operator restores the directory from the
    /// archive (`telexd restore`) or removes the topic's objects. Manifests that all describe local segments are
    /// a crash before the first state line: step 2 checks them.
    func checkEarlierIncarnation(_ topic: String, log: TopicLog, sealed: [SealedSegmentFile]) async throws {
        guard progress.withLock({ $0.topics[topic].map { !$0.bucketChecked } ?? false }) else { return }
        let objects = try await metrics.counting("list") {
            try await objectStore.list(prefix: layout.topicPrefix(topic))
        }
        for object in objects where layout.manifestSegment(object.key) != nil {
            let bytes = try await metrics.counting("get") { try await objectStore.get(key: object.key, range: nil) }
            let manifest = try? SegmentManifest.decode(bytes, key: object.key, layout: layout)
            let local = sealed.first { $0.baseOffset == manifest?.baseOffset }
            guard let manifest, let local, local.bytes == manifest.bytes, local.rewrites == manifest.rewrites else {
                throw ArchiveConflict(topic: topic, manifestKey: object.key, store: objectStore.displayName)
            }
        }
        progress.withLock { progress in
            if progress.topics[topic]?.log === log { progress.topics[topic]?.bucketChecked = true }
        }
    }

    /// Deletes the objects of topics deleted through the broker (`ArchiveCache.topicDeleted`), manifests first so a
    /// reader never sees a manifest whose log is gone; a topic whose deletion fails is retried next round. Before
    /// any upload, so a topic created again starts from an empty prefix.
    func deleteObjectsOfDeletedTopics() async -> ObjectStoreError.Kind? {
        var failure: ObjectStoreError.Kind?
        for topic in catalog.takeDeleted().sorted() {
            // After a purge of the topic running now: its leftovers are deleted with the rest.
            await catalog.topicLock.lock(topic)
            defer { catalog.topicLock.unlock(topic) }
            do {
                let objects = try await metrics.counting("list") {
                    try await objectStore.list(prefix: layout.topicPrefix(topic))
                }
                let manifests = objects.filter { layout.manifestSegment($0.key) != nil }
                for object in manifests + objects.filter({ layout.manifestSegment($0.key) == nil }) {
                    try await metrics.counting("delete") { try await objectStore.delete(key: object.key) }
                }
                logger.notice("deleted the archive of a deleted topic", metadata: [
                    "topic": "\(topic)", "objects": "\(objects.count)",
                ])
            } catch {
                catalog.markDeleted(topic)
                failure = failure ?? (error as? ObjectStoreError)?.kind ?? .unavailable
                logger.warning("cannot delete the archive of a deleted topic yet; retried next round", metadata: [
                    "topic": "\(topic)", "error": "\(error)",
                ])
            }
        }
        return failure
    }

    /// Whether the manifest's `.log` object is there as the manifest describes it (size, and the MD5 when the ETag
    /// is one): adopting a manifest whose object is missing or different would archive nothing.
    func logObjectMatches(_ manifest: SegmentManifest) async throws -> Bool {
        guard let object = try await metrics.counting("head", { try await objectStore.head(key: manifest.logKey) })
        else { return false }
        guard object.size == manifest.bytes else { return false }
        guard let etag = object.etag, Self.isMD5(etag) else { return true }
        return etag == manifest.md5
    }

    /// Checks a confirmed `.log` upload: the size, and the ETag against the MD5 (without an ETag: a HEAD's size).
    /// A mismatch (an ETag that is no MD5: SSE-KMS, multipart) is an error, logged, counted and backed off from,
    /// not a silent retry every round.
    func confirm(_ stored: StoredObject, key: String, bytes: Int, md5: String) async throws {
        var size = stored.size
        if stored.etag == nil {
            size = try await metrics.counting("head") { try await objectStore.head(key: key) }?.size ?? -1
        }
        let problem: String? =
            if size != bytes { "size \(size), expected \(bytes)" }
            else if let etag = stored.etag, etag != md5 { "ETag \(etag), expected the MD5 \(md5)" }
            else { nil }
        guard let problem else { return }
        metrics.error("put")
        logger.error("""
            archive \(objectStore.displayName) confirmed \(key) with \(problem); the upload is not trusted \
            (is the bucket encrypted with SSE-KMS, or the object multipart?)
            """)
        throw ObjectStoreError(.invalidResponse, "PUT \(key) at \(objectStore.displayName): \(problem)")
    }

    static func isMD5(_ etag: String) -> Bool {
        etag.utf8.count == 32 && etag.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }
}

/// The bucket holds a topic of this name that this data directory's log is not (Protocol/STORAGE.md §16.2).
struct ArchiveConflict: Error, CustomStringConvertible {
    var topic: String
    var manifestKey: String
    var store: String

    var description: String {
        """
        the archive \(store) holds segments of topic '\(topic)' that this data directory does not have (\(manifestKey) \
        describes no local sealed segment): '\(topic)' is not archived. Restore this data directory from the archive \
        (telexd restore) or, if the archived topic is to be replaced, delete its objects under \
        \(manifestKey.components(separatedBy: "/").dropLast().joined(separator: "/"))/
        """
    }
}
