import TelexProtocol

extension Newsroom {
    /// ADMIN requests and their ADMIN_RESULTs on a connection of the admin principal `ops-oncall` (request ids 31 to
    /// 36, PROTOCOL.md §5.17 and §5.18).
    static var adminVectors: [Vector] {
        [
            Vector(
                name: "admin_info", description: "An operator asks for the broker's version, uptime and data usage.",
                message: .client(.admin(.info)), requestID: 31),
            Vector(
                name: "admin_result_info",
                description:
                    "telexd 0.1, up 3 h 25 min, listening on 10.0.4.7:7420 with fsync always; 5.2 GB in /var/lib/telex, 42 topics, 17 connections.",
                message: .broker(.adminResult(.info(BrokerInfo(
                    serverName: "telexd", version: "0.1", uptimeMilliseconds: 12_301_250, address: "10.0.4.7:7420",
                    fsyncPolicy: "always", dataDirectory: "/var/lib/telex", dataBytes: 5_218_734_091, topicCount: 42,
                    connectionCount: 17)))),
                requestID: 31),
            Vector(
                name: "admin_topics", description: "Every topic matching news.>.",
                message: .client(.admin(.topics(pattern: "news.>"))), requestID: 32),
            Vector(
                name: "admin_result_topics",
                description:
                    "Two topics: news.sport (retention removed offsets below 310) and news.world, last appended at 2024-03-05T08:30:02.117Z.",
                message: .broker(.adminResult(.topics([
                    TopicInfo(
                        topic: "news.sport", startOffset: 310, endOffset: 530, bytes: 402_113, segmentCount: 2,
                        lastAppendTime: 1_709_626_980_442),
                    TopicInfo(
                        topic: "news.world", startOffset: 0, endOffset: 1190, bytes: 2_310_877, segmentCount: 3,
                        lastAppendTime: appendTime),
                ]))),
                requestID: 32),
            Vector(
                name: "admin_consumers", description: "The positions of the durable consumer frontpage-renderer.",
                message: .client(.admin(.consumers(consumer: "frontpage-renderer"))), requestID: 33),
            Vector(
                name: "admin_result_consumers",
                description:
                    "frontpage-renderer is 3 records behind in news.world; its news.sport position was written by an older broker (no commit time).",
                message: .broker(.adminResult(.consumers([
                    ConsumerPosition(
                        consumer: "frontpage-renderer", topic: "news.sport", committed: 529, endOffset: 530, lag: 1,
                        lastCommitTime: 0),
                    ConsumerPosition(
                        consumer: "frontpage-renderer", topic: "news.world", committed: 1187, endOffset: 1190, lag: 3,
                        lastCommitTime: 1_709_627_403_001),
                ]))),
                requestID: 33),
            Vector(
                name: "admin_reset_consumer",
                description:
                    "Set search-indexer's position in every news.* topic to the first record stored at or after 2024-03-05T07:30:00Z, although it is subscribed (force).",
                message: .client(.admin(.resetConsumer(
                    consumer: "search-indexer", pattern: "news.*", to: .timestamp(1_709_623_800_000), force: true))),
                requestID: 34),
            Vector(
                name: "admin_result_reset_consumer",
                description:
                    "search-indexer now reads news.sport from 412 (it had no position there) and news.world from 1186 (it was at 1190).",
                message: .broker(.adminResult(.resetConsumer([
                    ConsumerReset(topic: "news.sport", previous: -1, committed: 412),
                    ConsumerReset(topic: "news.world", previous: 1190, committed: 1186),
                ]))),
                requestID: 34),
            Vector(
                name: "admin_delete_topic", description: "Delete the topic news.test and its data.",
                message: .client(.admin(.deleteTopic(topic: "news.test"))), requestID: 35),
            Vector(
                name: "admin_result_delete_topic", description: "news.test is gone; its subscriptions have ended.",
                message: .broker(.adminResult(.deleteTopic(topic: "news.test"))), requestID: 35),
            Vector(
                name: "admin_purge",
                description: "Erase every version of one withdrawn article from the news.* topics (legal erasure).",
                message: .client(.admin(.purge(
                    key: "urn:newsml:example.com:20240305:withdrawn", pattern: "news.*"))), requestID: 36),
            Vector(
                name: "admin_result_purge",
                description: "Its three versions are gone: offsets 1187 and 1189 of news.world, 530 of news.sport.",
                message: .broker(.adminResult(.purge([
                    PurgedTopic(topic: "news.sport", offsets: [530]),
                    PurgedTopic(topic: "news.world", offsets: [1187, 1189]),
                ]))),
                requestID: 36),
        ]
    }
}

/// The `message` object of ADMIN and ADMIN_RESULT vectors, both ways.
enum AdminVectorCoding {
    static func json(_ request: AdminRequest) -> JSONValue {
        var members: [(String, JSONValue)] = [
            ("command", .int(Int64(request.command.rawValue))), ("commandName", .string(request.command.name)),
        ]
        switch request {
        case .info:
            break
        case .topics(let pattern):
            members.append(("pattern", .string(pattern)))
        case .consumers(let consumer):
            members.append(("consumer", .string(consumer)))
        case .resetConsumer(let consumer, let pattern, let to, let force):
            let (kind, name, value): (Int64, String, Int64) =
                switch to {
                case .beginning: (0, "beginning", 0)
                case .end: (1, "end", 0)
                case .offset(let offset): (2, "offset", offset)
                case .timestamp(let millis): (3, "timestamp", millis)
                case .latest: (4, "latest", 0)
                case .history: (5, "history", 0)
                }
            members += [
                ("consumer", .string(consumer)), ("pattern", .string(pattern)),
                ("to", .object([("kind", .int(kind)), ("name", .string(name)), ("value", .int(value))])),
                ("force", .bool(force)),
            ]
        case .deleteTopic(let topic):
            members.append(("topic", .string(topic)))
        case .purge(let key, let pattern):
            members += [("key", .string(key)), ("pattern", .string(pattern))]
        }
        return .object(members)
    }

    static func json(_ result: AdminResult) -> JSONValue {
        var members: [(String, JSONValue)] = [
            ("command", .int(Int64(result.command.rawValue))), ("commandName", .string(result.command.name)),
        ]
        switch result {
        case .info(let info):
            members += [
                ("serverName", .string(info.serverName)), ("version", .string(info.version)),
                ("uptimeMillis", .int(info.uptimeMilliseconds)), ("address", .string(info.address)),
                ("fsyncPolicy", .string(info.fsyncPolicy)), ("dataDirectory", .string(info.dataDirectory)),
                ("dataBytes", .int(info.dataBytes)), ("topicCount", .int(Int64(info.topicCount))),
                ("connectionCount", .int(Int64(info.connectionCount))),
            ]
        case .topics(let topics):
            members.append(("topics", .array(topics.map {
                .object([
                    ("topic", .string($0.topic)), ("startOffset", .int($0.startOffset)),
                    ("endOffset", .int($0.endOffset)), ("bytes", .int($0.bytes)),
                    ("segmentCount", .int(Int64($0.segmentCount))), ("lastAppendTime", .int($0.lastAppendTime)),
                ])
            })))
        case .consumers(let positions):
            members.append(("positions", .array(positions.map {
                .object([
                    ("consumer", .string($0.consumer)), ("topic", .string($0.topic)),
                    ("committed", .int($0.committed)), ("endOffset", .int($0.endOffset)), ("lag", .int($0.lag)),
                    ("lastCommitTime", .int($0.lastCommitTime)),
                ])
            })))
        case .resetConsumer(let resets):
            members.append(("resets", .array(resets.map {
                .object([
                    ("topic", .string($0.topic)), ("previous", .int($0.previous)), ("committed", .int($0.committed)),
                ])
            })))
        case .deleteTopic(let topic):
            members.append(("topic", .string(topic)))
        case .purge(let topics):
            members.append(("topics", .array(topics.map {
                .object([("topic", .string($0.topic)), ("offsets", .array($0.offsets.map { .int($0) }))])
            })))
        }
        return .object(members)
    }

    static func request(_ json: JSONValue) throws -> AdminRequest {
        switch try command(json) {
        case .info:
            return .info
        case .topics:
            return .topics(pattern: try json.string("pattern"))
        case .consumers:
            return .consumers(consumer: try json.string("consumer"))
        case .resetConsumer:
            let to = try json.field("to")
            let value: Int64 = try to.integer("value")
            let position: StartPosition =
                switch try to.integer("kind", as: UInt8.self) {
                case 0: .beginning
                case 1: .end
                case 2: .offset(value)
                case 3: .timestamp(value)
                default: throw VectorFormatError(description: "to.kind out of range")
                }
            return .resetConsumer(
                consumer: try json.string("consumer"), pattern: try json.string("pattern"), to: position,
                force: try json.bool("force"))
        case .deleteTopic:
            return .deleteTopic(topic: try json.string("topic"))
        case .purge:
            return .purge(key: try json.string("key"), pattern: try json.string("pattern"))
        }
    }

    static func result(_ json: JSONValue) throws -> AdminResult {
        switch try command(json) {
        case .info:
            return .info(BrokerInfo(
                serverName: try json.string("serverName"), version: try json.string("version"),
                uptimeMilliseconds: try json.integer("uptimeMillis"), address: try json.string("address"),
                fsyncPolicy: try json.string("fsyncPolicy"), dataDirectory: try json.string("dataDirectory"),
                dataBytes: try json.integer("dataBytes"), topicCount: try json.integer("topicCount"),
                connectionCount: try json.integer("connectionCount")))
        case .topics:
            return .topics(try json.array("topics").map {
                TopicInfo(
                    topic: try $0.string("topic"), startOffset: try $0.integer("startOffset"),
                    endOffset: try $0.integer("endOffset"), bytes: try $0.integer("bytes"),
                    segmentCount: try $0.integer("segmentCount"), lastAppendTime: try $0.integer("lastAppendTime"))
            })
        case .consumers:
            return .consumers(try json.array("positions").map {
                ConsumerPosition(
                    consumer: try $0.string("consumer"), topic: try $0.string("topic"),
                    committed: try $0.integer("committed"), endOffset: try $0.integer("endOffset"),
                    lag: try $0.integer("lag"), lastCommitTime: try $0.integer("lastCommitTime"))
            })
        case .resetConsumer:
            return .resetConsumer(try json.array("resets").map {
                ConsumerReset(
                    topic: try $0.string("topic"), previous: try $0.integer("previous"),
                    committed: try $0.integer("committed"))
            })
        case .deleteTopic:
            return .deleteTopic(topic: try json.string("topic"))
        case .purge:
            return .purge(try json.array("topics").map {
                PurgedTopic(topic: try $0.string("topic"), offsets: try $0.array("offsets").map { offset in
                    guard case .int(let value) = offset else {
                        throw VectorFormatError(description: "an offset is not an integer")
                    }
                    return value
                })
            })
        }
    }

    private static func command(_ json: JSONValue) throws -> AdminCommand {
        guard let command = AdminCommand(rawValue: try json.integer("command")),
            command.name == (try json.string("commandName"))
        else { throw VectorFormatError(description: "command and commandName do not match") }
        return command
    }
}
