import Dispatch
import Foundation
import Logging
import NIOConcurrencyHelpers
import TelexAuth

/// One line of the audit log.
struct AuditRecord: Codable, Sendable, Equatable {
    /// What happened.
    enum Event: String, Codable, Sendable {
        case authenticationFailed = "authentication_failed"
        case authorizationRefused = "authorization_refused"
        /// A connection's refusals beyond `AuthConfiguration.auditedRefusalsPerSecond`, counted in `count`.
        case authorizationRefusalsSuppressed = "authorization_refusals_suppressed"
        case usersReloaded = "users_reloaded"
        case usersReloadFailed = "users_reload_failed"
        /// Records dropped because the log's queue was full, counted in `count`; written when the queue drains.
        case recordsDropped = "records_dropped"
        /// `telexd users add`: the principal and its permissions (never its token or hash).
        case userAdded = "user_added"
        /// `telexd users remove`: the principal and the permissions it had.
        case userRemoved = "user_removed"
        /// An ADMIN request by an admin principal: the command in `action`, what it changed in `reason`.
        case admin = "admin"
    }

    /// When, in UTC (ISO 8601 in the file).
    var time: Date
    var event: Event
    /// The peer's address, for connection events.
    var peer: String?
    /// The principal name: for a failed authentication only an existing principal's name; never a secret.
    var principal: String?
    /// The refused request: `PUBLISH`, `SUBSCRIBE`, `resume`, `COMMIT` or `ADMIN <command>`; for `admin` records
    /// the command (`info`, `topics`, `consumers`, `reset-consumer`, `delete-topic`, `purge`).
    var action: String?
    /// The topic or pattern concerned.
    var topic: String?
    /// The durable consumer name concerned.
    var consumer: String?
    /// How many records an `authorization_refusals_suppressed` or `records_dropped` record stands for.
    var count: Int?
    /// The principal's publish patterns, for `user_added` and `user_removed`.
    var publish: [String]?
    /// The principal's subscribe patterns, for `user_added` and `user_removed`.
    var subscribe: [String]?
    /// The principal's consumer names, for `user_added` and `user_removed`.
    var consumers: [String]?
    /// Whether the principal is an operator, for `user_added` and `user_removed`.
    var admin: Bool?
    /// Why, in words.
    var reason: String?
    /// For a `purge`: the key (article uri) purged.
    var key: String?
    /// For a `purge`: the offsets removed, by topic (never the records' content).
    var offsets: [String: [Int64]]?

    init(
        time: Date = Date(), event: Event, peer: String? = nil, principal: String? = nil, action: String? = nil,
        topic: String? = nil, consumer: String? = nil, count: Int? = nil, reason: String? = nil
    ) {
        self.time = time
        self.event = event
        self.peer = peer
        self.principal = principal
        self.action = action
        self.topic = topic
        self.consumer = consumer
        self.count = count
        self.reason = reason
    }
}

/// The audit log (`--audit-log FILE`): JSON Lines appended by a serial queue of its own, never on an event loop.
/// Thread-safe. Records are written in the order `record` was called; `flush()` waits for them.
///
/// At most `capacity` records wait to be written: beyond that `record` drops them and counts them, and once the
/// queue has drained one `records_dropped` record with the count is written, so a flood of events costs bounded
/// memory.
final class AuditLog: Sendable {
    /// Records queued and not yet written beyond which new ones are dropped. Default 10,000.
    let capacity: Int
    let path: String
    private let queue = DispatchQueue(label: "telex.audit-log")
    private let file: AuditFile

    /// Opens (creating with mode 0600) `path` for appending.
    init(path: String, logger: Logger, capacity: Int = 10_000) throws(AuditLogError) {
        self.path = path
        self.capacity = capacity
        file = try AuditFile(path: path, logger: logger)
    }

    /// Queues one record, or counts it as dropped when `capacity` records are already waiting; encoding and writing
    /// happen on the log's queue.
    func record(_ record: AuditRecord) {
        let queued = file.backlog.withLockedValue { backlog -> Bool in
            guard backlog.queued < capacity else {
                backlog.dropped += 1
                return false
            }
            backlog.queued += 1
            return true
        }
        guard queued else { return }
        queue.async { [file] in
            file.writeLogging(record)
            let dropped = file.backlog.withLockedValue { backlog -> Int in
                backlog.queued -= 1
                guard backlog.queued == 0 else { return 0 }
                defer { backlog.dropped = 0 }
                return backlog.dropped
            }
            guard dropped > 0 else { return }
            file.writeLogging(AuditRecord(
                event: .recordsDropped, count: dropped,
                reason: "the audit log's queue was full (\(file.path) is written too slowly for the events)"))
        }
    }

    /// Writes `record` on the caller's thread, after every record queued before; throws if it was not written.
    func append(_ record: AuditRecord) throws(AuditLogError) {
        let written = queue.sync { [file] in Result { () throws(AuditLogError) in try file.write(record) } }
        try written.get()
    }

    /// Waits until every record queued so far is written.
    func flush() {
        queue.sync {}
    }
}

/// The audit log's file and its count of queued and dropped records; closed when the last write that holds it is done.
private final class AuditFile: Sendable {
    struct Backlog {
        var queued = 0
        var dropped = 0
    }

    let descriptor: Int32
    let path: String
    let logger: Logger
    let backlog = NIOLockedValueBox(Backlog())

    init(path: String, logger: Logger) throws(AuditLogError) {
        descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw AuditLogError(message: "cannot open audit log \(path): \(String(cString: strerror(errno)))")
        }
        self.path = path
        self.logger = logger
    }

    deinit {
        close(descriptor)
    }

    /// Appends one JSON line.
    func write(_ record: AuditRecord) throws(AuditLogError) {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let line: [UInt8]
        do {
            line = Array(try encoder.encode(record)) + [UInt8(ascii: "\n")]
        } catch {
            throw AuditLogError(message: "audit record could not be encoded: \(error)")
        }
        let written = line.withUnsafeBytes { Foundation.write(descriptor, $0.baseAddress, $0.count) }
        guard written == line.count else {
            throw AuditLogError(message: "writing audit log \(path) failed: \(String(cString: strerror(errno)))")
        }
    }

    /// Appends one JSON line; a failure is logged.
    func writeLogging(_ record: AuditRecord) {
        do {
            try write(record)
        } catch {
            logger.error("audit record not written", metadata: ["path": "\(path)", "error": "\(error.message)"])
        }
    }
}

/// The audit log file could not be opened or written.
public struct AuditLogError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// Limits how many authorization refusals of one connection go to the log and the audit log: at most `limit` in
/// any one second; the rest are counted and reported together, in one `authorization_refusals_suppressed` record,
/// at the connection's next refusal after that second or when it closes. A value confined to the connection.
struct RefusalAuditThrottle {
    /// Refusals recorded one by one per second.
    let limit: Int
    private var windowStart: ContinuousClock.Instant?
    private var recordedInWindow = 0
    private var suppressed = 0

    init(limit: Int) {
        self.limit = limit
    }

    /// Whether the refusal at `now` is recorded, and how many earlier ones went unrecorded and are to be reported
    /// now (nonzero only once their second is over).
    mutating func admit(at now: ContinuousClock.Instant) -> (record: Bool, suppressedBefore: Int) {
        var report = 0
        if windowStart.map({ now - $0 >= .seconds(1) }) ?? true {
            windowStart = now
            recordedInWindow = 0
            report = takeSuppressed()
        }
        guard recordedInWindow < limit else {
            suppressed += 1
            return (false, report)
        }
        recordedInWindow += 1
        return (true, report)
    }

    /// The refusals not recorded and not yet reported; counting starts again from zero.
    mutating func takeSuppressed() -> Int {
        defer { suppressed = 0 }
        return suppressed
    }
}

/// Audit records of the administrative commands (`telexd users add|remove --audit-log FILE`), appended to the same
/// JSON Lines file the broker writes. Never records a token or a secret's hash.
public struct UsersAuditLog: Sendable {
    private let log: AuditLog

    /// Opens (creating with mode 0600) the audit log at `path` for appending.
    public init(path: String) throws(AuditLogError) {
        log = try AuditLog(path: path, logger: Logger(label: "telex.audit", factory: { _ in SwiftLogNoOpLogHandler() }))
    }

    /// Records that principal `name` was added with `permissions`; throws if the record was not written.
    public func userAdded(_ name: String, permissions: Permissions, admin: Bool) throws(AuditLogError) {
        try log.append(Self.record(.userAdded, name, permissions: permissions, admin: admin))
    }

    /// Records that `principal` was removed, with the permissions it had; throws if the record was not written.
    public func userRemoved(_ principal: Principal) throws(AuditLogError) {
        try log.append(
            Self.record(.userRemoved, principal.name, permissions: principal.permissions, admin: principal.admin))
    }

    private static func record(
        _ event: AuditRecord.Event, _ name: String, permissions: Permissions, admin: Bool
    ) -> AuditRecord {
        var record = AuditRecord(event: event, principal: name, reason: "telexd users, uid \(getuid())")
        record.publish = permissions.publish
        record.subscribe = permissions.subscribe
        record.consumers = permissions.consumers
        record.admin = admin
        return record
    }
}
