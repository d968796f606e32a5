import Logging
import Synchronization
import TelexProtocol

/// Every topic log in a data directory, plus the consumer offsets. Layout: Protocol/STORAGE.md.
///
/// `DATA/topics/<topic>/<base offset>.log|.index|.timeindex` and `DATA/consumers/<name>.offsets`.
///
/// Thread-safe. `log(_:)` and `topics` only take a short lock and never wait for file I/O, so event loops may
/// call them. `init`, `createLog`, `applyRetention` and `close` block on file I/O: call them off event loops.
///
/// All topics share one `FileDescriptorCache` of `configuration.maxOpenFiles` descriptors, so the number of
/// topics does not bound the number of open files (Protocol/STORAGE.md §11).
public final class TopicStore: Sendable {
    public let directory: String
    public let configuration: LogConfiguration
    public let consumerOffsets: ConsumerOffsets
    /// The metric handles every log and the broker's connections record into.
    public let metrics: TelexMetrics
    private let logger: Logger
    /// The open segment and index files of every topic.
    let files: FileDescriptorCache
    /// The open logs, by topic. Held only to look up or insert, never across file I/O.
    private let logs: Mutex<[String: TopicLog]>
    /// Serialises creators, so two never create the same topic; held across the creation's file I/O, and only
    /// creators wait on it.
    private let creation = Mutex(false)
    /// Called while holding `creation`, before a new topic's files are made; lets tests slow creation down.
    private let willCreateLog: @Sendable (String) -> Void
    /// The object-storage tier every log reads below its local segments, nil without one.
    public let archive: (any ArchiveTier)?
    /// Keeps other brokers out of the directory until `close()`.
    private let lock: DataDirectoryLock

    /// Opens the data directory (creating it if missing) and recovers every topic in it. Throws if another
    /// store, in this process or another, has it open (`DATA/.lock` names the holder's pid), and refuses a
    /// directory of a newer storage format than this code reads (`StorageFormat`).
    ///
    /// Blocking: recovery reads, checks and fsyncs every topic's files. Call it off event loops (for example on
    /// an `NIOThreadPool`).
    ///
    /// With an `archive`, every log reads offsets below its oldest local segment from it, and retention deletes
    /// only local segments it holds (Protocol/STORAGE.md §4.1, §7).
    public convenience init(
        directory: String, configuration: LogConfiguration = .init(), logger: Logger,
        metrics: TelexMetrics = .disabled, archive: (any ArchiveTier)? = nil
    ) throws(TelexError) {
        try self.init(directory: directory, configuration: configuration, logger: logger, metrics: metrics,
                      archive: archive, willCreateLog: { _ in })
    }

    init(
        directory: String, configuration: LogConfiguration, logger: Logger, metrics: TelexMetrics = .disabled,
        archive: (any ArchiveTier)? = nil, willCreateLog: @escaping @Sendable (String) -> Void
    ) throws(TelexError) {
        self.archive = archive
        try FileIO.makeDirectory(directory)
        lock = try DataDirectoryLock(directory: directory)
        self.directory = directory
        self.metrics = metrics
        self.configuration = configuration
        self.logger = logger
        self.willCreateLog = willCreateLog
        let files = FileDescriptorCache(budget: configuration.maxOpenFiles)
        self.files = files
        try StorageFormat.prepare(directory)
        try FileIO.makeDirectory(directory + "/topics")
        consumerOffsets = try ConsumerOffsets(directory: directory + "/consumers")
        var logs: [String: TopicLog] = [:]
        for name in try FileIO.listDirectory(directory + "/topics") where FileIO.isDirectory(directory + "/topics/" + name) {
            do {
                try TopicName.validate(name)
            } catch {
                logger.warning("ignoring directory that is not a topic name", metadata: ["directory": "\(name)"])
                continue
            }
            logs[name] = try TopicLog(topic: name, directory: directory + "/topics/" + name,
                                      configuration: configuration, logger: logger, files: files, metrics: metrics,
                                      archive: archive)
        }
        self.logs = Mutex(logs)
    }

    /// Every topic, sorted.
    public var topics: [String] { logs.withLock { $0.keys.sorted() } }

    /// The log of `topic`, if it exists. Never waits for file I/O, even while another topic is being created.
    public func log(_ topic: String) -> TopicLog? {
        logs.withLock { $0[topic] }
    }

    /// The log of `topic`, created if missing; `created` tells whether this call made it.
    ///
    /// Blocking when it creates: a directory, three files and two directory fsyncs. Call it off event loops.
    /// Lookups (`log(_:)`) of other topics do not wait for it; other creators do.
    public func createLog(_ topic: String) throws(TelexError) -> (log: TopicLog, created: Bool) {
        try TopicName.validate(topic)
        if let log = log(topic) { return (log, false) }
        return try creation.withLock { closed throws(TelexError) -> (log: TopicLog, created: Bool) in
            if let log = log(topic) { return (log, false) }
            guard !closed else {
                throw TelexError(.shuttingDown, "topic '\(topic)' was not created: the store is closing", topic: topic)
            }
            willCreateLog(topic)
            let log = try TopicLog(topic: topic, directory: directory + "/topics/" + topic,
                                   configuration: configuration, logger: logger, files: files, metrics: metrics,
                                   archive: archive)
            try FileIO.syncDirectory(directory + "/topics")
            logs.withLock { $0[topic] = log }
            logger.info("created topic", metadata: ["topic": "\(topic)"])
            return (log, true)
        }
    }

    /// Deletes `topic`: unregisters its log (later lookups do not find it), closes it, removes its directory and
    /// every consumer's position in it. Returns false if there was no such topic. Blocking: call it off event loops.
    ///
    /// Serialised with topic creation, so the topic cannot be created again halfway through. Readers that still
    /// hold the log may finish reads they started; appends to it fail (the log is closed).
    @discardableResult
    public func deleteLog(_ topic: String) throws(TelexError) -> Bool {
        try creation.withLock { _ throws(TelexError) -> Bool in
            guard let log = logs.withLock({ $0.removeValue(forKey: topic) }) else { return false }
            do {
                try log.close()
            } catch {
                logger.warning("closing a deleted topic failed; removing it anyway", metadata: [
                    "topic": "\(topic)", "error": "\(error)",
                ])
            }
            for name in try FileIO.listDirectory(log.directory) {
                let path = log.directory + "/" + name
                // Copies of damaged bytes sit in a directory of their own (Protocol/STORAGE.md §6.2).
                if FileIO.isDirectory(path) {
                    for copy in try FileIO.listDirectory(path) { try FileIO.remove(path + "/" + copy) }
                    try FileIO.removeDirectory(path)
                } else {
                    try FileIO.remove(path)
                }
            }
            try FileIO.removeDirectory(log.directory)
            try FileIO.syncDirectory(directory + "/topics")
            try consumerOffsets.removeTopic(topic)
            archive?.topicDeleted(topic)
            logger.info("deleted topic", metadata: ["topic": "\(topic)"])
            return true
        }
    }

    /// Bytes of every file under the data directory. Blocking: call it off event loops.
    public func dataBytes() -> Int64 {
        FileIO.treeSize(directory)
    }

    /// Applies retention to every topic; returns how many segments were deleted. Blocking: call it off event loops.
    @discardableResult
    public func applyRetention() -> Int {
        var deleted = 0
        for log in logs.withLock({ Array($0.values) }) {
            do {
                deleted += try log.applyRetention()
            } catch {
                logger.error("retention failed", metadata: ["topic": "\(log.topic)", "error": "\(error)"])
            }
        }
        return deleted
    }

    /// Fsyncs and closes every log, then releases the data directory. Blocking: call it off event loops.
    /// Topic creation stops first (a creation in progress finishes and is closed too).
    public func close() throws(TelexError) {
        creation.withLock { $0 = true }
        var firstError: TelexError?
        for log in logs.withLock({ Array($0.values) }) {
            do { try log.close() } catch { firstError = firstError ?? error }
        }
        lock.release()
        if let firstError { throw firstError }
    }
}
