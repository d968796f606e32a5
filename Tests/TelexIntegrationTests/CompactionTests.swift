import Foundation
import NIOCore
import TelexClient
import TelexEvents
import TelexProtocol
import TelexServer
import TelexStorage
import Testing

@Suite("Compaction and purge over a real broker", .timeLimit(.minutes(1)))
struct CompactionIntegrationTests {
    /// Version `version` of article `article`, with a headline naming both.
    static func version(_ article: Int, _ version: Int, headline: String? = nil) throws -> Record {
        try CloudEvent(
            type: "article.updated",
            article: [
                "uri": .string("urn:telex:test:story-\(article)"), "version": .string("\(version)"), "type": "text",
                "headlines": [["role": "main", "value": .string(headline ?? "Story \(article) version \(version)")]],
            ],
            source: "urn:telex:test", id: "evt-\(article)-\(version)").record()
    }

    /// Every file under `directory` whose bytes contain `text`.
    static func files(under directory: String, containing text: String) throws -> [String] {
        let needle = Data(text.utf8)
        let enumerator = FileManager.default.enumerator(atPath: directory)!
        var found: [String] = []
        while let name = enumerator.nextObject() as? String {
            let path = directory + "/" + name
            guard !FileManager.default.isDirectory(path), let data = FileManager.default.contents(atPath: path) else {
                continue
            }
            if data.range(of: needle) != nil { found.append(name) }
        }
        return found.sorted()
    }

    /// Blocking storage calls, off the cooperative pool.
    static func blocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(with: Result { try work() }) }
        }
    }

    @Test("after compaction a consumer committed inside a removed range resumes at the next kept offset, and readers see gaps, not damage")
    func consumersReadAcrossGaps() async throws {
        try await withServer(configure: { $0.log.segmentBytes = 1024 }) { server, client in
            // Ten versions of three stories, one at a time, so that they spread over several segments.
            var published: [(article: Int, offset: Int64)] = []
            for round in 0..<10 {
                for article in 0..<3 {
                    let acks = try await client.publish([try Self.version(article, round)], to: "frontpage.home")
                    published.append((article, try #require(acks.first).baseOffset))
                }
            }
            let reader = try await client.subscribe("frontpage.home", from: .beginning, consumer: "renderer")
            _ = try await collect(reader, count: 4)
            try await reader.commit(topic: "frontpage.home", offset: 4)
            await reader.cancel()

            let store = try #require(server.topicStore)
            let log = try #require(store.log("frontpage.home"))
            let before = try #require(try await client.topics(matching: "frontpage.home").first)
            let report = try await Self.blocking {
                try log.sync()
                return try log.compact(tombstoneRetentionMilliseconds: 86_400_000)
            }
            #expect(report.rewrites.count >= 2)
            let removed = Set(report.rewrites.flatMap(\.removedOffsets))
            let kept = published.map(\.offset).filter { !removed.contains($0) }
            #expect(removed.contains(4))

            // Offsets and the end stay; bytes shrink.
            let after = try #require(try await client.topics(matching: "frontpage.home").first)
            #expect(after.startOffset == before.startOffset && after.endOffset == before.endOffset)
            #expect(after.bytes == before.bytes - Int64(report.bytesReclaimed))

            // History names only what is left: each story's newest version.
            for article in 0..<3 {
                let versions = try await client.history(of: "urn:telex:test:story-\(article)", topics: "frontpage.>")
                #expect(versions.map(\.offset) == [published.last { $0.article == article }!.offset])
            }
            // A full read gets the kept records only, without reported gaps and without DATA_LOSS.
            let all = try await collect(
                try await client.subscribe("frontpage.home", from: .beginning, untilCaughtUp: true), count: kept.count)
            #expect(all.map(\.offset) == kept)
            #expect(all.allSatisfy { $0.skippedBefore == nil })

            // The consumer resumes at the first kept offset after its committed one.
            let resumed = try await client.subscribe("frontpage.home", from: .end, consumer: "renderer")
            #expect(try #require(try await collect(resumed, count: 1).first).offset == kept.first { $0 >= 4 })
        }
    }

    @Test("purge removes every version of an article from every topic's files, audited without its content")
    func purgeRemovesTheBytes() async throws {
        try await withTemporaryDirectory { directory in
            let data = directory + "/data"
            let auditLog = directory + "/audit.log"
            let server = try await startServer(directory: data) {
                $0.log.segmentBytes = 1024
                $0.auth.auditLogFile = auditLog
            }
            var configuration = clientConfiguration(server)
            // Uncompressed, so the headline's bytes can be looked for in the files.
            configuration.codec = Codec.none
            let headline = "Withdrawn: the story that must go"
            let purged = try await TelexClient.withClient(configuration: configuration) { client in
                try await client.connect()
                var expected: [String: [Int64]] = [:]
                for round in 0..<4 {
                    for topic in ["news.world", "news.europe"] {
                        _ = try await client.publish([try Self.version(1, round)], to: topic)
                        let acks = try await client.publish(
                            [try Self.version(7, round, headline: headline + " v\(round)")], to: topic)
                        expected[topic, default: []].append(try #require(acks.first).baseOffset)
                    }
                }
                #expect(try Self.files(under: data, containing: headline).count >= 2)
                #expect(try await client.history(of: "urn:telex:test:story-7", topics: "news.>").count == 8)
                let purged = try await client.purge(key: "urn:telex:test:story-7")
                #expect(purged.map(\.topic) == ["news.europe", "news.world"])
                #expect(purged.map(\.offsets) == [expected["news.europe"]!, expected["news.world"]!])
                // The other story is all there; the purged one is not, in any topic.
                let all = try await collect(
                    try await client.subscribe("news.>", from: .beginning, untilCaughtUp: true), count: 8)
                #expect(all.allSatisfy { String(buffer: $0.record.key) == "urn:telex:test:story-1" })
                // History asks the key index, which forgot them; the other story's history is whole.
                #expect(try await client.history(of: "urn:telex:test:story-7", topics: "news.>").isEmpty)
                #expect(try await client.history(of: "urn:telex:test:story-1", topics: "news.>").count == 8)
                // A second purge finds nothing.
                #expect(try await client.purge(key: "urn:telex:test:story-7").isEmpty)
                return purged
            }
            try await server.shutdown()
            #expect(try Self.files(under: data, containing: headline) == [])
            #expect(try Self.files(under: data, containing: "Story 1 version 3").count >= 2)
            // The audit record names the principal, the uri, the topics and offsets, and nothing of the content.
            var line: Substring?
            for _ in 0..<100 {
                let text = (try? String(contentsOfFile: auditLog, encoding: .utf8)) ?? ""
                line = text.split(separator: "\n").first { $0.contains(#""action":"purge""#) }
                if line != nil { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            let record = try #require(line)
            #expect(record.contains(#""key":"urn:telex:test:story-7""#))
            #expect(record.contains(#""news.world":["#) && record.contains(#""news.europe":["#))
            for offset in purged.flatMap(\.offsets) { #expect(record.contains("\(offset)")) }
            #expect(!record.contains("Withdrawn"))
        }
    }
}

extension FileManager {
    fileprivate func isDirectory(_ path: String) -> Bool {
        var directory: ObjCBool = false
        return fileExists(atPath: path, isDirectory: &directory) && directory.boolValue
    }
}
