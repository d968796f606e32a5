import Foundation
import MetricsTestKit
import NIOCore
import TelexProtocol
import TelexStorage
import Testing

@testable import TelexArchive

@Suite("Archiver: the upload protocol", .timeLimit(.minutes(1)))
struct ArchiverTests {
    @Test("every sealed segment is uploaded once, manifest last; a second round uploads nothing")
    func uploadsEachSegmentOnce() async throws {
        try await withTemporaryDirectory { directory in
            let store = try openStore(directory + "/data")
            let objects = try DirectoryObjectStore(directory: directory + "/bucket")
            let catalog = ArchiveCatalog()
            let log = try publish(store, count: 40)
            let sealed = log.sealedSegmentFiles()
            #expect(sealed.count >= 3)
            let archiver = makeArchiver(store, objects, catalog: catalog)

            let round = await archiver.runOnce()
            #expect(round == Archiver.Round(uploaded: sealed.count, adopted: 0, pending: 0, failure: nil))
            #expect(puts(objects, endingWith: ".log").count == sealed.count)
            // Per segment: the .log, then its manifest.
            let segmentPuts = objects.putKeys.filter { !$0.hasSuffix("primary") }
            for (index, file) in sealed.enumerated() {
                #expect(segmentPuts[2 * index] == layout.segmentLog(topic: topic, baseOffset: file.baseOffset, rewrites: 0))
                #expect(segmentPuts[2 * index + 1] == layout.manifest(topic: topic, baseOffset: file.baseOffset))
            }
            #expect(catalog.segments(of: topic).map(\.baseOffset) == sealed.map(\.baseOffset))
            #expect(catalog.segments(of: topic).map(\.bytes) == sealed.map(\.bytes))
            let manifestBytes = try await objects.get(key: layout.manifest(topic: topic, baseOffset: sealed[0].baseOffset), range: nil)
            let manifest = try SegmentManifest.decode(manifestBytes, key: layout.manifest(topic: topic, baseOffset: 0), layout: layout)
            let stored = try await objects.get(key: manifest.logKey, range: nil)
            #expect(stored == (try ArchiveFiles.readFile(sealed[0].logPath)))
            #expect(manifest.sha256 == (try FileDigest(path: sealed[0].logPath, length: sealed[0].bytes)).sha256)

            let putsBefore = objects.calls("put")
            #expect(await archiver.runOnce() == Archiver.Round())
            #expect(objects.calls("put") == putsBefore)
            // The state survives a restart: a new archiver uploads nothing either, and the catalog loads from it.
            #expect(await makeArchiver(store, objects).runOnce() == Archiver.Round())
            #expect(objects.calls("put") == putsBefore)
            let loaded = try ArchiveCatalog.load(dataDirectory: directory + "/data", layout: layout, logger: makeLogger())
            #expect(loaded.entries(of: topic) == catalog.entries(of: topic))
            try store.close()
        }
    }

    @Test("a crash after the manifest, before the state line (torn): the manifest is adopted, nothing re-uploaded")
    func crashAfterManifestAdopts() async throws {
        try await withTemporaryDirectory { directory in
            let store = try openStore(directory + "/data")
            let objects = try DirectoryObjectStore(directory: directory + "/bucket")
            try publish(store, count: 40)
            _ = await makeArchiver(store, objects).runOnce()
            // Tear the state file's last line in half, as a crash mid-append would.
            let statePath = ArchiveState.path(dataDirectory: directory + "/data", topic: topic)
            var state = try String(contentsOfFile: statePath, encoding: .utf8)
            state.removeLast(40)
            try state.write(toFile: statePath, atomically: false, encoding: .utf8)
            let putsBefore = objects.calls("put")
            let handler = RecordingLogHandler()

            let round = await makeArchiver(store, objects, logger: makeLogger(handler)).runOnce()
            #expect(round.adopted == 1 && round.uploaded == 0 && round.pending == 0)
            #expect(objects.calls("put") == putsBefore)
            #expect(handler.messages(atLeast: .warning).contains { $0.contains("unreadable line") })
            // The torn line was ended before the new one: the file loads whole again.
            let records = try ArchiveState.load(path: statePath, logger: makeLogger())
            #expect(records.count == store.log(topic)!.sealedSegmentFiles().count)
            try store.close()
        }
    }

    @Test("a crash after the .log PUT, before the manifest: the upload is redone and the manifest is right")
    func crashBeforeManifestRedoes() async throws {
        try await withTemporaryDirectory { directory in
            let store = try openStore(directory + "/data")
            let objects = try DirectoryObjectStore(directory: directory + "/bucket")
            let log = try publish(store, count: 40)
            _ = await makeArchiver(store, objects).runOnce()
            let last = log.sealedSegmentFiles().last!
            let manifestKey = layout.manifest(topic: topic, baseOffset: last.baseOffset)
            try await objects.delete(key: manifestKey)
            let statePath = ArchiveState.path(dataDirectory: directory + "/data", topic: topic)
            let lines = try String(contentsOfFile: statePath, encoding: .utf8).split(separator: "\n")
            try (lines.dropLast().joined(separator: "\n") + "\n").write(toFile: statePath, atomically: false, encoding: .utf8)

            let round = await makeArchiver(store, objects).runOnce()
            #expect(round.uploaded == 1 && round.adopted == 0)
            let manifest = try SegmentManifest.decode(
                try await objects.get(key: manifestKey, range: nil), key: manifestKey, layout: layout)
            #expect(manifest.bytes == last.bytes && manifest.nextOffset == last.nextOffset)
            #expect(manifest.sha256 == (try FileDigest(path: last.logPath, length: last.bytes)).sha256)
            try store.close()
        }
    }

    @Test("store unavailable: errors counted, publishing unaffected, everything uploaded once it is back")
    func unavailableStore() async throws {
        try await withTemporaryDirectory { directory in
            let store = try openStore(directory + "/data")
            let objects = try DirectoryObjectStore(directory: directory + "/bucket")
            let testMetrics = TestMetrics()
            let handler = RecordingLogHandler()
            let archiver = makeArchiver(store, objects, metrics: ArchiveMetrics(factory: testMetrics),
                                        logger: makeLogger(handler))
            try publish(store, count: 20)
            objects.setUnavailable(true)

            #expect(await archiver.writePrimary() == .unavailable)
            let first = await archiver.runOnce()
            #expect(first.failure == .unavailable && first.uploaded == 0 && first.pending > 0)
            _ = await archiver.runOnce()
            // The first call of a round for a topic without a state file lists the bucket's objects of the topic.
            #expect(try testMetrics.expectCounter("telex_archive_errors_total", [("operation", "list")]).totalValue == 2)
            #expect(try testMetrics.expectGauge("telex_archive_pending_segments").lastValue == Double(first.pending))
            // One warning for the outage, not one per round.
            #expect(handler.messages(atLeast: .warning).count == 1)
            let log = try publish(store, count: 20, from: 100)
            #expect(log.endOffset == 120)

            objects.setUnavailable(false)
            let round = await archiver.runOnce()
            #expect(round.failure == nil && round.pending == 0)
            #expect(round.uploaded == log.sealedSegmentFiles().count)
            #expect(try testMetrics.expectCounter("telex_archive_uploaded_segments_total").totalValue == Int64(round.uploaded))
            #expect(await archiver.writePrimary() == nil)
            let primary = try await objects.get(key: layout.primary, range: nil)
            #expect(String(buffer: primary).contains("\"address\":\"primary.example:7400\""))
            try store.close()
        }
    }

    @Test("rejected credentials: logged as an error with the store's message at every round, nothing stored")
    func deniedStore() async throws {
        try await withTemporaryDirectory { directory in
            let store = try openStore(directory + "/data")
            let objects = try DirectoryObjectStore(directory: directory + "/bucket")
            let handler = RecordingLogHandler()
            let archiver = makeArchiver(store, objects, logger: makeLogger(handler))
            try publish(store, count: 20)
            objects.setFailing(.denied)
            #expect(await archiver.runOnce().failure == .denied)
            #expect(await archiver.runOnce().failure == .denied)
            let errors = handler.messages(atLeast: .error)
            #expect(errors.count == 2 && errors.allSatisfy { $0.contains("403 AccessDenied") })
            #expect(objects.putKeys.isEmpty)
            try store.close()
        }
    }

    @Test("a compaction rewrite uploads r1 objects, updates the manifest and deletes r0")
    func compactionRewrite() async throws {
        try await withTemporaryDirectory { directory in
            let store = try openStore(directory + "/data")
            let objects = try DirectoryObjectStore(directory: directory + "/bucket")
            let catalog = ArchiveCatalog()
            let archiver = makeArchiver(store, objects, catalog: catalog)
            let log = try publish(store, count: 30, key: "urn:telex:article:frontpage")
            _ = await archiver.runOnce()
            let first = log.sealedSegmentFiles()[0]
            #expect(first.rewrites == 0)

            let report = try log.compact(tombstoneRetentionMilliseconds: 0)
            #expect(!report.rewrites.isEmpty)
            let rewritten = log.sealedSegmentFiles()[0]
            #expect(rewritten.rewrites == 1 && rewritten.compactionMarkerPath != nil)
            let round = await archiver.runOnce()
            #expect(round.uploaded == report.rewrites.count)

            let manifestKey = layout.manifest(topic: topic, baseOffset: first.baseOffset)
            let manifest = try SegmentManifest.decode(try await objects.get(key: manifestKey, range: nil), key: manifestKey, layout: layout)
            #expect(manifest.rewrites == 1 && manifest.bytes == rewritten.bytes)
            #expect(manifest.compactedKey == layout.compactionMarker(topic: topic, baseOffset: first.baseOffset, rewrites: 1))
            let keys = try await objects.list(prefix: layout.rewritesPrefix(topic: topic, baseOffset: first.baseOffset)).map(\.key)
            #expect(keys == [manifest.compactedKey!, manifest.logKey])
            #expect(catalog.entries(of: topic)[0].segment.rewrites == 1)
            #expect(await archiver.runOnce() == Archiver.Round())
            try store.close()
        }
    }

    @Test("consumer offsets are uploaded when they changed, and only then")
    func consumerOffsets() async throws {
        try await withTemporaryDirectory { directory in
            let store = try openStore(directory + "/data")
            let objects = try DirectoryObjectStore(directory: directory + "/bucket")
            let archiver = makeArchiver(store, objects)
            try publish(store, count: 5)
            try store.consumerOffsets.commit("indexer", topic: topic, offset: 3)
            let key = layout.consumerOffsets("indexer")

            #expect(await archiver.uploadConsumerOffsets() == nil)
            #expect(puts(objects, endingWith: ".offsets") == [key])
            #expect(await archiver.uploadConsumerOffsets() == nil)
            #expect(puts(objects, endingWith: ".offsets").count == 1)
            // A restarted archiver finds the same bytes in the store and does not upload them again.
            #expect(await makeArchiver(store, objects).uploadConsumerOffsets() == nil)
            #expect(puts(objects, endingWith: ".offsets").count == 1)

            try store.consumerOffsets.commit("indexer", topic: topic, offset: 9)
            #expect(await archiver.uploadConsumerOffsets() == nil)
            #expect(puts(objects, endingWith: ".offsets").count == 2)
            let stored = try await objects.get(key: key, range: nil)
            #expect(stored == (try ArchiveFiles.readFile(directory + "/data/consumers/indexer.offsets")))
            try store.close()
        }
    }

    @Test("run(): the primary's address, then rounds in the background until cancelled")
    func runsAsAService() async throws {
        try await withTemporaryDirectory { directory in
            let store = try openStore(directory + "/data")
            let objects = try DirectoryObjectStore(directory: directory + "/bucket")
            let catalog = ArchiveCatalog()
            let archiver = Archiver(
                store: store, objectStore: objects, layout: layout, catalog: catalog,
                configuration: .init(scanInterval: .milliseconds(5), consumerOffsetsInterval: .milliseconds(5),
                                     advertisedAddress: "primary.example:7400"),
                logger: makeLogger())
            let service = Task { try await archiver.run() }
            let log = try publish(store, count: 40)
            try store.consumerOffsets.commit("indexer", topic: topic, offset: 1)
            let sealed = log.sealedSegmentFiles().count
            while catalog.segments(of: topic).count < sealed || puts(objects, endingWith: ".offsets").isEmpty {
                try await Task.sleep(for: .milliseconds(5))
            }
            service.cancel()
            try await service.value
            #expect(objects.putKeys.first == layout.primary)
            #expect(puts(objects, endingWith: ".log").count == sealed)
            try store.close()
        }
    }
}
