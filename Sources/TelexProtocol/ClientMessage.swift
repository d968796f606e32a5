import NIOCore

/// What a client sends to the broker. Layouts and semantics: Protocol/PROTOCOL.md, "Messages".
public enum ClientMessage: Sendable, Equatable {
    case hello(minVersion: UInt8, maxVersion: UInt8, clientName: String, authToken: ByteBuffer)
    /// One whole record batch for `topic`.
    case publish(topic: String, batch: ByteBuffer)
    case subscribe(
        subscriptionID: UInt32, pattern: String, start: StartPosition, consumerName: String, initialCredit: UInt32,
        resume: [TopicOffset], options: SubscribeOptions = [])
    case credit(subscriptionID: UInt32, batches: UInt32)
    case commit(subscriptionID: UInt32, topic: String, offset: Int64)
    case unsubscribe(subscriptionID: UInt32)
    case ping(nonce: UInt64)
    /// An operator's request; only admin principals may send it.
    case admin(AdminRequest)

    public var type: MessageType {
        switch self {
        case .hello: .hello
        case .publish: .publish
        case .subscribe: .subscribe
        case .credit: .credit
        case .commit: .commit
        case .unsubscribe: .unsubscribe
        case .ping: .ping
        case .admin: .admin
        }
    }

    /// Writes the body (no length prefix, no header).
    public func encodeBody(into buffer: inout ByteBuffer) {
        switch self {
        case .hello(let minVersion, let maxVersion, let clientName, let authToken):
            buffer.writeMultipleIntegers(minVersion, maxVersion)
            buffer.writeShortString(clientName)
            buffer.writeShortBytes(authToken)
        case .publish(let topic, let batch):
            buffer.writeShortString(topic)
            buffer.writeImmutableBuffer(batch)
        case .subscribe(
            let subscriptionID, let pattern, let start, let consumerName, let initialCredit, let resume, let options):
            buffer.writeInteger(subscriptionID)
            buffer.writeShortString(pattern)
            start.write(to: &buffer)
            buffer.writeShortString(consumerName)
            buffer.writeInteger(initialCredit)
            buffer.writeInteger(UInt16(resume.count))
            for entry in resume {
                buffer.writeShortString(entry.topic)
                buffer.writeInteger(entry.offset)
            }
            // Absent means none: a SUBSCRIBE without options is byte for byte what brokers before the field expect.
            if !options.isEmpty { buffer.writeInteger(options.rawValue) }
        case .credit(let subscriptionID, let batches):
            buffer.writeMultipleIntegers(subscriptionID, batches)
        case .commit(let subscriptionID, let topic, let offset):
            buffer.writeInteger(subscriptionID)
            buffer.writeShortString(topic)
            buffer.writeInteger(offset)
        case .unsubscribe(let subscriptionID):
            buffer.writeInteger(subscriptionID)
        case .ping(let nonce):
            buffer.writeInteger(nonce)
        case .admin(let request):
            request.encode(into: &buffer)
        }
    }

    /// Decodes a frame the broker received; the body must be consumed exactly.
    ///
    /// A well-formed frame of a broker-to-client type (HELLO_OK, PUBLISH_ACK, ...) throws `invalidRequest` naming the
    /// type and request id: the broker answers it with an ERROR and keeps the connection. A malformed body throws
    /// `malformedFrame`, whatever the type.
    public static func decode(_ frame: Frame) throws(TelexError) -> ClientMessage {
        var reader = frame.bodyReader
        let message: ClientMessage
        switch frame.header.type {
        case .hello:
            let minVersion = try reader.integer("minVersion", as: UInt8.self)
            let maxVersion = try reader.integer("maxVersion", as: UInt8.self)
            let clientName = try reader.shortString("clientName")
            let authToken = try reader.shortBytes("authToken")
            message = .hello(minVersion: minVersion, maxVersion: maxVersion, clientName: clientName,
                             authToken: authToken)
        case .publish:
            let topic = try reader.shortString("topic")
            let batch = try reader.slice("batch", length: reader.remaining)
            message = .publish(topic: topic, batch: batch)
        case .subscribe:
            let subscriptionID = try reader.integer("subscriptionID", as: UInt32.self)
            let pattern = try reader.shortString("pattern")
            let start = try StartPosition.read(from: &reader)
            let consumerName = try reader.shortString("consumerName")
            let initialCredit = try reader.integer("initialCredit", as: UInt32.self)
            let count = Int(try reader.integer("resumeCount", as: UInt16.self))
            var resume: [TopicOffset] = []
            for index in 0..<count {
                let topic = try reader.shortString("resume[\(index)].topic")
                let offset = try reader.integer("resume[\(index)].offset", as: Int64.self)
                resume.append(TopicOffset(topic: topic, offset: offset))
            }
            let options = reader.remaining > 0 ? try SubscribeOptions.read(from: &reader) : []
            message = .subscribe(subscriptionID: subscriptionID, pattern: pattern, start: start,
                                 consumerName: consumerName, initialCredit: initialCredit, resume: resume,
                                 options: options)
        case .credit:
            let subscriptionID = try reader.integer("subscriptionID", as: UInt32.self)
            let batches = try reader.integer("batches", as: UInt32.self)
            message = .credit(subscriptionID: subscriptionID, batches: batches)
        case .commit:
            let subscriptionID = try reader.integer("subscriptionID", as: UInt32.self)
            let topic = try reader.shortString("topic")
            let offset = try reader.integer("offset", as: Int64.self)
            message = .commit(subscriptionID: subscriptionID, topic: topic, offset: offset)
        case .unsubscribe:
            message = .unsubscribe(subscriptionID: try reader.integer("subscriptionID"))
        case .ping:
            message = .ping(nonce: try reader.integer("nonce"))
        case .admin:
            message = .admin(try AdminRequest.read(from: &reader))
        case .helloOK, .publishAck, .subscribed, .deliver, .commitAck, .unsubscribed, .pong, .error, .caughtUp,
            .adminResult, .deliverSelected:
            // The body must still decode: a malformed one is MALFORMED_FRAME, whatever the type.
            _ = try BrokerMessage.decode(frame)
            throw TelexError(.invalidRequest, "\(reader.context) is sent by the broker, not to it",
                             requestID: frame.header.requestID)
        }
        try reader.expectEnd()
        return message
    }
}

/// SUBSCRIBE's optional trailing `options` byte (Protocol/PROTOCOL.md §5.6); absent means none.
public struct SubscribeOptions: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Bit 0: deliver on after damaged stored ranges instead of ending the subscription with DATA_LOSS.
    public static let skipDamaged = SubscribeOptions(rawValue: 1)

    /// Reads the byte; a bit this version does not define is MALFORMED_FRAME, so none is silently ignored.
    static func read(from reader: inout FieldReader) throws(TelexError) -> SubscribeOptions {
        let raw = try reader.integer("options", as: UInt8.self)
        guard raw & ~SubscribeOptions.skipDamaged.rawValue == 0 else {
            throw TelexError(.malformedFrame, "\(reader.context): options \(raw) sets bits other than 0 (skip damaged)")
        }
        return SubscribeOptions(rawValue: raw)
    }
}

extension ByteBuffer {
    /// Writes `message` as one complete frame. Returns the frame's total size.
    @discardableResult
    public mutating func writeMessage(_ message: ClientMessage, requestID: UInt32) -> Int {
        writeFrame(type: message.type, requestID: requestID) { message.encodeBody(into: &$0) }
    }
}
