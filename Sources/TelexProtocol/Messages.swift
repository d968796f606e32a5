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

    var kind: UInt8 {
        switch self {
        case .beginning: 0
        case .end: 1
        case .offset: 2
        case .timestamp: 3
        }
    }

    var value: Int64 {
        switch self {
        case .beginning, .end: 0
        case .offset(let value), .timestamp(let value): value
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

/// One decoded message. Layouts and semantics: Protocol/PROTOCOL.md, "Messages".
public enum Message: Sendable, Equatable {
    case hello(minVersion: UInt8, maxVersion: UInt8, clientName: String, authToken: ByteBuffer)
    case helloOK(version: UInt8, serverName: String, maxFrameSize: UInt32)
    /// One whole record batch for `topic`.
    case publish(topic: String, batch: ByteBuffer)
    case publishAck(topic: String, baseOffset: Int64, recordCount: UInt32, duplicate: Bool)
    case subscribe(
        subscriptionID: UInt32, pattern: String, start: StartPosition, consumerName: String, initialCredit: UInt32,
        resume: [TopicOffset])
    case subscribed(subscriptionID: UInt32, topics: [TopicRange])
    /// Whole stored batches for one topic; the first may begin below the offset asked for.
    case deliver(subscriptionID: UInt32, topic: String, batches: ByteBuffer)
    case credit(subscriptionID: UInt32, batches: UInt32)
    case commit(subscriptionID: UInt32, topic: String, offset: Int64)
    case commitAck(topic: String, offset: Int64)
    case unsubscribe(subscriptionID: UInt32)
    case unsubscribed(subscriptionID: UInt32)
    case ping(nonce: UInt64)
    case pong(nonce: UInt64)
    case error(code: TelexError.Code, message: String)
    /// Every topic matched at subscribe time has been delivered up to its end offset at that time.
    case caughtUp(subscriptionID: UInt32)

    public var type: MessageType {
        switch self {
        case .hello: .hello
        case .helloOK: .helloOK
        case .publish: .publish
        case .publishAck: .publishAck
        case .subscribe: .subscribe
        case .subscribed: .subscribed
        case .deliver: .deliver
        case .credit: .credit
        case .commit: .commit
        case .commitAck: .commitAck
        case .unsubscribe: .unsubscribe
        case .unsubscribed: .unsubscribed
        case .ping: .ping
        case .pong: .pong
        case .error: .error
        case .caughtUp: .caughtUp
        }
    }

    /// Writes the body (no length prefix, no header).
    public func encodeBody(into buffer: inout ByteBuffer) {
        switch self {
        case .hello(let minVersion, let maxVersion, let clientName, let authToken):
            buffer.writeMultipleIntegers(minVersion, maxVersion)
            buffer.writeShortString(clientName)
            buffer.writeShortBytes(authToken)
        case .helloOK(let version, let serverName, let maxFrameSize):
            buffer.writeInteger(version)
            buffer.writeShortString(serverName)
            buffer.writeInteger(maxFrameSize)
        case .publish(let topic, let batch):
            buffer.writeShortString(topic)
            buffer.writeImmutableBuffer(batch)
        case .publishAck(let topic, let baseOffset, let recordCount, let duplicate):
            buffer.writeShortString(topic)
            buffer.writeMultipleIntegers(baseOffset, recordCount, UInt8(duplicate ? 1 : 0))
        case .subscribe(let subscriptionID, let pattern, let start, let consumerName, let initialCredit, let resume):
            buffer.writeInteger(subscriptionID)
            buffer.writeShortString(pattern)
            buffer.writeMultipleIntegers(start.kind, start.value)
            buffer.writeShortString(consumerName)
            buffer.writeInteger(initialCredit)
            buffer.writeInteger(UInt16(resume.count))
            for entry in resume {
                buffer.writeShortString(entry.topic)
                buffer.writeInteger(entry.offset)
            }
        case .subscribed(let subscriptionID, let topics):
            buffer.writeInteger(subscriptionID)
            buffer.writeInteger(UInt16(topics.count))
            for range in topics {
                buffer.writeShortString(range.topic)
                buffer.writeMultipleIntegers(range.startOffset, range.endOffset)
            }
        case .deliver(let subscriptionID, let topic, let batches):
            Message.writeDeliverPrefix(subscriptionID: subscriptionID, topic: topic, into: &buffer)
            buffer.writeImmutableBuffer(batches)
        case .credit(let subscriptionID, let batches):
            buffer.writeMultipleIntegers(subscriptionID, batches)
        case .commit(let subscriptionID, let topic, let offset):
            buffer.writeInteger(subscriptionID)
            buffer.writeShortString(topic)
            buffer.writeInteger(offset)
        case .commitAck(let topic, let offset):
            buffer.writeShortString(topic)
            buffer.writeInteger(offset)
        case .unsubscribe(let subscriptionID), .unsubscribed(let subscriptionID), .caughtUp(let subscriptionID):
            buffer.writeInteger(subscriptionID)
        case .ping(let nonce), .pong(let nonce):
            buffer.writeInteger(nonce)
        case .error(let code, let message):
            buffer.writeInteger(code.rawValue)
            // At most 60,000 bytes, cut on a scalar boundary: a cut inside a UTF-8 sequence is not a valid string.
            var end = message.utf8.index(message.utf8.startIndex, offsetBy: 60_000, limitedBy: message.utf8.endIndex)
                ?? message.utf8.endIndex
            while end.samePosition(in: message.unicodeScalars) == nil { end = message.utf8.index(before: end) }
            buffer.writeShortString(String(message.unicodeScalars[..<end]))
        }
    }

    /// The part of a DELIVER body before its batches; the broker follows it with batches sent from the log file.
    public static func writeDeliverPrefix(subscriptionID: UInt32, topic: String, into buffer: inout ByteBuffer) {
        buffer.writeInteger(subscriptionID)
        buffer.writeShortString(topic)
    }

    /// Decodes a frame's body; it must consume exactly the body.
    public static func decode(_ frame: Frame) throws(TelexError) -> Message {
        let name = frame.header.type.name
        var reader = FieldReader(frame.body, context: "\(name) (request id \(frame.header.requestID))")
        let message: Message
        switch frame.header.type {
        case .hello:
            let minVersion = try reader.integer("minVersion", as: UInt8.self)
            let maxVersion = try reader.integer("maxVersion", as: UInt8.self)
            let clientName = try reader.shortString("clientName")
            let authToken = try reader.shortBytes("authToken")
            message = .hello(minVersion: minVersion, maxVersion: maxVersion, clientName: clientName, authToken: authToken)
        case .helloOK:
            let version = try reader.integer("version", as: UInt8.self)
            let serverName = try reader.shortString("serverName")
            let maxFrameSize = try reader.integer("maxFrameSize", as: UInt32.self)
            message = .helloOK(version: version, serverName: serverName, maxFrameSize: maxFrameSize)
        case .publish:
            let topic = try reader.shortString("topic")
            let batch = try reader.slice("batch", length: reader.remaining)
            message = .publish(topic: topic, batch: batch)
        case .publishAck:
            let topic = try reader.shortString("topic")
            let baseOffset = try reader.integer("baseOffset", as: Int64.self)
            let recordCount = try reader.integer("recordCount", as: UInt32.self)
            let duplicate = try reader.integer("duplicate", as: UInt8.self)
            guard duplicate <= 1 else { throw TelexError(.malformedFrame, "\(reader.context): duplicate flag \(duplicate) is not 0 or 1") }
            message = .publishAck(topic: topic, baseOffset: baseOffset, recordCount: recordCount, duplicate: duplicate == 1)
        case .subscribe:
            let subscriptionID = try reader.integer("subscriptionID", as: UInt32.self)
            let pattern = try reader.shortString("pattern")
            let kind = try reader.integer("startKind", as: UInt8.self)
            let value = try reader.integer("startValue", as: Int64.self)
            let start: StartPosition
            switch kind {
            case 0: start = .beginning
            case 1: start = .end
            case 2: start = .offset(value)
            case 3: start = .timestamp(value)
            default: throw TelexError(.malformedFrame, "\(reader.context): startKind \(kind) is not 0-3")
            }
            let consumerName = try reader.shortString("consumerName")
            let initialCredit = try reader.integer("initialCredit", as: UInt32.self)
            let count = Int(try reader.integer("resumeCount", as: UInt16.self))
            var resume: [TopicOffset] = []
            for index in 0..<count {
                let topic = try reader.shortString("resume[\(index)].topic")
                let offset = try reader.integer("resume[\(index)].offset", as: Int64.self)
                resume.append(TopicOffset(topic: topic, offset: offset))
            }
            message = .subscribe(subscriptionID: subscriptionID, pattern: pattern, start: start,
                                 consumerName: consumerName, initialCredit: initialCredit, resume: resume)
        case .subscribed:
            let subscriptionID = try reader.integer("subscriptionID", as: UInt32.self)
            let count = Int(try reader.integer("topicCount", as: UInt16.self))
            var topics: [TopicRange] = []
            for index in 0..<count {
                let topic = try reader.shortString("topics[\(index)].topic")
                let startOffset = try reader.integer("topics[\(index)].startOffset", as: Int64.self)
                let endOffset = try reader.integer("topics[\(index)].endOffset", as: Int64.self)
                topics.append(TopicRange(topic: topic, startOffset: startOffset, endOffset: endOffset))
            }
            message = .subscribed(subscriptionID: subscriptionID, topics: topics)
        case .deliver:
            let subscriptionID = try reader.integer("subscriptionID", as: UInt32.self)
            let topic = try reader.shortString("topic")
            let batches = try reader.slice("batches", length: reader.remaining)
            message = .deliver(subscriptionID: subscriptionID, topic: topic, batches: batches)
        case .credit:
            let subscriptionID = try reader.integer("subscriptionID", as: UInt32.self)
            let batches = try reader.integer("batches", as: UInt32.self)
            message = .credit(subscriptionID: subscriptionID, batches: batches)
        case .commit:
            let subscriptionID = try reader.integer("subscriptionID", as: UInt32.self)
            let topic = try reader.shortString("topic")
            let offset = try reader.integer("offset", as: Int64.self)
            message = .commit(subscriptionID: subscriptionID, topic: topic, offset: offset)
        case .commitAck:
            let topic = try reader.shortString("topic")
            let offset = try reader.integer("offset", as: Int64.self)
            message = .commitAck(topic: topic, offset: offset)
        case .unsubscribe:
            message = .unsubscribe(subscriptionID: try reader.integer("subscriptionID"))
        case .unsubscribed:
            message = .unsubscribed(subscriptionID: try reader.integer("subscriptionID"))
        case .ping:
            message = .ping(nonce: try reader.integer("nonce"))
        case .pong:
            message = .pong(nonce: try reader.integer("nonce"))
        case .error:
            let code = try reader.integer("code", as: UInt16.self)
            let text = try reader.shortString("message")
            message = .error(code: TelexError.Code(rawValue: code), message: text)
        case .caughtUp:
            message = .caughtUp(subscriptionID: try reader.integer("subscriptionID"))
        }
        try reader.expectEnd()
        return message
    }
}

extension ByteBuffer {
    /// Writes `message` as one complete frame.
    @discardableResult
    public mutating func writeMessage(_ message: Message, requestID: UInt32) -> Int {
        writeFrame(type: message.type, requestID: requestID) { message.encodeBody(into: &$0) }
    }
}

/// Topic names and subscription patterns: dot-separated tokens of `[A-Za-z0-9_-]`.
public enum TopicName {
    /// Longest topic or pattern, in bytes.
    public static let maxLength = 249
    /// Longest single token, in bytes.
    public static let maxTokenLength = 64

    /// Checks a concrete topic name (no wildcards).
    public static func validate(_ topic: String) throws(TelexError) {
        try check(topic, allowWildcards: false)
    }

    /// Checks a subscription pattern: a topic, where a token may be `*` (one token) or the last token `>` (the rest).
    public static func validatePattern(_ pattern: String) throws(TelexError) {
        try check(pattern, allowWildcards: true)
    }

    /// Whether `topic` matches `pattern`.
    public static func matches(pattern: String, topic: String) -> Bool {
        let patternTokens = pattern.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        let topicTokens = topic.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        for (index, token) in patternTokens.enumerated() {
            if token.elementsEqual(">".utf8) { return topicTokens.count > index }
            guard index < topicTokens.count else { return false }
            if token.elementsEqual("*".utf8) { continue }
            if !token.elementsEqual(topicTokens[index]) { return false }
        }
        return patternTokens.count == topicTokens.count
    }

    /// Whether `pattern` has wildcards.
    public static func isPattern(_ pattern: String) -> Bool {
        pattern.split(separator: ".").contains { $0 == "*" || $0 == ">" }
    }

    private static func check(_ name: String, allowWildcards: Bool) throws(TelexError) {
        let what = allowWildcards ? "pattern" : "topic"
        guard !name.isEmpty else { throw TelexError(.invalidTopic, "\(what) is empty") }
        guard name.utf8.count <= maxLength else {
            throw TelexError(.invalidTopic, "\(what) '\(name.prefix(40))…' is \(name.utf8.count) bytes; the maximum is \(maxLength)")
        }
        let tokens = name.split(separator: ".", omittingEmptySubsequences: false)
        for (index, token) in tokens.enumerated() {
            guard !token.isEmpty else {
                throw TelexError(.invalidTopic, "\(what) '\(name)' has an empty token at position \(index + 1) (no leading, trailing or double dots)")
            }
            guard token.utf8.count <= maxTokenLength else {
                throw TelexError(.invalidTopic, "\(what) '\(name)': token '\(token.prefix(20))…' is longer than \(maxTokenLength) bytes")
            }
            if allowWildcards, token == "*" { continue }
            if allowWildcards, token == ">" {
                guard index == tokens.count - 1 else {
                    throw TelexError(.invalidTopic, "pattern '\(name)': '>' may only be the last token")
                }
                continue
            }
            for scalar in token.unicodeScalars {
                let ok = (scalar >= "a" && scalar <= "z") || (scalar >= "A" && scalar <= "Z")
                    || (scalar >= "0" && scalar <= "9") || scalar == "_" || scalar == "-"
                guard ok else {
                    let hint = (scalar == "*" || scalar == ">") && !allowWildcards
                        ? " (wildcards are for subscriptions; publish to a concrete topic)" : ""
                    throw TelexError(.invalidTopic,
                        "\(what) '\(name)': character '\(scalar)' in token '\(token)' is not allowed (use A-Z a-z 0-9 _ -)\(hint)")
                }
            }
        }
    }
}
