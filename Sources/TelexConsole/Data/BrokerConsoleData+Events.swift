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
        let (records, next) = try await Self.offload { () throws(TelexError) in
            try StoredEvents.records(of: log, from: first, end: end, limit: limit)
        }
        return EventsJSON(topic: topic, startOffset: start, endOffset: end, events: records.map(\.eventJSON),
                          next: next)
    }

    public func events(topic: String, uri: String, for user: ConsoleUser) async throws(TelexError) -> EventsJSON {
        guard !uri.isEmpty else { throw TelexError(.invalidRequest, "uri is empty", topic: topic) }
        let log = try readableLog(topic, for: user)
        let start = log.startOffset
        let end = log.readableEndOffset
        let limit = configuration.maxEventsPerRequest
        let records = try await Self.offload { () throws(TelexError) in
            // The newest `limit` versions, when an article has more.
            let offsets = try log.versions(of: uri, below: end).suffix(limit).map(\.offset)
            return try StoredEvents.records(of: log, at: offsets)
        }
        return EventsJSON(topic: topic, startOffset: start, endOffset: end, events: records.map(\.eventJSON), next: end)
    }

    /// Every version of `uri` in the topics `user` may read (the newest `maxEventsPerRequest` when there are more),
    /// from the key index; empty when none is readable (the HTTP layer answers 404 NOT_FOUND).
    public func article(uri: String, for user: ConsoleUser) async throws(TelexError) -> ArticleJSON {
        guard !uri.isEmpty else { throw TelexError(.invalidRequest, "uri is empty") }
        let store = try store()
        let rights = server.permissions(of: user.identity)
        let logs = store.topics.filter { rights.maySubscribe(to: $0) }.compactMap { store.log($0) }
        let limit = configuration.maxEventsPerRequest
        let versions = try await Self.offload { () throws(TelexError) -> [ArticleVersionJSON] in
            var found: [(log: TopicLog, version: KeyVersion)] = []
            for log in logs {
                found += try log.versions(of: uri, below: log.readableEndOffset).map { (log, $0) }
            }
            found.sort { a, b in
                (a.version.appendTime, a.log.topic, a.version.offset)
                    < (b.version.appendTime, b.log.topic, b.version.offset)
            }
            var records: [StoredRecord] = []
            for (_, versions) in Dictionary(grouping: found.suffix(limit), by: { $0.log.topic }) {
                let offsets = versions.map(\.version.offset).sorted()
                records += try StoredEvents.records(of: versions[0].log, at: offsets)
            }
            return records.map(ArticleRendering.version).sorted { a, b in
                (a.brokerTime, a.topic, a.offset) < (b.brokerTime, b.topic, b.offset)
            }
        }
        return ArticleJSON(uri: uri, versions: versions)
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
