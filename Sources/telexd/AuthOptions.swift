import ArgumentParser
import Dispatch
import Foundation
import Logging
import TelexServer

/// `--users` and `--audit-log`: the principals telexd authenticates and where it records security events.
struct AuthOptions: ParsableArguments {
    @Option(name: .customLong("users"), help: "Users file with principals and permissions (see README). Env TELEX_USERS. Reloaded on SIGHUP. Default: none.")
    var usersFile: String?
    @Option(name: .customLong("audit-log"), help: "Append security events as JSON Lines to this file. Env TELEX_AUDIT_LOG. Default: none.")
    var auditLogFile: String?

    /// Puts the options (or their TELEX_* variables) into `configuration`.
    func apply(to configuration: inout ServerConfiguration) {
        let environment = ProcessInfo.processInfo.environment
        configuration.auth.usersFile = usersFile ?? environment["TELEX_USERS"]
        configuration.auth.auditLogFile = auditLogFile ?? environment["TELEX_AUDIT_LOG"]
    }
}

