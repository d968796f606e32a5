/// Authentication and authorization settings of the broker (`ServerConfiguration.auth`).
public struct AuthConfiguration: Sendable {
    /// Users file with the principals and their permissions (JSON, schema in the README); reloaded by
    /// `TelexServer.reload()`. Default nil: no principals (only `authToken`, if set, is checked).
    public var usersFile: String?
    /// Audit log file, JSON Lines, appended to (created with mode 0600). Default nil: no audit log.
    public var auditLogFile: String?
    /// Delay of the answer to a peer's second consecutive failed HELLO; doubles with each further one. Default 250 ms.
    public var failureDelay: Duration
    /// Largest delay of an AUTHENTICATION_FAILED answer. Default 5 s.
    public var maxFailureDelay: Duration
    /// Authorization refusals of one connection logged and audited one by one per second; beyond it they are counted
    /// and reported in one `authorization_refusals_suppressed` record. Default 10.
    public var auditedRefusalsPerSecond: Int

    public init(
        usersFile: String? = nil, auditLogFile: String? = nil, failureDelay: Duration = .milliseconds(250),
        maxFailureDelay: Duration = .seconds(5), auditedRefusalsPerSecond: Int = 10
    ) {
        self.usersFile = usersFile
        self.auditLogFile = auditLogFile
        self.failureDelay = failureDelay
        self.maxFailureDelay = maxFailureDelay
        self.auditedRefusalsPerSecond = auditedRefusalsPerSecond
    }
}
