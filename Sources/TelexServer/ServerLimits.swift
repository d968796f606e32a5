/// The limits that protect the broker from abusive or broken clients. A Sendable value; each field documents its
/// unit and default. Protocol/PROTOCOL.md §13 states the memory bound they give together.
public struct ServerLimits: Sendable {
    /// Open client connections at once; the next one gets TOO_MANY_CONNECTIONS and is closed. Default 1024.
    public var maxConnections: Int
    /// Time a new connection has to complete HELLO; then it gets HANDSHAKE_TIMEOUT and is closed. Default 10 s.
    public var handshakeTimeout: Duration
    /// Topics in all, existing ones included; a PUBLISH that would create one more gets TOO_MANY_TOPICS.
    /// Default 100,000.
    public var maxTopics: Int
    /// Topics one principal may create per second, sustained; beyond it PUBLISH gets RATE_LIMITED. Default 100.
    public var topicCreationRate: Double
    /// Topics one principal may create at once before `topicCreationRate` applies (the token bucket's size).
    /// Default 1000.
    public var topicCreationBurst: Int
    /// Bytes of PUBLISH requests one connection may have read and not yet answered (each counts its batch plus
    /// 256 bytes); above it the broker stops reading the connection until answers drain below it. Default 32 MiB.
    public var maxUnackedBytes: Int
    /// Active subscriptions on one connection; the next SUBSCRIBE gets TOO_MANY_SUBSCRIPTIONS. Default 1000.
    public var maxSubscriptions: Int

    public init(
        maxConnections: Int = 1024,
        handshakeTimeout: Duration = .seconds(10),
        maxTopics: Int = 100_000,
        topicCreationRate: Double = 100,
        topicCreationBurst: Int = 1000,
        maxUnackedBytes: Int = 32 << 20,
        maxSubscriptions: Int = 1000
    ) {
        self.maxConnections = maxConnections
        self.handshakeTimeout = handshakeTimeout
        self.maxTopics = maxTopics
        self.topicCreationRate = topicCreationRate
        self.topicCreationBurst = topicCreationBurst
        self.maxUnackedBytes = maxUnackedBytes
        self.maxSubscriptions = maxSubscriptions
    }
}
