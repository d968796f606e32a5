import NIOCore

/// Every message type on the wire; the raw value is the header's type byte.
public enum MessageType: UInt8, Sendable, CaseIterable {
    case hello = 0x01
    case helloOK = 0x02
    case publish = 0x03
    case publishAck = 0x04
    case subscribe = 0x05
    case subscribed = 0x06
    case deliver = 0x07
    case credit = 0x08
    case commit = 0x09
    case commitAck = 0x0A
    case unsubscribe = 0x0B
    case unsubscribed = 0x0C
    case ping = 0x0D
    case pong = 0x0E
    case error = 0x0F
    case caughtUp = 0x10
    case admin = 0x11
    case adminResult = 0x12
    case deliverSelected = 0x13

    public var name: String {
        switch self {
        case .hello: "HELLO"
        case .helloOK: "HELLO_OK"
        case .publish: "PUBLISH"
        case .publishAck: "PUBLISH_ACK"
        case .subscribe: "SUBSCRIBE"
        case .subscribed: "SUBSCRIBED"
        case .deliver: "DELIVER"
        case .credit: "CREDIT"
        case .commit: "COMMIT"
        case .commitAck: "COMMIT_ACK"
        case .unsubscribe: "UNSUBSCRIBE"
        case .unsubscribed: "UNSUBSCRIBED"
        case .ping: "PING"
        case .pong: "PONG"
        case .error: "ERROR"
        case .caughtUp: "CAUGHT_UP"
        case .admin: "ADMIN"
        case .adminResult: "ADMIN_RESULT"
        case .deliverSelected: "DELIVER_SELECTED"
        }
    }
}

/// Where a subscription starts reading each matched topic.
public enum StartPosition: Sendable, Equatable {
    /// The first offset still in the log.
    case beginning
    /// The offset after the last record at subscribe time: only new records.
    case end
    /// This offset (clamped to the log start if retention removed it is an error, not a skip).
    case offset(Int64)
    /// The first record appended at or after this time, in milliseconds since the epoch.
    case timestamp(Int64)
    /// From the beginning, but below the subscribe-time end only each article key's newest record (keys whose
    /// newest record is an `article.deleted` tombstone are left out), then every new record (PROTOCOL.md §8.9).
    case latest
    /// Every stored version of the article whose record key is `key`, oldest first per topic, up to the
    /// subscribe-time end; nothing after that (PROTOCOL.md §8.10).
    case history(key: ByteBuffer)

    var kind: UInt8 {
        switch self {
        case .beginning: 0
        case .end: 1
        case .offset: 2
        case .timestamp: 3
        case .latest: 4
        case .history: 5
        }
    }

    /// True for the start kinds that deliver a selection of the stored records (latest, history).
    public var selects: Bool {
        switch self {
        case .latest, .history: true
        case .beginning, .end, .offset, .timestamp: false
        }
    }

    /// Writes `startKind` and what follows it: `startValue`, or for a history the key in its place.
    func write(to buffer: inout ByteBuffer) {
        switch self {
        case .beginning, .end, .latest: buffer.writeMultipleIntegers(kind, Int64(0))
        case .offset(let value), .timestamp(let value): buffer.writeMultipleIntegers(kind, value)
        case .history(let key):
            buffer.writeInteger(kind)
            buffer.writeShortBytes(key)
        }
    }
}

/// A per-topic resume point sent with SUBSCRIBE: start `topic` at `offset`, overriding the start position.
public struct TopicOffset: Sendable, Equatable, Hashable {
    public var topic: String
    public var offset: Int64
    public init(topic: String, offset: Int64) {
        self.topic = topic
        self.offset = offset
    }
}

/// A matched topic in SUBSCRIBED: where delivery starts and where the log ended at subscribe time.
public struct TopicRange: Sendable, Equatable {
    public var topic: String
    public var startOffset: Int64
    public var endOffset: Int64
    public init(topic: String, startOffset: Int64, endOffset: Int64) {
        self.topic = topic
        self.startOffset = startOffset
        self.endOffset = endOffset
    }
}


extension StartPosition {
    /// Reads the `startKind` and `startValue` fields of SUBSCRIBE (or ADMIN's `toKind` and `toValue`, where the
    /// selecting kinds 4 and 5 are not allowed); the value is ignored for beginning, end and latest, and a
    /// history has its key in the value's place.
    static func read(
        from reader: inout FieldReader, kind kindField: String = "startKind", value valueField: String = "startValue",
        allowSelecting: Bool = true
    ) throws(TelexError) -> StartPosition {
        let kind = try reader.integer(kindField, as: UInt8.self)
        guard kind <= 3 || (allowSelecting && kind <= 5) else {
            throw TelexError(.malformedFrame, "\(reader.context): \(kindField) \(kind) is not \(allowSelecting ? "0-5" : "0-3")")
        }
        if kind == 5 { return .history(key: try reader.shortBytes("key")) }
        let value = try reader.integer(valueField, as: Int64.self)
        switch kind {
        case 0: return .beginning
        case 1: return .end
        case 2: return .offset(value)
        case 3: return .timestamp(value)
        default: return .latest
        }
    }
}

extension Frame {
    /// A reader over the body whose errors name the message and its request id ("PUBLISH (request id 7)").
    var bodyReader: FieldReader {
        FieldReader(body, context: "\(header.type.name) (request id \(header.requestID))")
    }
}
