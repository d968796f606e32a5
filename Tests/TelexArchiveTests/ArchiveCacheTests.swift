import Foundation
import MetricsTestKit
import NIOCore
import TelexProtocol
import TelexStorage
import Testing

@testable import TelexArchive

/// A primary that archived `count` batches, and a cache over its archive.
struct Fixture {
    let store: TopicStore
    let objects: DirectoryObjectStore
    let catalog: ArchiveCatalog
    let sealed: [SealedSegmentFile]
    let cacheDirectory: String

    init(_ directory: String, count: Int = 40) async throws {
        store = try openStore(directory + "/data")
        objects = try DirectoryObjectStore(directory: directory + "/bucket")
        catalog = ArchiveCatalog()
        sealed = try publish(store, count: count).sealedSegmentFiles()
        #expect(await makeArchiver(store, objects, catalog: catalog).runOnce().pending == 0)
        cacheDirectory = directory + "/data/archive-cache"
    }

    /// A cache over the archive; without prefetching unless asked, so tests can count GETs and order uses.
    func cache(bytes: Int = 512 << 20, rangeBytes: Int = ArchiveCache.defaultRangeBytes, prefetchCount: Int = 0,
               metrics: ArchiveMetrics = ArchiveMetrics()) throws -> ArchiveCache {
        try ArchiveCache(directory: cacheDirectory, objectStore: objects, catalog: catalog, cacheBytes: bytes,
                         segmentBytes: nil, rangeBytes: rangeBytes, prefetchCount: prefetchCount, logger: makeLogger(), metrics: metrics)
    }

    func files() throws -> [String] {
        try ArchiveFiles.listDirectory(cacheDirectory + "/" + topic)
    }
}

@Suite("ArchiveCache: fetches, checks, bounds", .timeLimit(.minutes(1)))
struct ArchiveCacheTests {
    @Test("a fetch downloads the segment, checks it and serves it from the cache afterwards")
    func fetchAndHit() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try await Fixture(directory)
            let cache = try fixture.cache()
            let segment = fixture.sealed[1]
            #expect(cache.archivedSegments(of: topic).map(\.baseOffset) == fixture.sealed.map(\.baseOffset))
            #expect(cache.cachedLogFile(topic: topic, baseOffset: segment.baseOffset) == nil)

            let path = try await cache.fetch(topic: topic, baseOffset: segment.baseOffset)
            #expect(try ArchiveFiles.readFile(path) == (try ArchiveFiles.readFile(segment.logPath)))
            #expect(cache.cachedLogFile(topic: topic, baseOffset: segment.baseOffset) == path)
            #expect(try fixture.files().contains(ArchiveLayout.base20(segment.baseOffset) + ".r0.log"))
            // Cached: no second download.
            let gets = fixture.objects.calls("get")
            #expect(try await cache.fetch(topic: topic, baseOffset: segment.baseOffset) == path)
            #expect(fixture.objects.calls("get") == gets)
            // Reopening empties it: nothing in a cache directory is trusted across restarts.
            await cache.settle()
            _ = try fixture.cache()
            #expect(try fixture.files().isEmpty)
            try fixture.store.close()
        }
    }

    @Test("small ranges: one GET per range, each written at its offset; the bytes are counted")
    func rangedGets() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try await Fixture(directory)
            let testMetrics = TestMetrics()
            let cache = try fixture.cache(rangeBytes: 1000, metrics: ArchiveMetrics(factory: testMetrics))
            let segment = fixture.sealed[3]
            let gets = fixture.objects.calls("get")
            let path = try await cache.fetch(topic: topic, baseOffset: segment.baseOffset)
            #expect(try ArchiveFiles.readFile(path) == (try ArchiveFiles.readFile(segment.logPath)))
            #expect(fixture.objects.calls("get") == gets + (segment.bytes + 999) / 1000)
            #expect(try testMetrics.expectCounter("telex_archive_fetched_bytes_total").totalValue == Int64(segment.bytes))
            #expect(try testMetrics.expectGauge("telex_archive_cache_bytes").lastValue == Double(segment.bytes))
            try fixture.store.close()
        }
    }

    @Test("a corrupted object is DATA_LOSS naming topic and offsets, and leaves no file")
    func corruptedObject() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try await Fixture(directory)
            let cache = try fixture.cache()
            let segment = fixture.sealed[0]
            try fixture.objects.corrupt(key: layout.segmentLog(topic: topic, baseOffset: segment.baseOffset, rewrites: 0),
                                        at: 100)

            let error = await #expect(throws: TelexError.self) {
                try await cache.fetch(topic: topic, baseOffset: segment.baseOffset)
            }
            #expect(error?.code == .dataLoss)
            #expect(error?.topic == topic && error?.offset == segment.baseOffset)
            #expect(error?.message.contains("topic '\(topic)' (offsets \(segment.baseOffset)-\(segment.nextOffset - 1))") == true)
            #expect(try fixture.files().isEmpty)
            #expect(cache.cachedLogFile(topic: topic, baseOffset: segment.baseOffset) == nil)
            try fixture.store.close()
        }
    }

    @Test("an unreachable store is STORAGE_FAILURE naming the archive")
    func unavailableStore() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try await Fixture(directory)
            let cache = try fixture.cache()
            fixture.objects.setUnavailable(true)
            let error = await #expect(throws: TelexError.self) {
                try await cache.fetch(topic: topic, baseOffset: fixture.sealed[0].baseOffset)
            }
            #expect(error?.code == .storageFailure)
            #expect(error?.message.hasPrefix("archive \(fixture.objects.displayName) unavailable: ") == true)
            #expect(error?.topic == topic)
            fixture.objects.setUnavailable(false)
            _ = try await cache.fetch(topic: topic, baseOffset: fixture.sealed[0].baseOffset)
            try fixture.store.close()
        }
    }

    @Test("the byte bound evicts the least recently used segment")
    func evictsLeastRecentlyUsed() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try await Fixture(directory)
            let segments = Array(fixture.sealed.prefix(3))
            let cache = try fixture.cache(bytes: 2 * segments.map(\.bytes).max()!)
            let first = try await cache.fetch(topic: topic, baseOffset: segments[0].baseOffset)
            _ = try await cache.fetch(topic: topic, baseOffset: segments[1].baseOffset)
            // Segment 0 used again after 1: segment 1 is the least recently used when 2 arrives.
            _ = try await cache.fetch(topic: topic, baseOffset: segments[0].baseOffset)
            _ = try await cache.fetch(topic: topic, baseOffset: segments[2].baseOffset)

            #expect(cache.cachedBaseOffsets(of: topic) == [segments[0].baseOffset, segments[2].baseOffset])
            #expect(!(try fixture.files().contains(ArchiveLayout.base20(segments[1].baseOffset) + ".r0.log")))
            #expect(FileIO.exists(first))
            try fixture.store.close()
        }
    }

    @Test("concurrent fetches of one segment download it once")
    func singleFlight() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try await Fixture(directory)
            let cache = try fixture.cache()
            let base = fixture.sealed[2].baseOffset
            let gets = fixture.objects.calls("get")
            fixture.objects.holdGets()
            let first = Task { try await cache.fetch(topic: topic, baseOffset: base) }
            while fixture.objects.heldGets < 1 { await Task.yield() }
            // The second asks while the first's download is held in its GET.
            let second = Task { try await cache.fetch(topic: topic, baseOffset: base) }
            while cache.state.withLock({ $0.joined }) < 1 { await Task.yield() }
            fixture.objects.releaseGets()
            let paths = try await [first.value, second.value]
            #expect(paths[0] == paths[1])
            // One segment of under 8 MiB: one ranged GET.
            #expect(fixture.objects.calls("get") == gets + 1)
            try fixture.store.close()
        }
    }

    @Test("a fetch of, or a hit on, segment k prefetches k+1 and k+2 (and no further)")
    func prefetch() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try await Fixture(directory, count: 60)
            let bases = fixture.sealed.map(\.baseOffset)
            #expect(bases.count >= 5)
            let cache = try fixture.cache(prefetchCount: 2)
            _ = try await cache.fetch(topic: topic, baseOffset: bases[0])
            await cache.settle()
            #expect(cache.cachedBaseOffsets(of: topic) == Array(bases[0...2]))

            #expect(cache.cachedLogFile(topic: topic, baseOffset: bases[1]) != nil)
            await cache.settle()
            #expect(cache.cachedBaseOffsets(of: topic) == Array(bases[0...3]))
            try fixture.store.close()
        }
    }
}
