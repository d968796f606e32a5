import Logging
import NIOConcurrencyHelpers
import TelexProtocol

/// Every topic log in a data directory, plus the consumer offsets. Layout: Protocol/STORAGE.md.
///
/// `DATA/topics/<topic>/<base offset>.log|.index|.timeindex` and `DATA/consumers/<name>.offsets`.
public final class TopicStore: @unchecked Sendable {
    public let directory: String
    public let configuration: LogConfiguration
    public let consumerOffsets: ConsumerOffsets
    private let logger: Logger
    private let lock = NIOLock()
    private var logs: [String: TopicLog] = [:]

    /// Opens the data directory (creating it if missing) and recovers every topic in it.
    public init(directory: String, configuration: LogConfiguration = .init(), logger: Logger) throws(TelexError) {
        self.directory = directory
        self.configuration = configuration
        self.logger = logger
        try FileIO.makeDirectory(directory + "/topics")
        consumerOffsets = try ConsumerOffsets(directory: directory + "/consumers")
        for name in try FileIO.listDirectory(directory + "/topics") where FileIO.isDirectory(directory + "/topics/" + name) {
            do {
                try TopicName.validate(name)
            } catch {
                logger.warning("ignoring directory that is not a topic name", metadata: ["directory": "\(name)"])
                continue
            }
            logs[name] = try TopicLog(topic: name, directory: directory + "/topics/" + name,
                                      configuration: configuration, logger: logger)
        }
    }

    /// Every topic, sorted.
    public var topics: [String] { lock.withLock { logs.keys.sorted() } }

    /// The log of `topic`, if it exists.
    public func log(_ topic: String) -> TopicLog? {
        lock.withLock { logs[topic] }
    }

    /// The log of `topic`, created if missing; `created` tells whether this call made it.
    public func createLog(_ topic: String) throws(TelexError) -> (log: TopicLog, created: Bool) {
        try TopicName.validate(topic)
        lock.lock()
        defer { lock.unlock() }
        do {
            if let log = logs[topic] { return (log, false) }
            let log = try TopicLog(topic: topic, directory: directory + "/topics/" + topic,
                                   configuration: configuration, logger: logger)
            try FileIO.syncDirectory(directory + "/topics")
            logs[topic] = log
            logger.info("created topic", metadata: ["topic": "\(topic)"])
            return (log, true)
        }
    }

    /// Applies retention to every topic; returns how many segments were deleted.
    @discardableResult
    public func applyRetention() -> Int {
        var deleted = 0
        for log in lock.withLock({ Array(logs.values) }) {
            do {
                deleted += try log.applyRetention()
            } catch {
                logger.error("retention failed", metadata: ["topic": "\(log.topic)", "error": "\(error)"])
            }
        }
        return deleted
    }

    /// Fsyncs and closes every log.
    public func close() throws(TelexError) {
        var firstError: TelexError?
        for log in lock.withLock({ Array(logs.values) }) {
            do { try log.close() } catch { firstError = firstError ?? error }
        }
        if let firstError { throw firstError }
    }
}
