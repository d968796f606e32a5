import NIOCore
import TelexProtocol

/// Realistic newsroom values shared by the vectors and the tests.
enum Newsroom {
    static let topic = "news.world"
    static let articleKey = "urn:telex:article:harbin-npc-2024"
    static let festivalKey = "urn:telex:article:harbin-ice-festival-2024"
    /// 2024-03-05T08:30:00Z in milliseconds.
    static let publishedAt: Int64 = 1_709_627_400_000
    /// Below 2^53 so every JSON parser reads it exactly.
    static let producerID: Int64 = 4_288_278_183_574_373
    /// The broker's append time for the stored copies of the batches.
    static let appendTime: Int64 = 1_709_627_402_117
    /// Offsets the broker assigned to the two published batches.
    static let firstBaseOffset: Int64 = 1186
    static let secondBaseOffset: Int64 = 1188

    /// A compact CloudEvents 1.0 envelope around a small ninjs article.
    static func cloudEvent(type: String, id: String, time: String, uri: String, version: Int, headline: String)
        -> String
    {
        #"{"specversion":"1.0","type":"org.iptc.ninjs.article.\#(type)","source":"urn:telex:desk:world","id":"\#(id)","time":"\#(time)","datacontenttype":"application/json","data":{"uri":"\#(uri)","version":"\#(version)","headline":"\#(headline)"}}"#
    }

    static let contentType = RecordHeader(name: "content-type", value: "application/cloudevents+json")

    static let records: [Record] = [
        Record(
            timestamp: publishedAt, key: ByteBuffer(string: articleKey),
            headers: [contentType, RecordHeader(name: "telex-desk", value: "world")],
            value: ByteBuffer(
                string: cloudEvent(
                    type: "published", id: "3f1c9a52-7d4e-4b8a-9e61-0c2f5b7d8a14", time: "2024-03-05T08:30:00Z",
                    uri: articleKey, version: 1, headline: "Harbin delegates arrive in Beijing for the NPC"))),
        Record(
            timestamp: publishedAt + 1_850, key: ByteBuffer(string: articleKey), headers: [contentType],
            value: ByteBuffer(
                string: cloudEvent(
                    type: "updated", id: "8b0e4d17-2a6c-4f3e-b5d9-61c7e2a90f38", time: "2024-03-05T08:30:01.850Z",
                    uri: articleKey, version: 2, headline: "Harbin delegates arrive in Beijing — NPC opens today"))),
        Record(
            timestamp: publishedAt + 61_200, key: ByteBuffer(string: articleKey), headers: [contentType],
            value: ByteBuffer(
                string: cloudEvent(
                    type: "updated", id: "c4a7e9d2-5f18-4b03-8e6a-97d1b2c3f450", time: "2024-03-05T08:31:01.200Z",
                    uri: articleKey, version: 3, headline: "NPC opens: Harbin delegation tables ice-economy motion"))),
        Record(
            timestamp: publishedAt + 60_950, key: ByteBuffer(string: festivalKey),
            headers: [
                contentType, RecordHeader(name: "telex-desk", value: "world"),
                RecordHeader(name: "telex-priority", value: "routine"),
            ],
            value: ByteBuffer(
                string: cloudEvent(
                    type: "published", id: "1d9f3b6e-0c42-47a8-a5e1-3b8f6d2c7e95", time: "2024-03-05T08:31:00.950Z",
                    uri: festivalKey, version: 1, headline: "Harbin ice festival closes after record season"))),
    ]

    /// The first two records, uncompressed, as a producer sends them (offset and append time 0).
    static var plainBatch: ByteBuffer {
        var builder = RecordBatchBuilder()
        records[0...1].forEach { builder.append($0) }
        return builder.build(codec: .none, producerID: producerID, producerSequence: 0)
    }

    /// The last two records, zlib level 1, the same producer's next batch.
    static var zlibBatch: ByteBuffer {
        var builder = RecordBatchBuilder()
        records[2...3].forEach { builder.append($0) }
        return builder.build(
            codec: .zlib, compressor: BatchCompressor(level: 1, implementation: .zlib), producerID: producerID,
            producerSequence: 1)
    }

    /// `batch` as the broker stores it: base offset and append time filled in.
    static func stored(_ batch: ByteBuffer, baseOffset: Int64) -> ByteBuffer {
        var copy = batch
        RecordBatch.assign(baseOffset: baseOffset, appendTime: appendTime, in: &copy, at: copy.readerIndex)
        return copy
    }

    /// Both batches as stored, back to back: a DELIVER body's batches.
    static var deliveredBatches: ByteBuffer {
        var buffer = stored(plainBatch, baseOffset: firstBaseOffset)
        buffer.writeImmutableBuffer(stored(zlibBatch, baseOffset: secondBaseOffset))
        return buffer
    }

    /// One good vector: a message and the request id it travels with.
    struct Vector: Sendable {
        var name: String
        var description: String
        var message: WireMessage
        var requestID: UInt32
    }

    /// The good vectors: every message type at least once, and batches with both codecs.
    static var vectors: [Vector] {
        [
            Vector(
                name: "hello", description: "Client's first frame: speaks versions 1...1, names itself, sends a token.",
                message: .client(.hello(
                    minVersion: 1, maxVersion: 1, clientName: "telex-pub/0.1 (desk-world-07)",
                    authToken: ByteBuffer(string: "newsroom-token-5f2c"))),
                requestID: 1),
            Vector(
                name: "hello_ok",
                description: "Server accepts the handshake: version 1, its name and maximum frame size.",
                message: .broker(.helloOK(version: 1, serverName: "telexd/0.1", maxFrameSize: 8 << 20)), requestID: 1),
            Vector(
                name: "publish",
                description:
                    "PUBLISH of one uncompressed batch (codec none) with two records: keys, headers, CloudEvents values. Base offset and append time are 0 as a producer sends them.",
                message: .client(.publish(topic: topic, batch: plainBatch)), requestID: 7),
            Vector(
                name: "publish_zlib",
                description: "PUBLISH of one zlib batch (level 1) with two records, the same producer's next sequence.",
                message: .client(.publish(topic: topic, batch: zlibBatch)), requestID: 8),
            Vector(
                name: "publish_ack", description: "The broker stored request 7's two records at offsets 1186 and 1187.",
                message: .broker(
                    .publishAck(topic: topic, baseOffset: firstBaseOffset, recordCount: 2, duplicate: false)),
                requestID: 7),
            Vector(
                name: "publish_ack_duplicate",
                description:
                    "A retry of request 7's batch (same producerId and producerSequence) answered with the original offsets and duplicate=1; nothing was appended.",
                message: .broker(
                    .publishAck(topic: topic, baseOffset: firstBaseOffset, recordCount: 2, duplicate: true)),
                requestID: 9),
            Vector(
                name: "subscribe",
                description:
                    "Durable subscription 1 to news.>: start at a timestamp, consumer 'frontpage-renderer', 8 batches of credit, resume news.world at 1187.",
                message: .client(.subscribe(
                    subscriptionID: 1, pattern: "news.>", start: .timestamp(publishedAt - 3_600_000),
                    consumerName: "frontpage-renderer", initialCredit: 8,
                    resume: [TopicOffset(topic: topic, offset: 1187)])),
                requestID: 10),
            Vector(
                name: "subscribe_end",
                description: "Anonymous subscription 2 to one exact topic, new records only, no resume list.",
                message: .client(.subscribe(
                    subscriptionID: 2, pattern: "news.sport", start: .end, consumerName: "",
                    initialCredit: 1, resume: [])),
                requestID: 11),
            Vector(
                name: "subscribed",
                description:
                    "Subscription 1 matched two topics: where delivery starts and where each log ended at subscribe time.",
                message: .broker(.subscribed(
                    subscriptionID: 1,
                    topics: [
                        TopicRange(topic: topic, startOffset: 1187, endOffset: 1190),
                        TopicRange(topic: "news.sport", startOffset: 512, endOffset: 530),
                    ])),
                requestID: 10),
            Vector(
                name: "deliver",
                description:
                    "DELIVER of two stored batches of news.world (offsets 1186-1187 uncompressed, 1188-1189 zlib). The subscription asked for 1187, so the client skips offset 1186.",
                message: .broker(.deliver(subscriptionID: 1, topic: topic, batches: deliveredBatches)), requestID: 0),
            Vector(
                name: "credit", description: "Subscription 1 may receive 8 more batches.",
                message: .client(.credit(subscriptionID: 1, batches: 8)), requestID: 12),
            Vector(
                name: "commit",
                description:
                    "Consumer of subscription 1 has processed news.world up to 1189; the next offset to read is 1190.",
                message: .client(.commit(subscriptionID: 1, topic: topic, offset: 1190)), requestID: 13),
            Vector(
                name: "commit_ack", description: "The broker stored the committed offset.",
                message: .broker(.commitAck(topic: topic, offset: 1190)), requestID: 13),
            Vector(
                name: "unsubscribe", description: "Stop subscription 2.",
                message: .client(.unsubscribe(subscriptionID: 2)), requestID: 14),
            Vector(
                name: "unsubscribed", description: "Subscription 2 is gone; no DELIVER for it follows.",
                message: .broker(.unsubscribed(subscriptionID: 2)), requestID: 14),
            Vector(
                name: "ping", description: "Keep-alive with a nonce.",
                message: .client(.ping(nonce: 180_258_102_730_097)), requestID: 15),
            Vector(
                name: "pong", description: "Answer to the ping, echoing the nonce.",
                message: .broker(.pong(nonce: 180_258_102_730_097)), requestID: 15),
            Vector(
                name: "error",
                description:
                    "The broker rejects request 16, a SUBSCRIBE with an invalid pattern; the connection stays open.",
                message: .broker(
                    .error(code: .invalidTopic, message: "pattern 'news.>.world': '>' may only be the last token")),
                requestID: 16),
            Vector(
                name: "error_not_authorized",
                description:
                    "The broker refuses request 17, a PUBLISH to a topic outside the principal's publish patterns; the connection stays open and no topic is created.",
                message: .broker(
                    .error(code: .notAuthorized, message: "principal 'desk-world' may not publish to 'news.sport'")),
                requestID: 17),
            Vector(
                name: "caught_up",
                description:
                    "Subscription 1 has been delivered every topic matched at subscribe time up to its end offset.",
                message: .broker(.caughtUp(subscriptionID: 1)), requestID: 0),
        ] + limitVectors + adminVectors + damageVectors + keyTableVectors + selectionVectors
    }
}
