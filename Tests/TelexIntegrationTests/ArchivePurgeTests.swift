import Foundation
import Logging
import NIOCore
import TelexArchive
import TelexClient
import TelexProtocol
import TelexServer
import TelexStorage
import Testing

@Suite("ADMIN purge reaches segments only the archive holds", .timeLimit(.minutes(1)))
struct ArchivePurgeIntegrationTests {
    @Test("the purge answers the offsets removed from archive-only and local segments; a replay has none of them")
    func purgeReachesArchive() async throws {
        try await withTemporaryDirectory { directory in
            let data = directory + "/data"
            let objects = try DirectoryObjectStore(directory: directory + "/bucket")
            let catalog = ArchiveCatalog()
            let layout = ArchiveLayout(prefix: "newsroom")
            let logger = Logger(label: "telex.test.archive-purge")
            let cache = try ArchiveCache(
                directory: data + "/archive-cache", objectStore: objects, catalog: catalog, cacheBytes: 1 << 20,
                segmentBytes: 1024, logger: logger, layout: layout, dataDirectory: data)
            try await withServer(directory: data, configure: { configuration in
                configuration.log.segmentBytes = 1024
                configuration.log.fsync = .never
                configuration.log.localRetentionBytes = 0
                configuration.archive = cache
            }) { server, client in
                var purgedOffsets: [Int64] = []
                for round in 0..<6 {
                    _ = try await client.publish([try CompactionIntegrationTests.version(1, round)], to: "news.world")
                    let acks = try await client.publish(
                        [try CompactionIntegrationTests.version(7, round)], to: "news.world")
                    purgedOffsets.append(try #require(acks.first).baseOffset)
                }
                let store = try #require(server.topicStore)
                let log = try #require(store.log("news.world"))
                try log.sync()
                let archiver = Archiver(store: store, objectStore: objects, layout: layout, catalog: catalog,
                                        logger: logger)
                #expect(await archiver.runOnce().pending == 0)
                #expect(try log.applyRetention() > 0)
                #expect(purgedOffsets.contains { $0 < log.localStartOffset })

                let purged = try await client.purge(key: "urn:telex:test:story-7")
                #expect(purged.map(\.topic) == ["news.world"])
                #expect(purged.first?.offsets == purgedOffsets)
                let all = try await collect(
                    try await client.subscribe("news.world", from: .beginning, untilCaughtUp: true), count: 6)
                #expect(all.allSatisfy { String(buffer: $0.record.key) == "urn:telex:test:story-1" })
                #expect(try await client.purge(key: "urn:telex:test:story-7").isEmpty)
            }
        }
    }
}
