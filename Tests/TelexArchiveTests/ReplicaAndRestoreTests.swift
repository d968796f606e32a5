import Foundation
import NIOCore
import Synchronization
import TelexProtocol
import TelexStorage
import Testing

@testable import TelexArchive

@Suite("Replicas, restore, manifests", .timeLimit(.minutes(1)))
struct ReplicaAndRestoreTests {
    @Test("the replica catalog picks up new manifests, reports the topics and the primary's address")
    func replicaCatalog() async throws {
        try await withTemporaryDirectory { directory in
            let store = try openStore(directory + "/data")
            let objects = try DirectoryObjectStore(directory: directory + "/bucket")
            let primaryCatalog = ArchiveCatalog()
            let archiver = makeArchiver(store, objects, catalog: primaryCatalog)
            let changes = Mutex<[[String]]>([])
            let replica = ReplicaCatalog(objectStore: objects, layout: layout, logger: makeLogger()) { topics in
                changes.withLock { $0.append(topics) }
            }
            #expect(try await replica.pollOnce() == [])
            #expect(replica.primaryAddress == nil)

            try publish(store, count: 30)
            await archiver.writePrimary()
            _ = await archiver.runOnce()
            #expect(try await replica.pollOnce() == [topic])
            #expect(replica.catalog.entries(of: topic) == primaryCatalog.entries(of: topic))
            #expect(replica.primaryAddress == "primary.example:7400")
            let manifestsRead = objects.calls("get")
            #expect(try await replica.pollOnce() == [])
            #expect(objects.calls("get") == manifestsRead + 1)  // the primary object only

            try publish(store, count: 30, from: 100)
            _ = await archiver.runOnce()
            #expect(try await replica.pollOnce() == [topic])
            #expect(replica.catalog.entries(of: topic) == primaryCatalog.entries(of: topic))
            #expect(changes.withLock { $0 } == [[topic], [topic]])
            try store.close()
        }
    }

    @Test("a large archive: polls between full listings list each topic after its newest manifest only")
    func incrementalPolls() async throws {
        try await withTemporaryDirectory { directory in
            let store = try openStore(directory + "/data")
            let objects = try DirectoryObjectStore(directory: directory + "/bucket")
            let archiver = makeArchiver(store, objects)
            let replica = ReplicaCatalog(objectStore: objects, layout: layout, fullListEvery: 3, fullListBelow: 0,
                                         logger: makeLogger()) { _ in }
            try publish(store, count: 30)
            _ = await archiver.runOnce()
            #expect(try await replica.pollOnce() == [topic])  // poll 0: the whole prefix
            let known = replica.catalog.segments(of: topic).count
            try publish(store, count: 30, from: 100)
            _ = await archiver.runOnce()
            // Poll 1: the topic's keys after its newest known manifest only, which finds the new segments.
            let newestBefore = layout.manifest(
                topic: topic, baseOffset: replica.catalog.segments(of: topic)[known - 1].baseOffset)
            let requestsBefore = objects.listRequests.count
            #expect(try await replica.pollOnce() == [topic])
            let requests = objects.listRequests.dropFirst(requestsBefore)
            #expect(requests.map(\.prefix) == [layout.topicPrefix(topic)])
            #expect(requests.map(\.startAfter) == [newestBefore])
            #expect(replica.catalog.segments(of: topic).count > known)
            // A second topic shows at the next full listing (poll 3), not before.
            let other = try store.createLog("news.other").log
            for index in 0..<30 { _ = try other.append(makeBatch(seed: index)) }
            try other.sync()
            _ = await archiver.runOnce()
            #expect(try await replica.pollOnce() == [])  // poll 2
            #expect(try await replica.pollOnce() == ["news.other"])  // poll 3: full
            try store.close()
        }
    }

    @Test("object keys as the design names them, with and without a prefix")
    func layoutKeys() {
        let root = ArchiveLayout(prefix: "")
        #expect(root.segmentLog(topic: "news.wire", baseOffset: 1186, rewrites: 2)
            == "topics/news.wire/00000000000000001186.r2.log")
        #expect(root.primary == "primary" && root.consumerOffsets("indexer") == "consumers/indexer.offsets")
        let prefixed = ArchiveLayout(prefix: "/newsroom/prod/")
        #expect(prefixed.compactionMarker(topic: "news.wire", baseOffset: 0, rewrites: 1)
            == "newsroom/prod/topics/news.wire/00000000000000000000.r1.compacted")
        let manifestKey = prefixed.manifest(topic: "news.wire", baseOffset: 1186)
        #expect(manifestKey == "newsroom/prod/topics/news.wire/00000000000000001186.manifest")
        #expect(prefixed.manifestSegment(manifestKey)! == ("news.wire", 1186))
        #expect(prefixed.manifestSegment("newsroom/prod/topics/news.wire/00000000000000001186.r0.log") == nil)
        #expect(root.manifestSegment(manifestKey) == nil)
    }

    @Test("a manifest that does not match its key is rejected naming the key and the field")
    func manifestValidation() throws {
        let key = layout.manifest(topic: topic, baseOffset: 4096)
        var manifest = SegmentManifest(
            topic: topic, baseOffset: 4096, nextOffset: 4200, bytes: 10, sha256: String(repeating: "a", count: 64),
            md5: String(repeating: "b", count: 32), rewrites: 0, firstAppendTime: nil, lastAppendTime: nil,
            logKey: layout.segmentLog(topic: topic, baseOffset: 4096, rewrites: 0), compactedKey: nil, uploadedAt: 1)
        #expect(try SegmentManifest.decode(manifest.encoded(), key: key, layout: layout) == manifest)
        #expect(String(buffer: manifest.encoded()).hasPrefix("{\"baseOffset\":4096,\"bytes\":10,"))
        #expect(String(buffer: manifest.encoded()).contains("\"logKey\":\"newsroom/prod/topics/news.wire/"))

        manifest.nextOffset = 1
        var error = #expect(throws: TelexError.self) { try SegmentManifest.decode(manifest.encoded(), key: key, layout: layout) }
        #expect(error?.message.hasPrefix("archive manifest \(key): field 'nextOffset'") == true)
        error = #expect(throws: TelexError.self) {
            try SegmentManifest.decode(ByteBuffer(string: "{\"format\":1}"), key: key, layout: layout)
        }
        #expect(error?.code == .dataLoss && error?.message.contains("is missing") == true)
    }

    @Test("restore round trip: every archived record reads back identical from the restored directory")
    func restoreRoundTrip() async throws {
        try await withTemporaryDirectory { directory in
            let store = try openStore(directory + "/data")
            let objects = try DirectoryObjectStore(directory: directory + "/bucket")
            let archiver = makeArchiver(store, objects)
            let log = try publish(store, count: 50)
            try store.consumerOffsets.commit("indexer", topic: topic, offset: 17)
            _ = await archiver.runOnce()
            await archiver.uploadConsumerOffsets()
            let archivedEnd = log.sealedSegmentFiles().last!.nextOffset
            let original = try records(of: log).filter { $0.0 < archivedEnd }
            try store.close()

            let restoredDirectory = directory + "/restored"
            let summary = try await ArchiveRestore.restore(from: objects, layout: layout, into: restoredDirectory,
                                                           logger: makeLogger())
            #expect(summary.topics.map(\.topic) == [topic] && summary.consumers == 1)
            #expect(summary.topics[0].startOffset == 0 && summary.topics[0].endOffset == archivedEnd)

            let restored = try openStore(restoredDirectory)
            let restoredLog = try #require(restored.log(topic))
            #expect(restoredLog.endOffset == archivedEnd)
            let read = try records(of: restoredLog)
            #expect(read.count == original.count && read.count == Int(archivedEnd))
            #expect(zip(read, original).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 && $0.2 == $1.2 })
            #expect(restored.consumerOffsets.committed("indexer") == [topic: 17])
            // Restored segments count as archived: an archiver over the restored directory uploads nothing.
            let puts = objects.calls("put")
            #expect(await makeArchiver(restored, objects).runOnce() == Archiver.Round())
            #expect(objects.calls("put") == puts)
            try restored.close()

            await #expect(throws: TelexError.self) {
                try await ArchiveRestore.restore(from: objects, layout: layout, into: restoredDirectory, logger: makeLogger())
            }
        }
    }

    @Test("restore of a compacted topic: the markers come back, and the gaps read as gaps, not lost data")
    func restoreCompacted() async throws {
        try await withTemporaryDirectory { directory in
            let store = try openStore(directory + "/data")
            let objects = try DirectoryObjectStore(directory: directory + "/bucket")
            // Articles with keys of their own between versions of one front page: compaction leaves gaps among them.
            try publish(store, count: 10, key: "urn:telex:article:frontpage")
            try publish(store, count: 20, from: 100)
            let log = try publish(store, count: 10, from: 200, key: "urn:telex:article:frontpage")
            #expect(!(try log.compact(tombstoneRetentionMilliseconds: 0)).rewrites.isEmpty)
            _ = await makeArchiver(store, objects).runOnce()
            let sealed = log.sealedSegmentFiles()
            let archivedEnd = sealed.last!.nextOffset
            let original = try records(of: log).filter { $0.0 < archivedEnd }
            #expect(original.count > 30 && original.count < Int(archivedEnd))
            try store.close()

            let restoredDirectory = directory + "/restored"
            _ = try await ArchiveRestore.restore(from: objects, layout: layout, into: restoredDirectory, logger: makeLogger())
            let markers = try ArchiveFiles.listDirectory(restoredDirectory + "/topics/" + topic).filter {
                $0.hasSuffix(".compacted")
            }
            #expect(markers.count == sealed.filter { $0.compactionMarkerPath != nil }.count && !markers.isEmpty)
            let restored = try openStore(restoredDirectory)
            let restoredLog = try #require(restored.log(topic))
            #expect(restoredLog.sealedSegmentFiles().map(\.rewrites) == sealed.map(\.rewrites))
            let read = try records(of: restoredLog)
            #expect(read.count == original.count)
            #expect(zip(read, original).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 && $0.2 == $1.2 })
            try restored.close()
        }
    }
}
