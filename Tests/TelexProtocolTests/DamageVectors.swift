import TelexProtocol

extension Newsroom {
    /// A subscription that asks to be delivered on after damaged stored ranges, and the DATA_LOSS error that ends
    /// one that did not ask (PROTOCOL.md §5.6, §8.8 and §9). Each stands for its own connection.
    static var damageVectors: [Vector] {
        [
            Vector(
                name: "subscribe_skip_damaged",
                description:
                    "Anonymous subscription 3 to news.world from the beginning, with the trailing options byte: bit 0, skip damaged ranges instead of ending with DATA_LOSS.",
                message: .client(.subscribe(
                    subscriptionID: 3, pattern: "news.world", start: .beginning, consumerName: "",
                    initialCredit: 64, resume: [], options: .skipDamaged)),
                requestID: 24),
            Vector(
                name: "error_data_loss",
                description:
                    "Subscription 3 (SUBSCRIBE request 25, without skip damaged) reached offsets the broker found damaged on its disk: it ends with DATA_LOSS naming the topic and the lost offsets; UNSUBSCRIBED follows.",
                message: .broker(.error(
                    code: .dataLoss,
                    message: "subscription 3 ended: offsets 145-147 of news.world are lost: bytes 24576-25343 of /var/lib/telex/topics/news.world/00000000000000000000.log are damaged (copied to /var/lib/telex/topics/news.world/damaged/00000000000000000000-24576.bin); subscribe with skip-damaged to read on from offset 148")),
                requestID: 25),
        ]
    }
}
