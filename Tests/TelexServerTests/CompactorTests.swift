import Foundation
import Logging
import MetricsTestKit
import NIOCore
import TelexProtocol
import TelexStorage
import Testing

@testable import TelexServer

@Suite("The background compactor", .timeLimit(.minutes(1)))
struct CompactorTests {
    @Test("durations: a count and s, m, h or d")
    func durations() {
        #expect(CompactionConfiguration.milliseconds(parsing: "90s") == 90_000)
        #expect(CompactionConfiguration.milliseconds(parsing: "30m") == 1_800_000)
        #expect(CompactionConfiguration.milliseconds(parsing: "24h") == 86_400_000)
        #expect(CompactionConfiguration.milliseconds(parsing: "0d") == 0)
        for bad in ["", "h", "24", "-1h", "1.5h", "24 h", "9223372036854775807d"] {
            #expect(CompactionConfiguration.milliseconds(parsing: bad) == nil, "\(bad)")
        }
    }

    /// One batch holding version `version` of `article`.
    static func batch(_ article: Int, _ version: Int) -> ByteBuffer {
        var builder = RecordBatchBuilder()
        builder.append(
            timestamp: 1_700_000_000_000, key: ByteBuffer(string: "urn:article:\(article)"),
            headers: [RecordHeader(name: "ce-type", value: "article.updated")],
            value: ByteBuffer(string: "{\"version\":\(version),\"text\":\"\(String(repeating: "x", count: 200))\"}"))
        return builder.build(codec: .none)
    }

    @Test("a round compacts only the topics matching a pattern, counting segments and bytes")
    func roundCompactsMatchingTopics() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("telex-compactor-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let testMetrics = TestMetrics()
        let metrics = TelexMetrics(factory: testMetrics)
        var log = LogConfiguration()
        log.segmentBytes = 1024
        log.fsync = .never
        let store = try TopicStore(directory: directory, configuration: log, logger: Logger(label: "test"), metrics: metrics)
        for topic in ["frontpage.home", "news.world"] {
            let topicLog = try store.createLog(topic).log
            for version in 0..<12 { _ = try topicLog.append(Self.batch(version % 2, version)) }
            try topicLog.sync()
        }
        let sizes = { ["frontpage.home", "news.world"].map { store.log($0)!.sizeInBytes } }
        let before = sizes()
        let compactor = Compactor(
            configuration: CompactionConfiguration(patterns: ["frontpage.>"]), logger: Logger(label: "test"),
            metrics: metrics)
        compactor.runRound(store)
        let after = sizes()
        #expect(after[0] < before[0])
        #expect(after[1] == before[1])
        let segments = try testMetrics.expectCounter("telex_compaction_segments_total", [("topic", "frontpage.home")])
        #expect(segments.totalValue >= 2)
        let bytes = try testMetrics.expectCounter("telex_compaction_reclaimed_bytes_total", [("topic", "frontpage.home")])
        #expect(bytes.totalValue == Int64(before[0] - after[0]))
        #expect(testMetrics.counters(label: "telex_compaction_segments_total").count == 1)
        try store.close()
    }
}
