import Foundation
import NIOCore
import Synchronization
import TelexProtocol
import TelexStorage
import Testing

@testable import TelexArchive

@Suite("ArchiveCache, catalog, replica, restore: deleted topics, bounds, errors", .timeLimit(.minutes(1)))
struct CacheReviewTests {
    @Test("topicDeleted drops the catalog's entries and the cached copies; a fetch then names topic and base")
    func topicDeleted() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try await Fixture(directory)
            let cache = try fixture.cache()
            let base = fixture.sealed[1].baseOffset
            let path = try await cache.fetch(topic: topic, baseOffset: base)

            cache.topicDeleted(topic)
            #expect(cache.archivedSegments(of: topic).isEmpty)
            #expect(cache.cachedBaseOffsets(of: topic).isEmpty && !FileIO.exists(path))
            #expect(cache.state.withLock { $0.bytes } == 0)
            let error = await #expect(throws: TelexError.self) { try await cache.fetch(topic: topic, baseOffset: base) }
            #expect(error?.code == .storageFailure && error?.topic == topic && error?.offset == base)
            #expect(error?.message.contains("topic '\(topic)' has no archived segment at base offset \(base)") == true)
            try fixture.store.close()
        }
    }

    @Test("a download in flight when its topic is deleted lands in no cache")
    func deletedDuringDownload() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try await Fixture(directory)
            let cache = try fixture.cache()
            fixture.objects.holdGets()
            let fetch = Task { try await cache.fetch(topic: topic, baseOffset: fixture.sealed[0].baseOffset) }
            while fixture.objects.heldGets < 1 { await Task.yield() }
            cache.topicDeleted(topic)
            fixture.objects.releaseGets()
            let error = await #expect(throws: TelexError.self) { try await fetch.value }
            #expect(error?.message.contains("was deleted while segment") == true)
            #expect(try cache.cachedBaseOffsets(of: topic).isEmpty && fixture.files().isEmpty)
            #expect(cache.state.withLock { $0.bytes } == 0)
            try fixture.store.close()
        }
    }

    @Test("at most 4 segments download at once; the others wait for a slot")
    func downloadsBounded() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try await Fixture(directory, count: 60)
            let bases = Array(fixture.sealed.prefix(6).map(\.baseOffset))
            #expect(bases.count == 6)
            let cache = try fixture.cache()
            fixture.objects.holdGets()
            let fetches = bases.map { base in Task { try await cache.fetch(topic: topic, baseOffset: base) } }
            while fixture.objects.heldGets < 4 || cache.downloadSlots.waiting < 2 { await Task.yield() }
            #expect(cache.downloadSlots.active == 4 && cache.downloadSlots.waiting == 2)
            #expect(fixture.objects.heldGets == 4)
            fixture.objects.releaseGets()
            for fetch in fetches { _ = try await fetch.value }
            #expect(cache.downloadSlots.active == 0 && cache.downloadSlots.waiting == 0)
            try fixture.store.close()
        }
    }

    @Test("a prefetch never evicts a prefetched segment not read yet; the cache's minimum is enforced")
    func prefetchDoesNotThrash() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try await Fixture(directory, count: 60)
            let bases = fixture.sealed.map(\.baseOffset)
            let cache = try fixture.cache(bytes: 2 * fixture.sealed.map(\.bytes).max()!, prefetchCount: 2)
            _ = try await cache.fetch(topic: topic, baseOffset: bases[0])
            await cache.settle()
            #expect(cache.cachedBaseOffsets(of: topic) == [bases[1], bases[2]])
            // The reader reaches segment 1: segment 2 (prefetched, unread) stays; segment 3 has no room.
            #expect(cache.cachedLogFile(topic: topic, baseOffset: bases[1]) != nil)
            await cache.settle()
            #expect(cache.cachedBaseOffsets(of: topic).contains(bases[2]))

            let error = #expect(throws: TelexError.self) {
                try ArchiveCache(directory: directory + "/small", objectStore: fixture.objects, catalog: fixture.catalog,
                                 cacheBytes: 8192, segmentBytes: 4096, logger: makeLogger())
            }
            #expect(error?.code == .invalidRequest && error?.message.contains("at least 12288 bytes") == true)
            try fixture.store.close()
        }
    }

    @Test("a local file error while fetching names the topic, the segment and its offsets")
    func localErrorsNamed() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try await Fixture(directory)
            let cache = try fixture.cache()
            // A file where the topic's directory should be: the .part cannot be created.
            try ArchiveFiles.writeFile(fixture.cacheDirectory + "/" + topic, ByteBuffer(string: "in the way"))
            let segment = fixture.sealed[0]
            let error = await #expect(throws: TelexError.self) {
                try await cache.fetch(topic: topic, baseOffset: segment.baseOffset)
            }
            #expect(error?.code == .storageFailure && error?.topic == topic && error?.offset == segment.baseOffset)
            #expect(error?.message.hasPrefix("""
                archive cache: fetching segment \(ArchiveLayout.base20(segment.baseOffset)) of topic '\(topic)' \
                (offsets \(segment.baseOffset)-\(segment.nextOffset - 1)): open
                """) == true)
            try fixture.store.close()
        }
    }

    @Test("the catalog hands out its segments without rebuilding them, and keeps them sorted")
    func catalogSharesSegments() {
        let catalog = ArchiveCatalog()
        for base: Int64 in [30, 10, 20, 40] {
            let segment = ArchivedSegment(baseOffset: base, nextOffset: base + 10, bytes: 100, rewrites: 0,
                                          lastAppendTime: nil)
            catalog.record(ArchiveEntry(segment: segment, sha256: "", logKey: "k\(base)", compactedKey: nil),
                           topic: topic)
        }
        let first = catalog.segments(of: topic)
        let second = catalog.segments(of: topic)
        #expect(first.map(\.baseOffset) == [10, 20, 30, 40])
        #expect(first.withUnsafeBufferPointer { $0.baseAddress } == second.withUnsafeBufferPointer { $0.baseAddress })
        catalog.removeTopic(topic)
        #expect(catalog.segments(of: topic).isEmpty && catalog.topics.isEmpty)
    }

    @Test("a manifest GET failing mid-poll still reports the topics recorded before it")
    func replicaPollFailureReports() async throws {
        try await withTemporaryDirectory { directory in
            let store = try openStore(directory + "/data")
            let base = try DirectoryObjectStore(directory: directory + "/bucket")
            try publish(store, count: 20)
            let sports = try store.createLog("sports.wire").log
            for index in 0..<20 { _ = try sports.append(makeBatch(seed: index)) }
            try sports.sync()
            #expect(await makeArchiver(store, base).runOnce().pending == 0)
            let objects = HookedObjectStore(base)
            objects.hooks.withLock { hooks in
                hooks.failGet = { key in key.hasPrefix(layout.topicPrefix("sports.wire")) }
            }
            let changes = Mutex<[[String]]>([])
            let replica = ReplicaCatalog(objectStore: objects, layout: layout, logger: makeLogger()) { topics in
                changes.withLock { $0.append(topics) }
            }
            await #expect(throws: ObjectStoreError.self) { try await replica.pollOnce() }
            #expect(changes.withLock { $0 } == [[topic]])
            objects.hooks.withLock { $0.failGet = nil }
            #expect(try await replica.pollOnce() == ["sports.wire"])
            #expect(changes.withLock { $0 } == [[topic], ["sports.wire"]])
            try store.close()
        }
    }

    @Test("restore refuses a directory with consumer offsets")
    func restoreRefusesConsumers() async throws {
        try await withTemporaryDirectory { directory in
            let objects = try DirectoryObjectStore(directory: directory + "/bucket")
            try FileIO.makeDirectory(directory + "/restored/consumers")
            try ArchiveFiles.writeFile(directory + "/restored/consumers/indexer.offsets", ByteBuffer(string: "x"))
            let error = await #expect(throws: TelexError.self) {
                try await ArchiveRestore.restore(from: objects, layout: layout, into: directory + "/restored",
                                                 logger: makeLogger())
            }
            #expect(error?.code == .invalidRequest)
            #expect(error?.message.contains("already has consumer offsets (consumers/indexer.offsets)") == true)
        }
    }
}

@Suite("ArchiveCache: a segment replaced under the same key", .timeLimit(.minutes(1)))
struct CacheReplacedSegmentTests {
    @Test("a catalog entry with another sha256 (a re-created topic seen by a replica) is not served the old copy")
    func replacedSegmentRefetched() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try await Fixture(directory)
            let cache = try fixture.cache()
            let first = fixture.sealed[0]
            _ = try await cache.fetch(topic: topic, baseOffset: first.baseOffset)
            // The new topic's segment 0 (here: the bytes of the earlier segment 1) under the same keys.
            let newBytes = try ArchiveFiles.readFile(fixture.sealed[1].logPath)
            var entry = fixture.catalog.entries(of: topic)[0]
            _ = try await fixture.objects.putBytes(key: entry.logKey, bytes: newBytes)
            entry.sha256 = try FileDigest(path: fixture.sealed[1].logPath, length: newBytes.readableBytes).sha256
            entry.segment.bytes = newBytes.readableBytes
            fixture.catalog.record(entry, topic: topic)

            #expect(cache.cachedLogFile(topic: topic, baseOffset: first.baseOffset) == nil)
            let path = try await cache.fetch(topic: topic, baseOffset: first.baseOffset)
            #expect(try ArchiveFiles.readFile(path) == newBytes)
            #expect(cache.cachedLogFile(topic: topic, baseOffset: first.baseOffset) == path)
            #expect(cache.state.withLock { $0.bytes } == newBytes.readableBytes)
            try fixture.store.close()
        }
    }
}

@Suite("ReplicaCatalog: a topic deleted and created again on the primary", .timeLimit(.minutes(1)))
struct ReplicaRecreatedTopicTests {
    @Test("manifests gone from the bucket leave the replica's catalog; the new topic's segments replace them")
    func vanishedManifests() async throws {
        try await withTemporaryDirectory { directory in
            let store = try openStore(directory + "/data")
            let objects = try DirectoryObjectStore(directory: directory + "/bucket")
            let catalog = ArchiveCatalog()
            let archiver = makeArchiver(store, objects, catalog: catalog)
            let replica = ReplicaCatalog(objectStore: objects, layout: layout, logger: makeLogger()) { _ in }
            try publish(store, count: 40)
            _ = await archiver.runOnce()
            #expect(try await replica.pollOnce() == [topic])

            // Deleted through the broker (the store's tier, the cache, marks it in the catalog).
            try store.deleteLog(topic)
            catalog.markDeleted(topic)
            let sealed = try publish(store, count: 10, from: 500).sealedSegmentFiles()
            _ = await archiver.runOnce()
            #expect(try await replica.pollOnce() == [topic])
            #expect(replica.catalog.segments(of: topic).map(\.baseOffset) == sealed.map(\.baseOffset))
            #expect(replica.catalog.segments(of: topic).map(\.bytes) == sealed.map(\.bytes))
            try store.close()
        }
    }
}
