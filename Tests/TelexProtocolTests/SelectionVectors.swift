import NIOCore
import TelexProtocol

extension Newsroom {
    /// Latest-version replay and article history (PROTOCOL.md §5.6, §5.18, §8.9, §8.10). Each stands for its own
    /// connection.
    static var selectionVectors: [Vector] {
        [
            Vector(
                name: "subscribe_latest",
                description:
                    "Anonymous subscription 4 to news.> with start kind 4, latest per article: of what is stored now, only each article's newest record (none for articles whose newest is article.deleted), then everything new.",
                message: .client(.subscribe(
                    subscriptionID: 4, pattern: "news.>", start: .latest, consumerName: "", initialCredit: 64,
                    resume: [])),
                requestID: 26),
            Vector(
                name: "subscribe_history",
                description:
                    "Anonymous subscription 5 to news.> with start kind 5, history: every stored version of the article whose key is the uri below; the key takes the place of startValue.",
                message: .client(.subscribe(
                    subscriptionID: 5, pattern: "news.>", start: .history(key: ByteBuffer(string: articleKey)),
                    consumerName: "", initialCredit: 64, resume: [])),
                requestID: 27),
            Vector(
                name: "deliver_selected",
                description:
                    "For latest subscription 4: the two stored batches of news.world holding offsets 1186-1189, of which the client hands on only 1187 and 1189 (the newest versions of their articles); it skips 1186 and 1188.",
                message: .broker(.deliverSelected(
                    subscriptionID: 4, topic: topic, selected: [1187..<1188, 1189..<1190], batches: deliveredBatches)),
                requestID: 0),
        ]
    }
}
