import NIOCore
import TelexClient
import TelexProtocol

extension TelexClient {
    /// Every stored version of the article `uri` in the topics matching `pattern`, oldest first by (broker time,
    /// topic, offset).
    ///
    /// A stand-in until the broker answers history requests (issue 12, design C: `history(of:topics:)` replaces
    /// it): it reads the matching topics from the beginning until caught up and keeps the records keyed `uri`.
    public func fetchVersions(of uri: String, topics pattern: String) async throws -> [DeliveredRecord] {
        let key = ByteBuffer(string: uri)
        let versions = try await withSubscription(pattern, from: .beginning, untilCaughtUp: true) { records in
            var versions: [DeliveredRecord] = []
            for try await delivered in records where delivered.record.key == key { versions.append(delivered) }
            return versions
        }
        return ArticleHistory.ordered(versions)
    }
}
