import MetricsTestKit
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

@Suite("Storage metrics", .timeLimit(.minutes(1)))
struct StorageMetricsTests {
    @Test("sync rounds record their fsync time and group-commit size; retention counts deleted segments")
    func fsyncAndRetention() async throws {
        try await withTemporaryDirectory { directory in
            let testMetrics = TestMetrics()
            let metrics = TelexMetrics(factory: testMetrics)
            let batchSize = makeBatch(records: 2).readableBytes
            var configuration = testConfiguration(segmentBytes: batchSize * 2, fsync: .always)
            configuration.retentionBytes = batchSize * 3
            let store = try TopicStore(directory: directory, configuration: configuration, logger: makeLogger(), metrics: metrics)
            let log = try store.createLog("news.world").log
            for _ in 0..<6 { _ = try await log.appendDurably(makeBatch(records: 2)) }

            let fsync = try testMetrics.expectTimer("telex_fsync_duration_seconds")
            #expect(!fsync.values.isEmpty)
            let groupCommits = try testMetrics.expectRecorder("telex_group_commit_records")
            // Every record appended was made durable by some round, and each round reports how many it covered.
            #expect(groupCommits.values.reduce(0, +) == 12)

            #expect(try log.applyRetention() == 2)
            let deleted = try testMetrics.expectCounter("telex_retention_deleted_segments_total", [("topic", "news.world")])
            #expect(deleted.totalValue == 2)
            try store.close()
        }
    }

    @Test("topics beyond the label cap share topic=\"_other\"; errors count by code")
    func labelCapAndErrors() throws {
        let testMetrics = TestMetrics()
        let metrics = TelexMetrics(factory: testMetrics, maxTopics: 2)
        #expect(metrics.topic("a").label == "a")
        #expect(metrics.topic("b").label == "b")
        #expect(metrics.topic("c").label == TelexMetrics.otherLabel)
        #expect(metrics.topic("d") === metrics.topic("c"))
        #expect(metrics.topic("a") === metrics.topic("a"))
        metrics.topic("c").publishedEvents.increment(by: 3)
        metrics.topic("d").publishedEvents.increment(by: 4)
        #expect(try testMetrics.expectCounter("telex_published_events_total", [("topic", "_other")]).totalValue == 7)
        #expect(testMetrics.counters(label: "telex_published_events_total").count == 3)

        #expect(metrics.consumer("indexer", topicLabel: "a") === metrics.consumer("indexer", topicLabel: "a"))
        _ = metrics.consumer("archiver", topicLabel: "a")
        #expect(metrics.consumer("third", topicLabel: "a") === metrics.consumer("fourth", topicLabel: "a"))

        metrics.errorSent(TelexError.Code.topicNotFound.name)
        metrics.errorSent(TelexError.Code.topicNotFound.name)
        metrics.errorSent(TelexError.Code.invalidRequest.name)
        #expect(try testMetrics.expectCounter("telex_errors_total", [("code", "TOPIC_NOT_FOUND")]).totalValue == 2)
        #expect(try testMetrics.expectCounter("telex_errors_total", [("code", "INVALID_REQUEST")]).totalValue == 1)
    }
}
