import CoreMetrics
import Synchronization

/// The broker's swift-metrics handles, made from one `MetricsFactory` (the caller's; `MetricsSystem.factory` by
/// default), with topic and consumer label values capped so that the number of series stays bounded.
///
/// The first `maxTopics` topics seen get a `topic` label of their own; every later topic is counted under
/// `topic="_other"` (counters add up, gauges are summed). Consumer names are capped the same way. A label value
/// once given stays for the life of the process. Thread-safe; handles are made once and cached.
public final class TelexMetrics: Sendable {
    /// The label value that topics and consumers beyond the cap share.
    public static let otherLabel = "_other"

    /// Metrics made by the no-op backend: for logs opened outside a broker and for measurements without metrics.
    public static let disabled = TelexMetrics(factory: NOOPMetricsHandler.instance)

    public let factory: any MetricsFactory
    /// Most distinct `topic` (and `consumer`) label values. Default 1000.
    public let maxTopics: Int

    /// `telex_connections`: open client connections.
    public let connections: Meter
    /// `telex_subscriptions_active`: subscriptions currently open, over every connection.
    public let activeSubscriptions: Meter
    /// `telex_credit_stalls_total`: times a subscription ran out of credit while its topics had more to send.
    public let creditStalls: Counter
    /// `telex_publish_ack_duration_seconds`: from a PUBLISH being appended to its ack (or error) being queued.
    public let publishAckDuration: Timer
    /// `telex_fsync_duration_seconds`: one sync round of one log (seals, directory fsync, active segment fsync).
    let fsyncDuration: Timer
    /// `telex_group_commit_records`: records made durable by one sync round.
    let groupCommitRecords: Recorder

    private struct Labels {
        var topics: [String: TopicMetrics] = [:]
        var byLabel: [String: TopicMetrics] = [:]
        var consumers: Set<String> = []
        var consumerSeries: [ConsumerKey: ConsumerMetrics] = [:]
        var errors: [String: Counter] = [:]
    }

    private struct ConsumerKey: Hashable {
        var consumer: String
        var topic: String
    }

    private let labels = Mutex(Labels())

    public init(factory: any MetricsFactory = MetricsSystem.factory, maxTopics: Int = 1000) {
        self.factory = factory
        self.maxTopics = max(0, maxTopics)
        connections = Meter(label: "telex_connections", factory: factory)
        activeSubscriptions = Meter(label: "telex_subscriptions_active", factory: factory)
        creditStalls = Counter(label: "telex_credit_stalls_total", factory: factory)
        publishAckDuration = Timer(label: "telex_publish_ack_duration_seconds", factory: factory)
        fsyncDuration = Timer(label: "telex_fsync_duration_seconds", factory: factory)
        groupCommitRecords = Recorder(label: "telex_group_commit_records", factory: factory)
    }

    /// The handles of `topic`: its own while under the cap, otherwise those of `topic="_other"`.
    public func topic(_ topic: String) -> TopicMetrics {
        labels.withLock { labels in
            if let known = labels.topics[topic] { return known }
            let label = labels.byLabel.count < maxTopics ? topic : Self.otherLabel
            let metrics = labels.byLabel[label] ?? TopicMetrics(label: label, factory: factory)
            labels.byLabel[label] = metrics
            // Topics beyond the cap are not remembered one by one, so the map stays bounded too.
            if label != Self.otherLabel { labels.topics[topic] = metrics }
            return metrics
        }
    }

    /// The committed-offset and lag gauges of `consumer` on `topicLabel` (a label from `topic(_:)`).
    public func consumer(_ consumer: String, topicLabel: String) -> ConsumerMetrics {
        labels.withLock { labels in
            var name = consumer
            if !labels.consumers.contains(consumer) {
                if labels.consumers.count < maxTopics { labels.consumers.insert(consumer) } else { name = Self.otherLabel }
            }
            let key = ConsumerKey(consumer: name, topic: topicLabel)
            if let known = labels.consumerSeries[key] { return known }
            let metrics = ConsumerMetrics(consumer: name, topic: topicLabel, factory: factory)
            labels.consumerSeries[key] = metrics
            return metrics
        }
    }

    /// Counts one error sent to a client: `telex_errors_total{code="TOPIC_NOT_FOUND"}` (codes are a fixed set).
    public func errorSent(_ code: String) {
        let counter = labels.withLock { labels in
            if let counter = labels.errors[code] { return counter }
            let counter = Counter(label: "telex_errors_total", dimensions: [("code", code)], factory: factory)
            labels.errors[code] = counter
            return counter
        }
        counter.increment()
    }
}

/// The per-topic handles; every one carries a `topic` label (the topic, or `_other` beyond the cap).
public final class TopicMetrics: Sendable {
    /// The `topic` label value.
    public let label: String
    /// `telex_published_events_total`: records acknowledged to publishers (retried duplicates not counted).
    public let publishedEvents: Counter
    /// `telex_published_batches_total`: batches acknowledged to publishers.
    public let publishedBatches: Counter
    /// `telex_published_bytes_total`: stored batch bytes acknowledged to publishers.
    public let publishedBytes: Counter
    /// `telex_delivered_events_total`: records sent to subscribers (whole batches, as stored).
    public let deliveredEvents: Counter
    /// `telex_delivered_batches_total`: batches sent to subscribers.
    public let deliveredBatches: Counter
    /// `telex_delivered_bytes_total`: batch bytes sent to subscribers.
    public let deliveredBytes: Counter
    /// `telex_retention_deleted_segments_total`: segments retention deleted.
    public let retentionDeletedSegments: Counter
    /// `telex_storage_damaged_ranges_total`: damaged ranges found in the topic's segments (corrupt bytes followed
    /// by valid batches), on open or while serving; a range is counted again on each open that finds it.
    public let damagedRanges: Counter
    /// `telex_log_start_offset`: the first offset still stored.
    public let startOffset: Gauge
    /// `telex_log_end_offset`: the offset the next record gets.
    public let endOffset: Gauge
    /// `telex_log_bytes`: bytes of the topic's segment files.
    public let bytesOnDisk: Gauge
    /// `telex_log_segments`: segment count.
    public let segments: Gauge

    init(label: String, factory: any MetricsFactory) {
        self.label = label
        let dimensions = [("topic", label)]
        func counter(_ name: String) -> Counter { Counter(label: name, dimensions: dimensions, factory: factory) }
        func gauge(_ name: String) -> Gauge { Gauge(label: name, dimensions: dimensions, factory: factory) }
        publishedEvents = counter("telex_published_events_total")
        publishedBatches = counter("telex_published_batches_total")
        publishedBytes = counter("telex_published_bytes_total")
        deliveredEvents = counter("telex_delivered_events_total")
        deliveredBatches = counter("telex_delivered_batches_total")
        deliveredBytes = counter("telex_delivered_bytes_total")
        retentionDeletedSegments = counter("telex_retention_deleted_segments_total")
        damagedRanges = counter("telex_storage_damaged_ranges_total")
        startOffset = gauge("telex_log_start_offset")
        endOffset = gauge("telex_log_end_offset")
        bytesOnDisk = gauge("telex_log_bytes")
        segments = gauge("telex_log_segments")
    }
}

/// A durable consumer's gauges on one topic label.
public final class ConsumerMetrics: Sendable {
    /// `telex_consumer_committed_offset`: the next offset the consumer will read.
    public let committed: Gauge
    /// `telex_consumer_lag`: log end offset − committed offset.
    public let lag: Gauge

    init(consumer: String, topic: String, factory: any MetricsFactory) {
        let dimensions = [("consumer", consumer), ("topic", topic)]
        committed = Gauge(label: "telex_consumer_committed_offset", dimensions: dimensions, factory: factory)
        lag = Gauge(label: "telex_consumer_lag", dimensions: dimensions, factory: factory)
    }
}
