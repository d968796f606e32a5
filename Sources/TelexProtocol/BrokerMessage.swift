import NIOCore

/// What the broker sends to a client. Layouts and semantics: Protocol/PROTOCOL.md, "Messages".
public enum BrokerMessage: Sendable, Equatable {
    case helloOK(version: UInt8, serverName: String, maxFrameSize: UInt32)
    case publishAck(topic: String, baseOffset: Int64, recordCount: UInt32, duplicate: Bool)
    case subscribed(subscriptionID: UInt32, topics: [TopicRange])
    /// Whole stored batches for one topic; the first may begin below the offset asked for.
    case deliver(subscriptionID: UInt32, topic: String, batches: ByteBuffer)
    case commitAck(topic: String, offset: Int64)
    case unsubscribed(subscriptionID: UInt32)
    case pong(nonce: UInt64)
    /// Encoded text is cut to at most 60,000 bytes on a scalar boundary.
    case error(code: TelexError.Code, message: String)
    /// Every topic matched at subscribe time has been delivered up to its end offset at that time.
    case caughtUp(subscriptionID: UInt32)
    /// The answer to an ADMIN request.
    case adminResult(AdminResult)
    /// Whole stored batches for one topic of a latest or history subscription, of which the client hands on only
    /// the records whose offsets lie in `selected` (ascending, disjoint, non-empty ranges); it skips the others.
    case deliverSelected(subscriptionID: UInt32, topic: String, selected: [Range<Int64>], batches: ByteBuffer)

    /// Longest ERROR text sent, in UTF-8 bytes.
    static let maxErrorTextLength = 60_000

    public var type: MessageType {
        switch self {
        case .helloOK: .helloOK
        case .publishAck: .publishAck
        case .subscribed: .subscribed
        case .deliver: .deliver
        case .commitAck: .commitAck
        case .unsubscribed: .unsubscribed
        case .pong: .pong
        case .error: .error
        case .caughtUp: .caughtUp
        case .adminResult: .adminResult
        case .deliverSelected: .deliverSelected
        }
    }

    /// Writes the body (no length prefix, no header).
    public func encodeBody(into buffer: inout ByteBuffer) {
        switch self {
        case .helloOK(let version, let serverName, let maxFrameSize):
            buffer.writeInteger(version)
            buffer.writeShortString(serverName)
            buffer.writeInteger(maxFrameSize)
        case .publishAck(let topic, let baseOffset, let recordCount, let duplicate):
            buffer.writeShortString(topic)
            buffer.writeMultipleIntegers(baseOffset, recordCount, UInt8(duplicate ? 1 : 0))
        case .subscribed(let subscriptionID, let topics):
            buffer.writeInteger(subscriptionID)
            buffer.writeInteger(UInt16(topics.count))
            for range in topics {
                buffer.writeShortString(range.topic)
                buffer.writeMultipleIntegers(range.startOffset, range.endOffset)
            }
        case .deliver(let subscriptionID, let topic, let batches):
            BrokerMessage.writeDeliverPrefix(subscriptionID: subscriptionID, topic: topic, into: &buffer)
            buffer.writeImmutableBuffer(batches)
        case .commitAck(let topic, let offset):
            buffer.writeShortString(topic)
            buffer.writeInteger(offset)
        case .unsubscribed(let subscriptionID), .caughtUp(let subscriptionID):
            buffer.writeInteger(subscriptionID)
        case .pong(let nonce):
            buffer.writeInteger(nonce)
        case .error(let code, let message):
            buffer.writeInteger(code.rawValue)
            buffer.writeShortString(Self.errorText(message))
        case .adminResult(let result):
            result.encode(into: &buffer)
        case .deliverSelected(let subscriptionID, let topic, let selected, let batches):
            BrokerMessage.writeDeliverSelectedPrefix(
                subscriptionID: subscriptionID, topic: topic, selected: selected, into: &buffer)
            buffer.writeImmutableBuffer(batches)
        }
    }

    /// `message` cut to at most `maxErrorTextLength` bytes on a scalar boundary: a cut inside a UTF-8 sequence is
    /// not a valid string.
    static func errorText(_ message: String) -> String {
        let utf8 = message.utf8
        var end = utf8.index(utf8.startIndex, offsetBy: maxErrorTextLength, limitedBy: utf8.endIndex) ?? utf8.endIndex
        while end.samePosition(in: message.unicodeScalars) == nil { end = utf8.index(before: end) }
        return String(message.unicodeScalars[..<end])
    }

    /// The part of a DELIVER body before its batches; the broker follows it with batches sent from the log file.
    public static func writeDeliverPrefix(subscriptionID: UInt32, topic: String, into buffer: inout ByteBuffer) {
        buffer.writeInteger(subscriptionID)
        buffer.writeShortString(topic)
    }

    /// The part of a DELIVER_SELECTED body before its batches: subscription id, topic and the selected ranges as
    /// (`firstOffset i64`, `count u32`) pairs.
    public static func writeDeliverSelectedPrefix(
        subscriptionID: UInt32, topic: String, selected: [Range<Int64>], into buffer: inout ByteBuffer
    ) {
        writeDeliverPrefix(subscriptionID: subscriptionID, topic: topic, into: &buffer)
        buffer.writeInteger(UInt32(selected.count))
        for range in selected { buffer.writeMultipleIntegers(range.lowerBound, UInt32(range.count)) }
    }

    /// Bytes of a DELIVER_SELECTED prefix, for the frame length.
    public static func deliverSelectedPrefixSize(topic: String, rangeCount: Int) -> Int {
        4 + 2 + topic.utf8.count + 4 + 12 * rangeCount
    }

    /// Reads DELIVER_SELECTED's ranges: each non-empty, ascending and disjoint, within the i64 offsets.
    static func readSelectedRanges(from reader: inout FieldReader) throws(TelexError) -> [Range<Int64>] {
        let count = Int(try reader.integer("rangeCount", as: UInt32.self))
        guard count <= reader.remaining / 12 else {
            throw TelexError(.malformedFrame, "\(reader.context): truncated at field ranges (rangeCount \(count) needs \(count * 12) bytes, \(reader.remaining) left)")
        }
        var ranges: [Range<Int64>] = []
        ranges.reserveCapacity(count)
        for index in 0..<count {
            let first = try reader.integer("ranges[\(index)].firstOffset", as: Int64.self)
            let length = try reader.integer("ranges[\(index)].count", as: UInt32.self)
            let (end, overflow) = first.addingReportingOverflow(Int64(length))
            guard first >= 0, length > 0, !overflow, first >= (ranges.last?.upperBound ?? 0) else {
                throw TelexError(.malformedFrame,
                    "\(reader.context): range \(index) (firstOffset \(first), count \(length)) is empty, negative, overflows or is not after the previous one")
            }
            ranges.append(first..<end)
        }
        return ranges
    }

    /// Decodes a frame the client received; the body must be consumed exactly.
    ///
    /// A client-to-broker type (HELLO, PUBLISH, ...) throws `malformedFrame`: a broker that sends one is broken.
    /// A malformed body of such a type gets its field error rather than this one.
    public static func decode(_ frame: Frame) throws(TelexError) -> BrokerMessage {
        var reader = frame.bodyReader
        let message: BrokerMessage
        switch frame.header.type {
        case .helloOK:
            let version = try reader.integer("version", as: UInt8.self)
            let serverName = try reader.shortString("serverName")
            let maxFrameSize = try reader.integer("maxFrameSize", as: UInt32.self)
            message = .helloOK(version: version, serverName: serverName, maxFrameSize: maxFrameSize)
        case .publishAck:
            let topic = try reader.shortString("topic")
            let baseOffset = try reader.integer("baseOffset", as: Int64.self)
            let recordCount = try reader.integer("recordCount", as: UInt32.self)
            let duplicate = try reader.flag("duplicate")
            message = .publishAck(topic: topic, baseOffset: baseOffset, recordCount: recordCount, duplicate: duplicate)
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
        case .commitAck:
            let topic = try reader.shortString("topic")
            let offset = try reader.integer("offset", as: Int64.self)
            message = .commitAck(topic: topic, offset: offset)
        case .unsubscribed:
            message = .unsubscribed(subscriptionID: try reader.integer("subscriptionID"))
        case .pong:
            message = .pong(nonce: try reader.integer("nonce"))
        case .error:
            let code = try reader.integer("code", as: UInt16.self)
            let text = try reader.shortString("message")
            message = .error(code: TelexError.Code(rawValue: code), message: text)
        case .caughtUp:
            message = .caughtUp(subscriptionID: try reader.integer("subscriptionID"))
        case .adminResult:
            message = .adminResult(try AdminResult.read(from: &reader))
        case .deliverSelected:
            let subscriptionID = try reader.integer("subscriptionID", as: UInt32.self)
            let topic = try reader.shortString("topic")
            let selected = try readSelectedRanges(from: &reader)
            let batches = try reader.slice("batches", length: reader.remaining)
            message = .deliverSelected(subscriptionID: subscriptionID, topic: topic, selected: selected, batches: batches)
        case .hello, .publish, .subscribe, .credit, .commit, .unsubscribe, .ping, .admin:
            // Decoded first, so a malformed body gets the same error as on the broker.
            _ = try ClientMessage.decode(frame)
            throw TelexError(.malformedFrame, "\(reader.context) is sent by clients, not by the broker",
                             requestID: frame.header.requestID)
        }
        try reader.expectEnd()
        return message
    }
}

extension ByteBuffer {
    /// Writes `message` as one complete frame. Returns the frame's total size.
    @discardableResult
    public mutating func writeMessage(_ message: BrokerMessage, requestID: UInt32) -> Int {
        writeFrame(type: message.type, requestID: requestID) { message.encodeBody(into: &$0) }
    }
}
