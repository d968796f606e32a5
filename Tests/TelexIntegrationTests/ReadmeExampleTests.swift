import Foundation
import TelexClient
import TelexEvents
import TelexProtocol
import Testing

// The README's "Library" example, verbatim (the test below checks that README.md still shows exactly this).
// README-EXAMPLE-BEGIN
func rebuildSearchIndex(configuration: ClientConfiguration) async throws {
    try await TelexClient.withClient(configuration: configuration) { client in
        let event = try CloudEvent(type: "article.created", article: ["uri": "urn:example:1", "headlines": []])
        let stored = try await client.publish(events: [event], to: "news.world")  // [EventAck], input order
        print("stored at", stored[0].topic, stored[0].offset)
        // Replay everything stored so far, then stop: the index-rebuild mode.
        try await client.withSubscription("news.>", from: .beginning, consumer: "indexer", untilCaughtUp: true) { records in
            for try await delivered in records {
                print(delivered.topic, delivered.offset, String(buffer: delivered.record.key))
            }
            try await records.commit()  // the next offset per topic, stored for "indexer"
        }
    }
}
// README-EXAMPLE-END

@Suite("README", .serialized, .timeLimit(.minutes(1)))
struct ReadmeExampleTests {
    @Test("the library example runs against a real broker and commits the consumer's position")
    func libraryExampleRuns() async throws {
        try await withTemporaryDirectory { directory in
            let server = try await startServer(directory: directory)
            do {
                try await rebuildSearchIndex(configuration: clientConfiguration(server))
                #expect(server.topicStore?.consumerOffsets.committed("indexer")["news.world"] == 1)
            } catch {
                try? await server.shutdown()
                throw error
            }
            try await server.shutdown()
        }
    }

    @Test("README.md shows the example exactly as compiled here")
    func readmeMatches() throws {
        let testFile = try String(contentsOfFile: #filePath, encoding: .utf8)
        let readmePath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("README.md").path
        let readme = try String(contentsOfFile: readmePath, encoding: .utf8)
        let begin = testFile.range(of: "// README-EXAMPLE-BEGIN\n")!
        let end = testFile.range(of: "// README-EXAMPLE-END")!
        let example = String(testFile[begin.upperBound..<end.lowerBound])
        #expect(readme.contains(example), "README.md's Library example differs from Tests/TelexIntegrationTests/ReadmeExampleTests.swift")
    }
}
