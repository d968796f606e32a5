import Foundation
import NIOCore
import TelexProtocol
import TelexStorage
import Testing

@testable import TelexArchive

/// A primary whose oldest segments are only in the archive: small segments, archived, then deleted locally by
/// `localRetentionBytes` 0. Every fifth batch's records have the key `secret`.
private struct PurgeFixture {
    static let secret = "urn:telex:article:to-erase"

    let dataDirectory: String
    let objects: DirectoryObjectStore
    let catalog: ArchiveCatalog
    let cache: ArchiveCache
    let store: TopicStore
    let log: TopicLog

    init(_ directory: String, objects: (any ObjectStore)? = nil, base: DirectoryObjectStore? = nil) async throws {
        dataDirectory = directory + "/data"
        let bucket = try base ?? DirectoryObjectStore(directory: directory + "/bucket")
        self.objects = bucket
        catalog = ArchiveCatalog()
        cache = try ArchiveCache(
            directory: dataDirectory + "/archive-cache", objectStore: objects ?? bucket, catalog: catalog,
            cacheBytes: 1 << 20, segmentBytes: nil, rangeBytes: ArchiveCache.defaultRangeBytes, prefetchCount: 0,
            logger: makeLogger(), metrics: ArchiveMetrics(), layout: layout, dataDirectory: dataDirectory)
        store = try TopicStore(
            directory: dataDirectory,
            configuration: LogConfiguration(segmentBytes: 4096, fsync: .never, localRetentionBytes: 0),
            logger: makeLogger(), archive: cache)
        log = try store.createLog(topic).log
        for index in 0..<30 {
            _ = try log.append(makeBatch(seed: index, key: index % 5 == 2 ? Self.secret : nil))
        }
        try log.sync()
        #expect(await makeArchiver(store, objects ?? bucket, catalog: catalog).runOnce().pending == 0)
        #expect(try log.applyRetention() > 0)
    }

    /// Every record from offset 0 through the log, archived segments fetched into the cache first (so the blocking
    /// read never waits for a fetch).
    func replay() async throws -> [(Int64, String, String)] {
        for segment in cache.archivedSegments(of: topic) {
            _ = try await cache.fetch(topic: topic, baseOffset: segment.baseOffset)
        }
        return try records(of: log)
    }

    func manifest(_ base: Int64) async throws -> SegmentManifest {
        let key = layout.manifest(topic: topic, baseOffset: base)
        return try SegmentManifest.decode(try await objects.get(key: key, range: nil), key: key, layout: layout)
    }
}

@Suite("ArchiveCache.purgeArchived: a purge reaches segments only the archive holds", .timeLimit(.minutes(1)))
struct ArchivePurgeTests {
    @Test("purged archive-only segments are uploaded as r1 without the key; r0 is deleted; the replay lacks only the key")
    func purgeRewritesArchivedSegments() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try await PurgeFixture(directory)
            let localStart = fixture.log.localStartOffset
            let before = try await fixture.replay()
            let secretBelow = before.filter { $0.1 == PurgeFixture.secret && $0.0 < localStart }.map(\.0)
            #expect(!secretBelow.isEmpty)
            let archivedBases = fixture.catalog.segments(of: topic).map(\.baseOffset).filter { $0 < localStart }

            _ = try fixture.log.purge(key: PurgeFixture.secret)
            let rewrites = try await fixture.cache.purgeArchived(
                topic: topic, key: PurgeFixture.secret, below: localStart)
            #expect(rewrites.flatMap(\.removedOffsets) == secretBelow)
            #expect(rewrites.map(\.baseOffset) == rewrites.map(\.baseOffset).sorted())

            let state = try ArchiveState.load(
                path: ArchiveState.path(dataDirectory: fixture.dataDirectory, topic: topic), logger: makeLogger())
            for rewrite in rewrites {
                let base = rewrite.baseOffset
                let manifest = try await fixture.manifest(base)
                #expect(manifest.rewrites == 1)
                #expect(manifest.logKey == layout.segmentLog(topic: topic, baseOffset: base, rewrites: 1))
                #expect(manifest.compactedKey == layout.compactionMarker(topic: topic, baseOffset: base, rewrites: 1))
                let bytes = try await fixture.objects.get(key: manifest.logKey, range: nil)
                #expect(bytes.readableBytes == manifest.bytes)
                #expect(FileDigest.md5(bytes) == manifest.md5)
                var keys: [String] = []
                for batch in try RecordBatch.split(bytes) {
                    let (_, decoded) = try RecordBatch.decodeRecords(batch)
                    keys += decoded.map { String(buffer: $0.key) }
                }
                #expect(!keys.isEmpty || rewrite.recordsKept == 0)
                #expect(!keys.contains(PurgeFixture.secret))
                #expect(try await fixture.objects.head(key: manifest.compactedKey!)?.size == 46)
                // The superseded r0 objects are gone.
                let left = try await fixture.objects.list(prefix: layout.rewritesPrefix(topic: topic, baseOffset: base))
                #expect(left.allSatisfy { $0.key.contains(".r1.") })
                #expect(state[base]?.rewrites == 1 && state[base]?.sha256 == manifest.sha256)
                #expect(fixture.catalog.entry(topic: topic, baseOffset: base)?.0.segment.rewrites == 1)
            }
            // Segments without the key are untouched.
            for base in archivedBases where !rewrites.contains(where: { $0.baseOffset == base }) {
                #expect(try await fixture.manifest(base).rewrites == 0)
            }

            let after = try await fixture.replay()
            let expected = before.filter { $0.1 != PurgeFixture.secret }
            #expect(after.map(\.0) == expected.map(\.0))
            #expect(after.map(\.2) == expected.map(\.2))
            // The archiver sees nothing to do for the archive-only segments.
            let round = await makeArchiver(fixture.store, fixture.objects, catalog: fixture.catalog).runOnce()
            #expect(round.failure == nil)
            // A second purge finds nothing.
            let puts = fixture.objects.putKeys.count
            #expect(try await fixture.cache.purgeArchived(topic: topic, key: PurgeFixture.secret, below: localStart)
                .isEmpty)
            #expect(fixture.objects.putKeys.count == puts)
        }
    }

    @Test("a purge that failed after its manifests: the next purge adopts them, never rewrites or deletes under them")
    func failedAfterManifestIsAdopted() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try await PurgeFixture(directory)
            let localStart = fixture.log.localStartOffset
            let statePath = ArchiveState.path(dataDirectory: fixture.dataDirectory, topic: topic)
            // The state line cannot be written (a directory where the file was): the first manifest is written,
            // then the purge fails, the catalog still naming r0.
            let saved = try Data(contentsOf: URL(fileURLWithPath: statePath))
            try FileManager.default.removeItem(atPath: statePath)
            try FileManager.default.createDirectory(atPath: statePath, withIntermediateDirectories: false)
            await #expect(throws: TelexError.self) {
                _ = try await fixture.cache.purgeArchived(topic: topic, key: PurgeFixture.secret, below: localStart)
            }
            try FileManager.default.removeItem(atPath: statePath)
            try saved.write(to: URL(fileURLWithPath: statePath))
            let purgedBase = try #require(
                await asyncFirst(fixture.catalog.segments(of: topic).map(\.baseOffset)) { base in
                    (try? await fixture.manifest(base).rewrites) == 1
                })
            #expect(fixture.catalog.entry(topic: topic, baseOffset: purgedBase)?.0.segment.rewrites == 0)

            // Another purge (of a key nobody has): it adopts the r1 manifest, keeps r1's objects, deletes r0's.
            #expect(try await fixture.cache.purgeArchived(topic: topic, key: "urn:nobody", below: localStart).isEmpty)
            #expect(fixture.catalog.entry(topic: topic, baseOffset: purgedBase)?.0.segment.rewrites == 1)
            let left = try await fixture.objects.list(prefix: layout.rewritesPrefix(topic: topic, baseOffset: purgedBase))
            #expect(!left.isEmpty && left.allSatisfy { $0.key.contains(".r1.") })
            // The segment the first purge rewrote is read as r1: the key stays erased there.
            let purgedEnd = try #require(fixture.catalog.entry(topic: topic, baseOffset: purgedBase)?.0.segment.nextOffset)
            let replayed = try await fixture.replay()
            #expect(!replayed.contains { $0.1 == PurgeFixture.secret && (purgedBase..<purgedEnd).contains($0.0) })
            #expect(replayed.contains { (purgedBase..<purgedEnd).contains($0.0) })
        }
    }

    @Test("a key no archived segment holds uploads nothing")
    func absentKey() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try await PurgeFixture(directory)
            let puts = fixture.objects.putKeys
            let rewrites = try await fixture.cache.purgeArchived(
                topic: topic, key: "urn:telex:article:never-published", below: fixture.log.localStartOffset)
            #expect(rewrites.isEmpty)
            #expect(fixture.objects.putKeys == puts)
            #expect(fixture.catalog.segments(of: topic).allSatisfy { $0.rewrites == 0 })
        }
    }

    @Test("a store failing mid-upload is an error naming the store; the old manifest stays valid; a rerun finishes")
    func storeUnavailable() async throws {
        try await withTemporaryDirectory { directory in
            let bucket = try DirectoryObjectStore(directory: directory + "/bucket")
            let hooked = HookedObjectStore(bucket)
            let fixture = try await PurgeFixture(directory, objects: hooked, base: bucket)
            let localStart = fixture.log.localStartOffset
            let before = try await fixture.replay()
            let entries = fixture.catalog.entries(of: topic)
            // The rewritten .log is stored, then the store goes away before the marker and the manifest.
            hooked.hooks.withLock { $0.afterPutFile = { _ in bucket.setUnavailable(true) } }
            var failure: TelexError?
            do throws(TelexError) {
                _ = try await fixture.cache.purgeArchived(topic: topic, key: PurgeFixture.secret, below: localStart)
            } catch {
                failure = error
            }
            #expect(failure?.code == .storageFailure)
            #expect(failure?.message.contains(bucket.displayName) == true)
            #expect(failure?.message.contains("topic '\(topic)'") == true)
            bucket.setUnavailable(false)
            hooked.hooks.withLock { $0.afterPutFile = nil }
            // Nothing committed: every manifest is still r0 and readable, and so are the catalog and the replay.
            for entry in entries {
                let manifest = try await fixture.manifest(entry.segment.baseOffset)
                #expect(manifest.rewrites == 0 && manifest.sha256 == entry.sha256)
            }
            #expect(fixture.catalog.entries(of: topic) == entries)
            #expect(try await fixture.replay().map(\.0) == before.map(\.0))

            let rewrites = try await fixture.cache.purgeArchived(
                topic: topic, key: PurgeFixture.secret, below: localStart)
            #expect(!rewrites.isEmpty)
            #expect(try await fixture.replay().filter { $0.0 < localStart }.allSatisfy { $0.1 != PurgeFixture.secret })
        }
    }

    @Test("a damaged cached copy is refused with DATA_LOSS naming the topic and offset; nothing is uploaded")
    func damagedCopy() async throws {
        try await withTemporaryDirectory { directory in
            let fixture = try await PurgeFixture(directory)
            let first = try #require(fixture.catalog.segments(of: topic).first)
            let path = try await fixture.cache.fetch(topic: topic, baseOffset: first.baseOffset)
            var bytes = try ArchiveFiles.readFile(path)
            bytes.setInteger(~bytes.getInteger(at: RecordBatchHeader.size + 10, as: UInt8.self)!,
                             at: RecordBatchHeader.size + 10)
            try ArchiveFiles.writeFile(path, bytes)
            let puts = fixture.objects.putKeys
            do throws(TelexError) {
                _ = try await fixture.cache.purgeArchived(
                    topic: topic, key: PurgeFixture.secret, below: fixture.log.localStartOffset)
                Issue.record("a damaged copy was purged")
            } catch {
                #expect(error.code == .dataLoss)
                #expect(error.topic == topic && error.offset == first.baseOffset)
            }
            #expect(fixture.objects.putKeys == puts)
        }
    }
}

/// The first element of `values` for which `predicate` holds.
private func asyncFirst<T: Sendable>(_ values: [T], where predicate: (T) async -> Bool) async -> T? {
    for value in values where await predicate(value) { return value }
    return nil
}
