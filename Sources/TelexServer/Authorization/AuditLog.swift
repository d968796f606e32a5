import Dispatch
import Foundation
import Logging

/// One line of the audit log.
struct AuditRecord: Codable, Sendable, Equatable {
    /// What happened.
    enum Event: String, Codable, Sendable {
        case authenticationFailed = "authentication_failed"
        case authorizationRefused = "authorization_refused"
        case usersReloaded = "users_reloaded"
        case usersReloadFailed = "users_reload_failed"
    }

    /// When, in UTC (ISO 8601 in the file).
    var time: Date
    var event: Event
    /// The peer's address, for connection events.
    var peer: String?
    /// The principal name (claimed, for a failed authentication); never a secret.
    var principal: String?
    /// The refused request: `PUBLISH`, `SUBSCRIBE`, `resume` or `COMMIT`.
    var action: String?
    /// The topic or pattern concerned.
    var topic: String?
    /// The durable consumer name concerned.
    var consumer: String?
    /// Why, in words.
    var reason: String?

    init(
        time: Date = Date(), event: Event, peer: String? = nil, principal: String? = nil, action: String? = nil,
        topic: String? = nil, consumer: String? = nil, reason: String? = nil
    ) {
        self.time = time
        self.event = event
        self.peer = peer
        self.principal = principal
        self.action = action
        self.topic = topic
        self.consumer = consumer
        self.reason = reason
    }
}

/// The audit log (`--audit-log FILE`): JSON Lines appended by a serial queue of its own, never on an event loop.
/// Thread-safe. Records are written in the order `record` was called; `flush()` waits for them.
final class AuditLog: Sendable {
    private let descriptor: Int32
    private let queue = DispatchQueue(label: "telex.audit-log")
    private let logger: Logger
    let path: String

    /// Opens (creating with mode 0600) `path` for appending.
    init(path: String, logger: Logger) throws {
        descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw AuditLogError(message: "cannot open audit log \(path): \(String(cString: strerror(errno)))")
        }
        self.path = path
        self.logger = logger
    }

    deinit {
        queue.sync {}
        close(descriptor)
    }

    /// Queues one record; encoding and writing happen on the log's queue.
    func record(_ record: AuditRecord) {
        queue.async { [descriptor, logger, path] in
            let encoder = JSONEncoder()
            encoder.dateEncodingStrategy = .iso8601
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            do {
                let line = Array(try encoder.encode(record)) + [UInt8(ascii: "\n")]
                let written = line.withUnsafeBytes { Foundation.write(descriptor, $0.baseAddress, $0.count) }
                if written != line.count {
                    logger.error("audit log write failed", metadata: ["path": "\(path)", "error": "\(String(cString: strerror(errno)))"])
                }
            } catch {
                logger.error("audit record could not be encoded", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Waits until every record queued so far is written.
    func flush() {
        queue.sync {}
    }
}

/// The audit log file could not be opened.
struct AuditLogError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}
