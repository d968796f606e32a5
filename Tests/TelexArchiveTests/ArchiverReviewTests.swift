import Foundation
import MetricsTestKit
import NIOCore
import TelexProtocol
import TelexStorage
import Testing

@testable import TelexArchive

@Suite("Archiver: deleted topics, ordering, confirmation", .timeLimit(.minutes(1)))
struct ArchiverReviewTests {
    @Test("a topic deleted and created again: the earlier topic's objects and catalog entries go before the new upload")
    func recreatedTopic() async throws {
        try await withTemporaryDirectory { directory in
            let store = try openStore(directory + "/data")
            let objects = try DirectoryObjectStore(directory: directory + "/bucket")
            let catalog = ArchiveCatalog()
            let archiver = makeArchiver(store, objects, catalog: catalog)
            let earlier = try publish(store, count: 40).sealedSegmentFiles()
            #expect(await archiver.runOnce().uploaded == earlier.count)

            // Deleted through the broker: the cache (the store's tier) marks it for the archiver.
            try store.deleteLog(topic)
            catalog.markDeleted(topic)
            let sealed = try publish(store, count: 10, from: 500).sealedSegmentFiles()
            #expect(sealed.count >= 1 && sealed.count < earlier.count)
            let round = await archiver.runOnce()
            #expect(round.uploaded == sealed.count && round.failure == nil)
            #expect(catalog.segments(of: topic).map(\.baseOffset) == sealed.map(\.baseOffset))
            #expect(catalog.segments(of: topic).map(\.bytes) == sealed.map(\.bytes))
            #expect(try await manifestBases(objects) == sealed.map(\.baseOffset))
            #expect(try await objects.list(prefix: layout.topicPrefix(topic)).count == 2 * sealed.count)
            try store.close()
        }
    }

    @Test("a data directory whose topic is not the bucket's (no state file, other manifests): not archived, nothing deleted")
    func conflictingTopicIsNotArchived() async throws {
        try await withTemporaryDirectory { directory in
            let objects = try DirectoryObjectStore(directory: directory + "/bucket")
            let first = try openStore(directory + "/first")
            let archived = try publish(first, count: 40).sealedSegmentFiles()
            #expect(await makeArchiver(first, objects).runOnce().uploaded == archived.count)
            try first.close()

            // Another, new data directory over the same bucket (a disk replaced without a restore).
            let second = try openStore(directory + "/second")
            let sealed = try publish(second, count: 12, from: 9000).sealedSegmentFiles()
            #expect(sealed.count >= 1)
            let metrics = TestMetrics()
            let catalog = ArchiveCatalog()
            let archiver = makeArchiver(second, objects, catalog: catalog, metrics: ArchiveMetrics(factory: metrics))
            for _ in 0..<2 {
                let round = await archiver.runOnce()
                #expect(round.uploaded == 0 && round.adopted == 0 && round.pending == sealed.count)
            }
            #expect(try await manifestBases(objects) == archived.map(\.baseOffset))
            #expect(catalog.segments(of: topic).isEmpty)
            let conflicts = try metrics.expectCounter("telex_archive_errors_total", [("operation", "conflict")])
            #expect(conflicts.totalValue == 2)
            try second.close()
        }
    }

    @Test("a topic deleted (and created again) while its segment uploads: nothing committed", arguments: [false, true])
    func deletedDuringUpload(duringManifest: Bool) async throws {
        try await withTemporaryDirectory { directory in
            let store = try openStore(directory + "/data")
            let base = try DirectoryObjectStore(directory: directory + "/bucket")
            let objects = HookedObjectStore(base)
            let catalog = ArchiveCatalog()
            try publish(store, count: 20)
            let recreate: @Sendable (String) -> Void = { _ in
                _ = try? store.deleteLog(topic)
                _ = try? store.createLog(topic)
            }
            objects.hooks.withLock { hooks in
                if duringManifest { hooks.afterPutBytes = recreate } else { hooks.afterPutFile = recreate }
            }
            let round = await makeArchiver(store, objects, catalog: catalog).runOnce()
            #expect(round.uploaded == 0 && round.adopted == 0)
            // During the .log PUT the re-check stops it before its manifest; during the manifest PUT, the commit.
            #expect(puts(base, endingWith: ".manifest").count == (duringManifest ? 1 : 0))
            #expect(catalog.segments(of: topic).isEmpty)
            // The new topic's state knows nothing of the earlier topic's segment.
            #expect(!FileIO.exists(ArchiveState.path(dataDirectory: directory + "/data", topic: topic)))
            try store.close()
        }
    }

    @Test("a compaction during the upload: that segment and every later one wait; the next round uploads r1 first")
    func compactionDuringUploadStopsTheTopic() async throws {
        try await withTemporaryDirectory { directory in
            let store = try openStore(directory + "/data")
            let base = try DirectoryObjectStore(directory: directory + "/bucket")
            let objects = HookedObjectStore(base)
            // Segment 0 starts with three batches of one key (compaction rewrites it); the rest are unique.
            let log = try publish(store, count: 3, key: "urn:telex:article:frontpage")
            try publish(store, count: 37, from: 100)
            let sealed = log.sealedSegmentFiles()
            let firstKey = layout.segmentLog(topic: topic, baseOffset: sealed[0].baseOffset, rewrites: 0)
            objects.hooks.withLock { hooks in
                hooks.afterPutFile = { key in
                    if key == firstKey { _ = try? log.compact(tombstoneRetentionMilliseconds: 0) }
                }
            }
            let archiver = makeArchiver(store, objects)
            let round = await archiver.runOnce()
            #expect(log.sealedSegmentFiles()[0].rewrites == 1 && log.sealedSegmentFiles()[1].rewrites == 0)
            #expect(round.uploaded == 0 && round.pending == sealed.count)
            #expect(puts(base, endingWith: ".manifest").isEmpty)

            objects.hooks.withLock { $0.afterPutFile = nil }
            #expect(await archiver.runOnce().uploaded == sealed.count)
            #expect(try await manifestBases(base) == sealed.map(\.baseOffset))
            let manifestKey = layout.manifest(topic: topic, baseOffset: sealed[0].baseOffset)
            let manifest = try SegmentManifest.decode(try await base.get(key: manifestKey, range: nil),
                                                      key: manifestKey, layout: layout)
            #expect(manifest.rewrites == 1 && manifest.bytes == log.sealedSegmentFiles()[0].bytes)
            try store.close()
        }
    }

    @Test("an ETag that is not the MD5: an error naming key, store, expected and got; counted; no manifest")
    func etagMismatch() async throws {
        try await withTemporaryDirectory { directory in
            let store = try openStore(directory + "/data")
            let base = try DirectoryObjectStore(directory: directory + "/bucket")
            let objects = HookedObjectStore(base)
            objects.hooks.withLock { $0.etag = { _ in "9b2cf535f27731c974343645a3985328-2" } }
            let testMetrics = TestMetrics()
            let handler = RecordingLogHandler()
            let archiver = makeArchiver(store, objects, metrics: ArchiveMetrics(factory: testMetrics),
                                        logger: makeLogger(handler))
            let log = try publish(store, count: 20)
            let round = await archiver.runOnce()
            #expect(round.failure == .invalidResponse && round.uploaded == 0)
            #expect(puts(base, endingWith: ".manifest").isEmpty)
            let key = layout.segmentLog(topic: topic, baseOffset: 0, rewrites: 0)
            let errors = handler.messages(atLeast: .error)
            #expect(errors.contains {
                $0.contains(key) && $0.contains(base.displayName)
                    && $0.contains("ETag 9b2cf535f27731c974343645a3985328-2, expected the MD5")
            })
            #expect(try testMetrics.expectCounter("telex_archive_errors_total", [("operation", "put")]).totalValue == 1)

            // Without an ETag the size is checked by a HEAD, and the upload goes through.
            objects.hooks.withLock { $0.etag = { _ in nil } }
            let heads = base.calls("head")
            let next = await archiver.runOnce()
            #expect(next.failure == nil && next.uploaded == log.sealedSegmentFiles().count)
            #expect(base.calls("head") >= heads + 2 * next.uploaded)
            try store.close()
        }
    }

    @Test("a manifest whose .log object is missing is not adopted: the upload is redone")
    func adoptionChecksTheLogObject() async throws {
        try await withTemporaryDirectory { directory in
            let store = try openStore(directory + "/data")
            let objects = try DirectoryObjectStore(directory: directory + "/bucket")
            let last = try publish(store, count: 40).sealedSegmentFiles().last!
            _ = await makeArchiver(store, objects).runOnce()
            try dropLastStateLine(directory + "/data")
            let logKey = layout.segmentLog(topic: topic, baseOffset: last.baseOffset, rewrites: 0)
            try await objects.delete(key: logKey)

            let round = await makeArchiver(store, objects).runOnce()
            #expect(round.uploaded == 1 && round.adopted == 0)
            #expect(try await objects.get(key: logKey, range: nil) == (try ArchiveFiles.readFile(last.logPath)))
            try store.close()
        }
    }

    @Test("a manifest with another sha256 than the local file is not adopted: the upload is redone")
    func differentManifestNotAdopted() async throws {
        try await withTemporaryDirectory { directory in
            let store = try openStore(directory + "/data")
            let objects = try DirectoryObjectStore(directory: directory + "/bucket")
            let last = try publish(store, count: 40).sealedSegmentFiles().last!
            _ = await makeArchiver(store, objects).runOnce()
            try dropLastStateLine(directory + "/data")
            let manifestKey = layout.manifest(topic: topic, baseOffset: last.baseOffset)
            var manifest = try SegmentManifest.decode(try await objects.get(key: manifestKey, range: nil),
                                                      key: manifestKey, layout: layout)
            let right = manifest.sha256
            manifest.sha256 = String(repeating: "0", count: 64)
            _ = try await objects.putBytes(key: manifestKey, bytes: manifest.encoded())

            let round = await makeArchiver(store, objects).runOnce()
            #expect(round.uploaded == 1 && round.adopted == 0)
            let redone = try SegmentManifest.decode(try await objects.get(key: manifestKey, range: nil),
                                                    key: manifestKey, layout: layout)
            #expect(redone.sha256 == right)
            try store.close()
        }
    }
}
