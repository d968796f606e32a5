import TelexProtocol
import TelexStorage

/// Events and articles: stored records read on `NIOThreadPool.singleton` and shown as the console's JSON.
extension BrokerConsoleData {
    public func events(
        topic: String, from: Int64?, limit: Int, for user: ConsoleUser
    ) async throws(TelexError) -> EventsJSON {
        guard limit > 0 else { throw TelexError(.invalidRequest, "limit \(limit) must be at least 1", topic: topic) }
        let limit = min(limit, configuration.maxEventsPerRequest)
        let log = try readableLog(topic, for: user)
        let start = log.startOffset
        let end = log.readableEndOffset
        let first = from ?? max(start, end - Int64(limit))
        guard first >= start else {
            throw TelexError(.offsetOutOfRange, "offset \(first) is out of range for \(topic) (log starts at \(start))",
                             topic: topic, offset: first)
        }
        guard first < end else {
            return EventsJSON(topic: topic, startOffset: start, endOffset: end, events: [], next: first)
        }
        let page = try await Self.page(of: log, first: first, end: end, limit: limit,
                                       maxBytes: configuration.maxAnswerBytes, newest: from == nil)
        return EventsJSON(topic: topic, startOffset: page.start ?? start, endOffset: end,
                          events: page.records.map(\.eventJSON), next: page.next)
    }

    /// The records of `log` from `first` below `end` (`StoredEvents.records`). The `newest` page is the newest
    /// records from `first` that fit `maxBytes` (`StoredEvents.newestStart`), so it ends at `end`. Its `first` the
    /// caller chose from its snapshot of the start: OFFSET_OUT_OF_RANGE means retention moved the start past it
    /// meanwhile, and the page is read once more from the new start, which `start` then is.
    static func page(
        of log: TopicLog, first: Int64, end: Int64, limit: Int, maxBytes: Int, newest: Bool
    ) async throws(TelexError) -> (records: [StoredRecord], next: Int64, start: Int64?) {
        func read(from first: Int64) async throws(TelexError) -> (records: [StoredRecord], next: Int64) {
            let from = newest
                ? try await StoredEvents.newestStart(of: log, first: first, end: end, maxBytes: maxBytes) : first
            return try await StoredEvents.records(of: log, from: from, end: end, limit: limit, maxBytes: maxBytes)
        }
        do throws(TelexError) {
            let (records, next) = try await read(from: first)
            return (records, next, nil)
        } catch where newest && error.code == .offsetOutOfRange {
            let start = log.startOffset
            let (records, next) = try await read(from: max(start, first))
            return (records, next, start)
        }
    }

    public func events(topic: String, uri: String, for user: ConsoleUser) async throws(TelexError) -> EventsJSON {
        guard !uri.isEmpty else { throw TelexError(.invalidRequest, "uri is empty", topic: topic) }
        let log = try readableLog(topic, for: user)
        let start = log.startOffset
        let end = log.readableEndOffset
        let limit = configuration.maxEventsPerRequest
        // The key index covers the local segments only: no archive fetch (a blocking file read all the same).
        let versions = try await Self.offload { () throws(TelexError) in
            try log.versions(of: uri, below: end).suffix(limit).map { (log: log, version: $0) }
        }
        // The newest versions whose values fit the answer's budget.
        let (records, _) = try await StoredEvents.newestRecords(of: Array(versions),
                                                                maxBytes: configuration.maxAnswerBytes)
        return EventsJSON(topic: topic, startOffset: start, endOffset: end, events: records.reversed().map(\.eventJSON),
                          next: end)
    }

    /// Every version of `uri` in the topics `user` may read (the newest `maxEventsPerRequest` when there are more),
    /// from the key index; empty when none is readable (the HTTP layer answers 404 NOT_FOUND).
    public func article(uri: String, for user: ConsoleUser) async throws(TelexError) -> ArticleJSON {
        guard !uri.isEmpty else { throw TelexError(.invalidRequest, "uri is empty") }
        let store = try store()
        let rights = server.permissions(of: user.identity)
        let logs = store.topics.filter { rights.maySubscribe(to: $0) }.compactMap { store.log($0) }
        let limit = configuration.maxEventsPerRequest
        let found = try await Self.offload { () throws(TelexError) -> [(log: TopicLog, version: KeyVersion)] in
            var found: [(log: TopicLog, version: KeyVersion)] = []
            for log in logs {
                found += try log.versions(of: uri, below: log.readableEndOffset).map { (log, $0) }
            }
            found.sort { a, b in
                (a.version.appendTime, a.log.topic, a.version.offset)
                    < (b.version.appendTime, b.log.topic, b.version.offset)
            }
            return found
        }
        // The newest versions whose values fit the answer's budget; `truncated` says older ones were left out.
        let (records, dropped) = try await StoredEvents.newestRecords(of: Array(found.suffix(limit)),
                                                                      maxBytes: configuration.maxAnswerBytes)
        let versions = records.map(ArticleRendering.version).sorted { a, b in
            (a.brokerTime, a.topic, a.offset) < (b.brokerTime, b.topic, b.offset)
        }
        return ArticleJSON(uri: uri, versions: versions, truncated: dropped > 0 || found.count > limit)
    }

    public func tail(topic: String, from: Int64?, for user: ConsoleUser) async throws(TelexError) -> any ConsoleTail {
        let log = try readableLog(topic, for: user)
        let start = log.startOffset
        let position = from ?? log.readableEndOffset
        guard position >= start else {
            throw TelexError(.offsetOutOfRange,
                             "offset \(position) is out of range for \(topic) (log starts at \(start))",
                             topic: topic, offset: position)
        }
        return BrokerConsoleTail(data: self, log: log, user: user, position: position)
    }
}
