import NIOCore
import TelexProtocol

extension TelexClient {
    /// Every stored version of the article whose record key is `key` (its ninjs `uri`), in the topics matching
    /// `pattern`, oldest first: by broker append time, then topic name, then offset (PROTOCOL.md §8.10). Includes
    /// `article.deleted` tombstones. Versions appended after the request are not included.
    public func history(of key: String, topics pattern: String = ">") async throws -> [DeliveredRecord] {
        var versions: [DeliveredRecord] = []
        try await withSubscription(pattern, from: .history(key: ByteBuffer(string: key)), untilCaughtUp: true) { records in
            for try await version in records { versions.append(version) }
        }
        return versions.sorted { first, second in
            (first.brokerTime, first.topic, first.offset) < (second.brokerTime, second.topic, second.offset)
        }
    }
}
