import TelexAuth
import TelexEvents
import TelexProtocol

// The JSON the console's API answers with (README "Telex Console"). Field names are the wire names; every time is
// milliseconds since the Unix epoch (UTC), every offset an Int64. Encoded with JSONEncoder (`ConsoleJSON`).

/// `GET /api/session`, and `POST /api/login`'s answer.
public struct SessionJSON: Codable, Sendable, Equatable {
    /// The principal's name (`anonymous` without authentication, `auth-token` for the shared token).
    public var principal: String
    /// Whether the principal may reset consumers (ADMIN's rule).
    public var admin: Bool
    /// Whether the broker asks for a login at all.
    public var authRequired: Bool
    /// Sent back in the `X-Telex-CSRF` header of every POST (except login).
    public var csrf: String
    public init(principal: String, admin: Bool, authRequired: Bool, csrf: String) {
        self.principal = principal
        self.admin = admin
        self.authRequired = authRequired
        self.csrf = csrf
    }
}

/// `GET /api/overview`: the broker.
public struct OverviewJSON: Codable, Sendable, Equatable {
    public var serverName: String
    public var version: String
    public var uptimeMilliseconds: Int64
    /// The broker's protocol address, `host:port`.
    public var address: String
    public var fsyncPolicy: String
    /// Bytes of the data directory (logs, indexes, offsets).
    public var dataBytes: Int64
    public var topicCount: Int
    public var connectionCount: Int
    /// Whether the broker runs with TLS.
    public var tls: Bool
    public init(
        serverName: String, version: String, uptimeMilliseconds: Int64, address: String, fsyncPolicy: String,
        dataBytes: Int64, topicCount: Int, connectionCount: Int, tls: Bool
    ) {
        self.serverName = serverName
        self.version = version
        self.uptimeMilliseconds = uptimeMilliseconds
        self.address = address
        self.fsyncPolicy = fsyncPolicy
        self.dataBytes = dataBytes
        self.topicCount = topicCount
        self.connectionCount = connectionCount
        self.tls = tls
    }
}

/// One topic in `GET /api/topics?pattern=P`.
public struct TopicJSON: Codable, Sendable, Equatable {
    public var topic: String
    public var startOffset: Int64
    public var endOffset: Int64
    public var bytes: Int64
    public var segmentCount: Int
    /// Broker time of the newest record; 0 when the topic is empty.
    public var lastAppendTime: Int64
    /// Events per second over the last minute (end-offset growth over the samples kept, oldest first).
    public var eventsPerSecond: Double
    /// Events per second in each sampling interval of the last minute, oldest first (the sparkline); fewer points
    /// while the console has run less than a minute.
    public var rateHistory: [Double]
    public init(
        topic: String, startOffset: Int64, endOffset: Int64, bytes: Int64, segmentCount: Int, lastAppendTime: Int64,
        eventsPerSecond: Double, rateHistory: [Double]
    ) {
        self.topic = topic
        self.startOffset = startOffset
        self.endOffset = endOffset
        self.bytes = bytes
        self.segmentCount = segmentCount
        self.lastAppendTime = lastAppendTime
        self.eventsPerSecond = eventsPerSecond
        self.rateHistory = rateHistory
    }
}

public struct TopicsJSON: Codable, Sendable, Equatable {
    /// Only topics the principal may subscribe to, sorted by name.
    public var topics: [TopicJSON]
    /// Seconds between rate samples.
    public var sampleIntervalSeconds: Double
    public init(topics: [TopicJSON], sampleIntervalSeconds: Double) {
        self.topics = topics
        self.sampleIntervalSeconds = sampleIntervalSeconds
    }
}

/// One stored event, as the topic page, the live tail and the article page show it.
public struct EventJSON: Codable, Sendable, Equatable {
    public var topic: String
    public var offset: Int64
    /// When the broker appended it.
    public var brokerTime: Int64
    /// CloudEvents `type` (`article.created`, `article.updated`, `article.deleted`, or another).
    public var type: String
    public var id: String
    /// The article's uri (the record key); empty when the event has none.
    public var uri: String
    /// The main headline of the ninjs article, when it has one.
    public var headline: String?
    /// The whole stored event (CloudEvents envelope with `data`), as published. Untrusted: never render as HTML.
    public var event: JSONValue
    public init(
        topic: String, offset: Int64, brokerTime: Int64, type: String, id: String, uri: String, headline: String?,
        event: JSONValue
    ) {
        self.topic = topic
        self.offset = offset
        self.brokerTime = brokerTime
        self.type = type
        self.id = id
        self.uri = uri
        self.headline = headline
        self.event = event
    }
}

/// `GET /api/topics/{topic}/events?from=OFFSET&limit=N` (or `?uri=URI`).
public struct EventsJSON: Codable, Sendable, Equatable {
    public var topic: String
    public var startOffset: Int64
    public var endOffset: Int64
    /// Oldest first.
    public var events: [EventJSON]
    /// The offset to ask for next (`from`) to continue after these events.
    public var next: Int64
    public init(topic: String, startOffset: Int64, endOffset: Int64, events: [EventJSON], next: Int64) {
        self.topic = topic
        self.startOffset = startOffset
        self.endOffset = endOffset
        self.events = events
        self.next = next
    }
}

/// One version of an article in `GET /api/articles?uri=URI`.
public struct ArticleVersionJSON: Codable, Sendable, Equatable {
    public var topic: String
    public var offset: Int64
    public var brokerTime: Int64
    public var type: String
    public var headline: String?
    /// ninjs `byline`, or `by` when that is what the article carries.
    public var byline: String?
    /// Plain text of the article's body (ninjs `body_text`/`bodies` text; HTML bodies as the publisher sent them —
    /// the page shows them as text).
    public var bodyText: String?
    /// The section (the CloudEvents topic the publisher named, or the article's `subjects`/`genres` name).
    public var section: String?
    /// ninjs `versioncreated`/`versionCreated`.
    public var versionCreated: String?
    /// Every field of the article flattened to `path → JSON text` (ArticleHistory's field list, as the diff uses).
    public var fields: [String: String]
    /// The whole stored event.
    public var event: JSONValue
    public init(
        topic: String, offset: Int64, brokerTime: Int64, type: String, headline: String?, byline: String?,
        bodyText: String?, section: String?, versionCreated: String?, fields: [String: String], event: JSONValue
    ) {
        self.topic = topic
        self.offset = offset
        self.brokerTime = brokerTime
        self.type = type
        self.headline = headline
        self.byline = byline
        self.bodyText = bodyText
        self.section = section
        self.versionCreated = versionCreated
        self.fields = fields
        self.event = event
    }
}

public struct ArticleJSON: Codable, Sendable, Equatable {
    public var uri: String
    /// Every stored version in the topics the principal may read, oldest first by broker time (then topic, offset).
    public var versions: [ArticleVersionJSON]
    /// Older versions were left out: the answer holds the newest that fit `ConsoleConfiguration.maxAnswerBytes`
    /// and `maxEventsPerRequest`.
    public var truncated: Bool
    public init(uri: String, versions: [ArticleVersionJSON], truncated: Bool = false) {
        self.uri = uri
        self.versions = versions
        self.truncated = truncated
    }
}

/// One topic of a durable consumer in `GET /api/consumers`.
public struct ConsumerTopicJSON: Codable, Sendable, Equatable {
    public var topic: String
    public var committed: Int64
    /// -1 when the topic no longer exists.
    public var endOffset: Int64
    public var lag: Int64
    public var lastCommitTime: Int64
    public init(topic: String, committed: Int64, endOffset: Int64, lag: Int64, lastCommitTime: Int64) {
        self.topic = topic
        self.committed = committed
        self.endOffset = endOffset
        self.lag = lag
        self.lastCommitTime = lastCommitTime
    }
}

/// One sample of a consumer's total lag.
public struct LagSampleJSON: Codable, Sendable, Equatable {
    public var time: Int64
    public var lag: Int64
    public init(time: Int64, lag: Int64) {
        self.time = time
        self.lag = lag
    }
}

public struct ConsumerJSON: Codable, Sendable, Equatable {
    public var consumer: String
    /// Subscriptions of this consumer open now.
    public var activeSubscriptions: Int
    public var topics: [ConsumerTopicJSON]
    public var totalLag: Int64
    /// Total lag sampled by the broker over the last hour, oldest first.
    public var lagHistory: [LagSampleJSON]
    public init(
        consumer: String, activeSubscriptions: Int, topics: [ConsumerTopicJSON], totalLag: Int64,
        lagHistory: [LagSampleJSON]
    ) {
        self.consumer = consumer
        self.activeSubscriptions = activeSubscriptions
        self.topics = topics
        self.totalLag = totalLag
        self.lagHistory = lagHistory
    }
}

/// `GET /api/consumers`: consumers the principal may use, topics it may read.
public struct ConsumersJSON: Codable, Sendable, Equatable {
    public var consumers: [ConsumerJSON]
    public var sampleIntervalSeconds: Double
    public init(consumers: [ConsumerJSON], sampleIntervalSeconds: Double) {
        self.consumers = consumers
        self.sampleIntervalSeconds = sampleIntervalSeconds
    }
}

/// `POST /api/consumers/{consumer}/reset` body.
public struct ResetRequestJSON: Codable, Sendable, Equatable {
    /// Topic pattern; empty: every topic the consumer has committed in.
    public var pattern: String?
    /// `beginning`, `end`, `offset:N` or `time:ISO8601`.
    public var to: String
    /// Reset even while the consumer is subscribed.
    public var force: Bool?
    public init(pattern: String?, to: String, force: Bool?) {
        self.pattern = pattern
        self.to = to
        self.force = force
    }
}

public struct ResetJSON: Codable, Sendable, Equatable {
    public var consumer: String
    /// Each topic whose position was set: `topic`, `previous` (-1 when the consumer had none there), `committed` —
    /// ADMIN reset-consumer's own result.
    public var resets: [ConsumerReset]
    public init(consumer: String, resets: [ConsumerReset]) {
        self.consumer = consumer
        self.resets = resets
    }
}

/// Every error: `{"error": {"code": "TOPIC_NOT_FOUND", "message": "…"}}` with the HTTP status that fits.
public struct ErrorJSON: Codable, Sendable, Equatable {
    public struct Body: Codable, Sendable, Equatable {
        public var code: String
        public var message: String
    }
    public var error: Body
    public init(code: String, message: String) { error = Body(code: code, message: message) }
}

/// Who a console request comes from: the identity its session logged in as (permissions are looked up again on
/// every request, so a users-file reload applies at once).
public struct ConsoleUser: Sendable, Hashable {
    public var identity: Identity
    /// The peer's address, for audit records.
    public var peer: String
    public init(identity: Identity, peer: String) {
        self.identity = identity
        self.peer = peer
    }
}
