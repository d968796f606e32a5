import TelexStorage

extension TelexServer {
    /// Sets the gauges that describe state rather than count events: per topic the log's start and end offsets,
    /// bytes and segments; per durable consumer and topic the committed offset and the lag
    /// (`TopicLog.lag(ofCommitted:)`, the same as telex-admin's).
    /// Topics and consumers beyond `configuration.metricsMaxTopics` are summed under `_other`. Takes only short
    /// locks (no file I/O): the metrics endpoint calls it before every scrape.
    public func updateMetrics() {
        guard let store = topicStore else { return }
        struct Totals {
            var metrics: TopicMetrics
            var start: Int64 = 0
            var end: Int64 = 0
            var bytes = 0
            var segments = 0
        }
        var totals: [String: Totals] = [:]
        var logs: [String: TopicLog] = [:]
        for topic in store.topics {
            guard let log = store.log(topic) else { continue }
            let label = log.metrics.label
            logs[topic] = log
            totals[label, default: Totals(metrics: log.metrics)].start += log.startOffset
            totals[label]!.end += log.endOffset
            totals[label]!.bytes += log.sizeInBytes
            totals[label]!.segments += log.segmentCount
        }
        for total in totals.values {
            total.metrics.startOffset.record(total.start)
            total.metrics.endOffset.record(total.end)
            total.metrics.bytesOnDisk.record(total.bytes)
            total.metrics.segments.record(total.segments)
        }
        var consumers: [ObjectIdentifier: (metrics: ConsumerMetrics, committed: Int64, lag: Int64)] = [:]
        for (consumer, positions) in store.consumerOffsets.all {
            for (topic, position) in positions {
                guard let log = logs[topic] else { continue }
                let series = metrics.consumer(consumer, topicLabel: log.metrics.label)
                let id = ObjectIdentifier(series)
                consumers[id, default: (series, 0, 0)].committed += position.offset
                consumers[id]!.lag += log.lag(ofCommitted: position.offset)
            }
        }
        for series in consumers.values {
            series.metrics.committed.record(series.committed)
            series.metrics.lag.record(series.lag)
        }
    }

    /// Whether the broker is serving (started and not shutting down): what `GET /healthz` reports.
    public var isServing: Bool { localPort != nil }
}
