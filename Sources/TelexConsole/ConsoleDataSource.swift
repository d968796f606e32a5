import TelexProtocol

/// What the console's HTTP layer asks of the broker. Every method checks the user's rights as they are now (topics
/// it may subscribe to, consumers it may use; resets for admin principals only) and throws a `TelexError` whose code
/// the HTTP layer maps to a status (`ConsoleHTTPStatus`). `BrokerConsoleData` answers for a running `TelexServer`;
/// HTTP tests may use a fake.
public protocol ConsoleDataSource: Sendable {
    func overview(for user: ConsoleUser) async throws(TelexError) -> OverviewJSON
    /// Topics matching `pattern` (empty: all) that `user` may subscribe to.
    func topics(matching pattern: String, for user: ConsoleUser) async throws(TelexError) -> TopicsJSON
    /// Up to `limit` events of `topic` from `from` (nil: the newest `limit`).
    func events(topic: String, from: Int64?, limit: Int, for user: ConsoleUser) async throws(TelexError) -> EventsJSON
    /// The events of `topic` whose key is `uri`, oldest first.
    func events(topic: String, uri: String, for user: ConsoleUser) async throws(TelexError) -> EventsJSON
    /// Every version of the article `uri` in the topics `user` may read.
    func article(uri: String, for user: ConsoleUser) async throws(TelexError) -> ArticleJSON
    func consumers(for user: ConsoleUser) async throws(TelexError) -> ConsumersJSON
    func resetConsumer(_ consumer: String, _ request: ResetRequestJSON, for user: ConsoleUser) async throws(TelexError)
        -> ResetJSON
    /// A live tail of `topic` from `from` (nil: its end now) for `user`. Checked once here and again on every `next`.
    func tail(topic: String, from: Int64?, for user: ConsoleUser) async throws(TelexError) -> any ConsoleTail
    /// Takes the rate and lag samples due at `now`; the console service calls it every `sampleInterval`.
    func sample()
}

/// One live tail: the events after the last ones returned, as they are appended.
public protocol ConsoleTail: AnyObject, Sendable {
    /// The next events (at most `maxEvents`, oldest first), waiting up to `timeout` for some to arrive; empty when none
    /// did (the caller sends a keep-alive). Throws when the topic was deleted, the user lost the right to read it,
    /// or the log cannot be read (the message names topic and offset).
    func next(maxEvents: Int, timeout: Duration) async throws(TelexError) -> [EventJSON]
    /// Ends the tail (stops its notifications); `next` then returns at once. Safe to call more than once.
    func close()
}
