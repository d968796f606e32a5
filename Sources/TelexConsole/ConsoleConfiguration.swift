/// Where and how the web console serves (telexd `--console-address`, `TELEX_CONSOLE_ADDRESS`; off by default).
public struct ConsoleConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// Seconds between the samples behind the topic sparklines (a minute of them is kept) and the lag charts.
    public var sampleInterval: Duration = .seconds(2)
    /// Seconds between lag samples; an hour of them is kept per consumer (120 at the default 30 s).
    public var lagSampleInterval: Duration = .seconds(30)
    /// How long a lag history reaches back.
    public var lagHistory: Duration = .seconds(3600)
    /// Most topics with a rate history, and most consumers with a lag history: the rest show none (memory bound).
    public var maxSampledTopics = 10_000
    public var maxSampledConsumers = 1_000
    /// Sessions are forgotten after this long without a request, and after `sessionLifetime` in any case.
    public var sessionIdleTimeout: Duration = .seconds(3600)
    public var sessionLifetime: Duration = .seconds(12 * 3600)
    /// Most sessions kept at once; the least recently used goes first.
    public var maxSessions = 10_000
    /// Most live tails open at once (each holds one connection and a few batches); more get 503.
    public var maxTails = 64
    /// Most events one events request answers.
    public var maxEventsPerRequest = 500
    /// Most events, and bytes of record values, one live-tail write carries: a tail holds at most this much while
    /// its browser is slow (64 tails × 1 MiB), where a whole answer's budget would be 4 MiB each.
    public var maxTailMessageEvents = 100
    public var maxTailMessageBytes = 1024 * 1024
    /// Most bytes of record values one events answer or article answer carries (default 4 MiB): an
    /// events page stops early (its `next` is the first offset not sent), an article keeps its newest versions
    /// (`truncated`). One event is always sent; a value over this or over 1 MiB shows as a note naming its size and
    /// offset (telex-sub reads it whole).
    public var maxAnswerBytes = 4 * 1024 * 1024
    /// Most bytes of a request body (login, reset).
    public var maxRequestBodyBytes = 16 * 1024
    /// Most console connections at once; more are closed at once.
    public var maxConnections = 256
    /// Most console connections from one IP address at once; more from it are closed at once (one client cannot
    /// take every slot).
    public var maxConnectionsPerPeer = 32

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
}
