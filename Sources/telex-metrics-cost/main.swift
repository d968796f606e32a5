// telex-metrics-cost: the instrumented publish path of one topic (append, wait for the group commit, and the
// broker's per-ack metrics) with metrics recorded into a Prometheus registry or into the no-op backend, for
// counting instructions per event under `valgrind --tool=callgrind`. Synchronous on purpose: valgrind 3.19 cannot
// run Swift concurrency's executor threads, and the publish path itself runs on an event loop and the log's
// dispatch queue, not in tasks.
//
//   telex-metrics-cost prometheus|none EVENTS [fsync-policy]
//
// Run it twice per backend with different EVENTS; the difference of the instruction counts divided by the
// difference of events is the cost per event without start-up (Scripts/metrics-cost.sh does this).
import CoreMetrics
import Dispatch
import Foundation
import Logging
import NIOCore
import Prometheus
import TelexProtocol
import TelexStorage

let arguments = CommandLine.arguments
guard arguments.count >= 3, ["prometheus", "none", "build"].contains(arguments[1]), let events = Int(arguments[2]), events > 0,
    let fsync = FsyncPolicy(parsing: arguments.count > 3 ? arguments[3] : "always")
else {
    FileHandle.standardError.write(Data("usage: telex-metrics-cost prometheus|none|build EVENTS [always|never|interval:MS]\n".utf8))
    exit(64)
}
// TELEX_COST_CODEC=zlib publishes zlib batches, whose records the broker does not walk (its PUBLISH path is then
// smallest, so the key index's share of it largest); the default is codec none.
let codec: Codec = ProcessInfo.processInfo.environment["TELEX_COST_CODEC"] == "zlib" ? .zlib : .none
let batchEvents = 16
let distinct = (0..<64).map { seed in
    var builder = RecordBatchBuilder()
    for index in 0..<batchEvents {
        let body = String(repeating: "newsroom copy \(seed) ", count: 48)
        builder.append(
            timestamp: 1_700_000_000_000 + Int64(index), key: ByteBuffer(string: "urn:telex:article:\(seed)-\(index)"),
            headers: [RecordHeader(name: "ce-type", value: "article.published")],
            value: ByteBuffer(string: "{\"uri\":\"urn:telex:article:\(seed)-\(index)\",\"body\":\"\(body)\"}"))
    }
    return builder.build(codec: codec)
}
// `build`: the producer's side of the same publishes instead (encode, compress with TELEX_COST_CODEC, CRC, and
// the key table), for the whole publish work the key index is a share of (Scripts/index-cost.sh).
if arguments[1] == "build" {
    let records = (0..<64).map { seed in
        (0..<batchEvents).map { index in
            Record(
                timestamp: 1_700_000_000_000 + Int64(index), key: ByteBuffer(string: "urn:telex:article:\(seed)-\(index)"),
                headers: [RecordHeader(name: "ce-type", value: "article.published")],
                value: ByteBuffer(string: "{\"uri\":\"urn:telex:article:\(seed)-\(index)\",\"body\":\"\(String(repeating: "newsroom copy \(seed) ", count: 48))\"}"))
        }
    }
    let compressor = BatchCompressor()
    var bytes = 0
    for index in 0..<events / batchEvents {
        var builder = RecordBatchBuilder()
        for record in records[index % records.count] { builder.append(record) }
        bytes += builder.build(codec: codec, compressor: compressor).readableBytes
    }
    print("build: \(events) events in \(events / batchEvents) batches, \(bytes) bytes")
    exit(0)
}
let directory = FileManager.default.temporaryDirectory.appendingPathComponent("telex-metrics-cost-\(UUID().uuidString)").path
defer { try? FileManager.default.removeItem(atPath: directory) }
var logger = Logger(label: "telex.metrics-cost")
logger.logLevel = .warning

let registry = PrometheusCollectorRegistry()
let metrics = arguments[1] == "prometheus" ? TelexMetrics(factory: PrometheusMetricsFactory(registry: registry)) : .disabled
var configuration = LogConfiguration()
configuration.fsync = fsync
// TELEX_NO_KEY_INDEX=1 measures the publish path without the key index (Protocol/STORAGE.md §14.4).
configuration.indexKeys = ProcessInfo.processInfo.environment["TELEX_NO_KEY_INDEX"] != "1"
let store = try TopicStore(directory: directory, configuration: configuration, logger: logger, metrics: metrics)
let log = try store.createLog("bench.metrics").log
let acked = DispatchSemaphore(value: 0)
let batches = events / batchEvents
for index in 0..<batches {
    let batch = distinct[index % distinct.count]
    let appended = NIODeadline.now()
    let result = try log.append(batch)
    log.whenDurable(result) { _ in acked.signal() }
    acked.wait()
    // What ConnectionHandler.countPublished records for every acknowledged PUBLISH.
    metrics.publishAckDuration.recordNanoseconds((NIODeadline.now() - appended).nanoseconds)
    log.metrics.publishedEvents.increment(by: Int64(result.recordCount))
    log.metrics.publishedBatches.increment()
    log.metrics.publishedBytes.increment(by: batch.readableBytes)
}
try store.close()
var exposition: [UInt8] = []
registry.emit(into: &exposition)
print("\(arguments[1]): \(batches * batchEvents) events in \(batches) batches; end offset \(log.endOffset); exposition \(exposition.count) bytes")
