import NIOCore

/// An operator's request in an ADMIN frame. Layouts: Protocol/PROTOCOL.md §5.17.
public enum AdminRequest: Sendable, Equatable {
    /// The broker's version, uptime, address, fsync policy and data directory usage.
    case info
    /// Every topic matching `pattern` (every topic when empty), with its offsets and size.
    case topics(pattern: String)
    /// Every durable consumer's positions, or only `consumer`'s when it is not empty.
    case consumers(consumer: String)
    /// Sets `consumer`'s committed position in every topic matching `pattern` (when empty: every topic it has a
    /// position in) to `to`. Refused while the consumer is subscribed, unless `force`.
    case resetConsumer(consumer: String, pattern: String, to: StartPosition, force: Bool)
    /// Removes a topic and its data.
    case deleteTopic(topic: String)
    /// Physically removes every record whose key is `key` (an article's uri) from every topic matching `pattern`
    /// (every topic when empty): legal erasure, PROTOCOL.md §5.17.
    case purge(key: String, pattern: String)

    /// The `command` byte shared by a request and its result.
    public var command: AdminCommand {
        switch self {
        case .info: .info
        case .topics: .topics
        case .consumers: .consumers
        case .resetConsumer: .resetConsumer
        case .deleteTopic: .deleteTopic
        case .purge: .purge
        }
    }

    func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(command.rawValue)
        switch self {
        case .info:
            break
        case .topics(let pattern):
            buffer.writeShortString(pattern)
        case .consumers(let consumer):
            buffer.writeShortString(consumer)
        case .resetConsumer(let consumer, let pattern, let to, let force):
            buffer.writeShortString(consumer)
            buffer.writeShortString(pattern)
            to.write(to: &buffer)
            buffer.writeInteger(UInt8(force ? 1 : 0))
        case .deleteTopic(let topic):
            buffer.writeShortString(topic)
        case .purge(let key, let pattern):
            buffer.writeShortString(key)
            buffer.writeShortString(pattern)
        }
    }

    static func read(from reader: inout FieldReader) throws(TelexError) -> AdminRequest {
        switch try AdminCommand.read(from: &reader) {
        case .info:
            return .info
        case .topics:
            return .topics(pattern: try reader.shortString("pattern"))
        case .consumers:
            return .consumers(consumer: try reader.shortString("consumer"))
        case .resetConsumer:
            let consumer = try reader.shortString("consumer")
            let pattern = try reader.shortString("pattern")
            let to = try StartPosition.read(from: &reader, kind: "toKind", value: "toValue", allowSelecting: false)
            let force = try reader.flag("force")
            return .resetConsumer(consumer: consumer, pattern: pattern, to: to, force: force)
        case .deleteTopic:
            return .deleteTopic(topic: try reader.shortString("topic"))
        case .purge:
            let key = try reader.shortString("key")
            return .purge(key: key, pattern: try reader.shortString("pattern"))
        }
    }
}

/// The `command` byte of ADMIN and ADMIN_RESULT.
public enum AdminCommand: UInt8, Sendable, CaseIterable {
    case info = 0
    case topics = 1
    case consumers = 2
    case resetConsumer = 3
    case deleteTopic = 4
    case purge = 5

    /// The name used by `telex-admin` and in audit records.
    public var name: String {
        switch self {
        case .info: "info"
        case .topics: "topics"
        case .consumers: "consumers"
        case .resetConsumer: "reset-consumer"
        case .deleteTopic: "delete-topic"
        case .purge: "purge"
        }
    }

    static func read(from reader: inout FieldReader) throws(TelexError) -> AdminCommand {
        let raw = try reader.integer("command", as: UInt8.self)
        guard let command = AdminCommand(rawValue: raw) else {
            throw TelexError(.malformedFrame, "\(reader.context): command \(raw) is not 0-\(AdminCommand.allCases.count - 1)")
        }
        return command
    }
}

/// The broker's answer to an ADMIN request, in an ADMIN_RESULT frame.
public enum AdminResult: Sendable, Equatable {
    case info(BrokerInfo)
    case topics([TopicInfo])
    case consumers([ConsumerPosition])
    /// Each topic whose position was set, with the position before and after.
    case resetConsumer([ConsumerReset])
    /// The topic that was removed.
    case deleteTopic(topic: String)
    /// Each topic records were purged from, with the offsets removed.
    case purge([PurgedTopic])

    /// The `command` byte shared by a request and its result.
    public var command: AdminCommand {
        switch self {
        case .info: .info
        case .topics: .topics
        case .consumers: .consumers
        case .resetConsumer: .resetConsumer
        case .deleteTopic: .deleteTopic
        case .purge: .purge
        }
    }

    func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(command.rawValue)
        switch self {
        case .info(let info):
            buffer.writeShortString(info.serverName)
            buffer.writeShortString(info.version)
            buffer.writeInteger(info.uptimeMilliseconds)
            buffer.writeShortString(info.address)
            buffer.writeShortString(info.fsyncPolicy)
            buffer.writeShortString(info.dataDirectory)
            buffer.writeMultipleIntegers(info.dataBytes, info.topicCount, info.connectionCount)
        case .topics(let topics):
            buffer.writeInteger(UInt32(topics.count))
            for topic in topics {
                buffer.writeShortString(topic.topic)
                buffer.writeMultipleIntegers(
                    topic.startOffset, topic.endOffset, topic.bytes, topic.segmentCount, topic.lastAppendTime)
            }
        case .consumers(let positions):
            buffer.writeInteger(UInt32(positions.count))
            for position in positions {
                buffer.writeShortString(position.consumer)
                buffer.writeShortString(position.topic)
                buffer.writeMultipleIntegers(
                    position.committed, position.endOffset, position.lag, position.lastCommitTime)
            }
        case .resetConsumer(let resets):
            buffer.writeInteger(UInt32(resets.count))
            for reset in resets {
                buffer.writeShortString(reset.topic)
                buffer.writeMultipleIntegers(reset.previous, reset.committed)
            }
        case .deleteTopic(let topic):
            buffer.writeShortString(topic)
        case .purge(let topics):
            buffer.writeInteger(UInt32(topics.count))
            for topic in topics {
                buffer.writeShortString(topic.topic)
                buffer.writeInteger(UInt32(topic.offsets.count))
                for offset in topic.offsets { buffer.writeInteger(offset) }
            }
        }
    }

    static func read(from reader: inout FieldReader) throws(TelexError) -> AdminResult {
        switch try AdminCommand.read(from: &reader) {
        case .info:
            let serverName = try reader.shortString("serverName")
            let version = try reader.shortString("version")
            let uptime = try reader.integer("uptimeMillis", as: Int64.self)
            let address = try reader.shortString("address")
            let fsyncPolicy = try reader.shortString("fsyncPolicy")
            let dataDirectory = try reader.shortString("dataDirectory")
            let dataBytes = try reader.integer("dataBytes", as: Int64.self)
            let topicCount = try reader.integer("topicCount", as: UInt32.self)
            let connectionCount = try reader.integer("connectionCount", as: UInt32.self)
            return .info(BrokerInfo(
                serverName: serverName, version: version, uptimeMilliseconds: uptime, address: address,
                fsyncPolicy: fsyncPolicy, dataDirectory: dataDirectory, dataBytes: dataBytes, topicCount: topicCount,
                connectionCount: connectionCount))
        case .topics:
            var topics: [TopicInfo] = []
            for index in 0..<Int(try reader.integer("topicCount", as: UInt32.self)) {
                topics.append(TopicInfo(
                    topic: try reader.shortString("topics[\(index)].topic"),
                    startOffset: try reader.integer("topics[\(index)].startOffset"),
                    endOffset: try reader.integer("topics[\(index)].endOffset"),
                    bytes: try reader.integer("topics[\(index)].bytes"),
                    segmentCount: try reader.integer("topics[\(index)].segmentCount"),
                    lastAppendTime: try reader.integer("topics[\(index)].lastAppendTime")))
            }
            return .topics(topics)
        case .consumers:
            var positions: [ConsumerPosition] = []
            for index in 0..<Int(try reader.integer("positionCount", as: UInt32.self)) {
                positions.append(ConsumerPosition(
                    consumer: try reader.shortString("positions[\(index)].consumer"),
                    topic: try reader.shortString("positions[\(index)].topic"),
                    committed: try reader.integer("positions[\(index)].committed"),
                    endOffset: try reader.integer("positions[\(index)].endOffset"),
                    lag: try reader.integer("positions[\(index)].lag"),
                    lastCommitTime: try reader.integer("positions[\(index)].lastCommitTime")))
            }
            return .consumers(positions)
        case .resetConsumer:
            var resets: [ConsumerReset] = []
            for index in 0..<Int(try reader.integer("resetCount", as: UInt32.self)) {
                resets.append(ConsumerReset(
                    topic: try reader.shortString("resets[\(index)].topic"),
                    previous: try reader.integer("resets[\(index)].previous"),
                    committed: try reader.integer("resets[\(index)].committed")))
            }
            return .resetConsumer(resets)
        case .deleteTopic:
            return .deleteTopic(topic: try reader.shortString("topic"))
        case .purge:
            var topics: [PurgedTopic] = []
            for index in 0..<Int(try reader.integer("topicCount", as: UInt32.self)) {
                let topic = try reader.shortString("topics[\(index)].topic")
                let count = Int(try reader.integer("topics[\(index)].offsetCount", as: UInt32.self))
                var offsets: [Int64] = []
                // Each offset takes 8 bytes: a count beyond the frame fails at the first missing one, before
                // reserving memory for it.
                for offset in 0..<count {
                    offsets.append(try reader.integer("topics[\(index)].offsets[\(offset)]", as: Int64.self))
                }
                topics.append(PurgedTopic(topic: topic, offsets: offsets))
            }
            return .purge(topics)
        }
    }
}

/// One topic `telex-admin purge` removed records from.
public struct PurgedTopic: Sendable, Equatable, Codable {
    public var topic: String
    /// The offsets removed, ascending; they are gaps in the topic from now on.
    public var offsets: [Int64]

    public init(topic: String, offsets: [Int64]) {
        self.topic = topic
        self.offsets = offsets
    }
}

/// What `telex-admin info` shows.
public struct BrokerInfo: Sendable, Equatable, Codable {
    /// The broker's name, as in HELLO_OK.
    public var serverName: String
    /// The broker software's version.
    public var version: String
    /// Time since the broker started, in milliseconds.
    public var uptimeMilliseconds: Int64
    /// The address the broker listens on, as `host:port`.
    public var address: String
    /// The fsync policy, as `telexd --fsync` spells it.
    public var fsyncPolicy: String
    /// The data directory's path on the broker.
    public var dataDirectory: String
    /// Bytes of every file under the data directory.
    public var dataBytes: Int64
    public var topicCount: UInt32
    /// Open client connections.
    public var connectionCount: UInt32

    public init(
        serverName: String, version: String, uptimeMilliseconds: Int64, address: String, fsyncPolicy: String,
        dataDirectory: String, dataBytes: Int64, topicCount: UInt32, connectionCount: UInt32
    ) {
        self.serverName = serverName
        self.version = version
        self.uptimeMilliseconds = uptimeMilliseconds
        self.address = address
        self.fsyncPolicy = fsyncPolicy
        self.dataDirectory = dataDirectory
        self.dataBytes = dataBytes
        self.topicCount = topicCount
        self.connectionCount = connectionCount
    }
}

/// One topic in `telex-admin topics`.
public struct TopicInfo: Sendable, Equatable, Codable {
    public var topic: String
    /// The first offset still in the log.
    public var startOffset: Int64
    /// The offset the next record will get.
    public var endOffset: Int64
    /// Bytes of the topic's segments (log files).
    public var bytes: Int64
    public var segmentCount: UInt32
    /// When the last batch was appended, in milliseconds since the epoch; 0 if none was since the topic was made.
    public var lastAppendTime: Int64

    public init(
        topic: String, startOffset: Int64, endOffset: Int64, bytes: Int64, segmentCount: UInt32, lastAppendTime: Int64
    ) {
        self.topic = topic
        self.startOffset = startOffset
        self.endOffset = endOffset
        self.bytes = bytes
        self.segmentCount = segmentCount
        self.lastAppendTime = lastAppendTime
    }
}

/// One durable consumer's position in one topic, in `telex-admin consumers`.
public struct ConsumerPosition: Sendable, Equatable, Codable {
    public var consumer: String
    public var topic: String
    /// The committed position: the next offset the consumer will read.
    public var committed: Int64
    /// The topic's readable end offset (−1 if the topic no longer exists).
    public var endOffset: Int64
    /// `endOffset − committed`, at least 0 (0 if the topic no longer exists).
    public var lag: Int64
    /// When the position was last committed or reset, in milliseconds since the epoch; 0 if unknown (written by
    /// a broker that did not record commit times).
    public var lastCommitTime: Int64

    public init(
        consumer: String, topic: String, committed: Int64, endOffset: Int64, lag: Int64, lastCommitTime: Int64
    ) {
        self.consumer = consumer
        self.topic = topic
        self.committed = committed
        self.endOffset = endOffset
        self.lag = lag
        self.lastCommitTime = lastCommitTime
    }
}

/// One topic whose committed position `telex-admin reset-consumer` set.
public struct ConsumerReset: Sendable, Equatable, Codable {
    public var topic: String
    /// The committed position before, or −1 if the consumer had none in this topic.
    public var previous: Int64
    /// The committed position now: the next offset the consumer will read.
    public var committed: Int64

    public init(topic: String, previous: Int64, committed: Int64) {
        self.topic = topic
        self.previous = previous
        self.committed = committed
    }
}
