import ArgumentParser
import Foundation
import TelexAuth
import TelexServer

/// `telexd users add|list|remove`: edit a users file offline; a running broker picks changes up on SIGHUP.
struct Users: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage the principals of a users file.",
        discussion: """
            Examples:
              telexd users add sports-desk --file users.json --publish 'news.sport.>' --subscribe 'news.>' > sports.token
              telexd users add push-alerts --file users.json --subscribe 'news.>' --consumers 'push-*'
              telexd users list --file users.json
              telexd users remove sports-desk --file users.json --audit-log /var/log/telex/audit.jsonl
              kill -HUP $(pidof telexd)    # the broker reloads the file
            """,
        subcommands: [Add.self, List.self, Remove.self])

    struct FileOption: ParsableArguments {
        @Option(help: "The users file. Env TELEX_USERS.")
        var file: String?

        var path: String {
            get throws {
                guard let path = file ?? ProcessInfo.processInfo.environment["TELEX_USERS"] else {
                    throw ValidationError("name the users file with --file FILE (or TELEX_USERS)")
                }
                return path
            }
        }
    }

    struct AuditOption: ParsableArguments {
        @Option(
            name: .customLong("audit-log"),
            help: "Append a user_added/user_removed record (name and permissions, never the token) to this audit log. Env TELEX_AUDIT_LOG. Default: none.")
        var auditLogFile: String?

        /// The audit log, opened before the users file is changed (so an unwritable log changes nothing); nil if none.
        func open() throws -> UsersAuditLog? {
            guard let path = auditLogFile ?? ProcessInfo.processInfo.environment["TELEX_AUDIT_LOG"] else { return nil }
            do {
                return try UsersAuditLog(path: path)
            } catch {
                FileHandle.standardError.write(
                    Data("telexd users: \(error.message); the users file was not changed\n".utf8))
                throw ExitCode(1)
            }
        }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a principal and print its new token (NAME.SECRET) once; only its hash is stored.",
            discussion: "Creates the file (mode 0600) if it does not exist. The token is printed on stdout and nowhere else.")

        @Argument(help: "The principal's name (A-Z a-z 0-9 _ - . @); under mutual TLS, its certificate's CN.")
        var name: String
        @OptionGroup var file: FileOption
        @Option(parsing: .upToNextOption, help: "Topic patterns it may publish to.")
        var publish: [String] = []
        @Option(parsing: .upToNextOption, help: "Patterns it may subscribe to (a SUBSCRIBE must be covered by one).")
        var subscribe: [String] = []
        @Option(parsing: .upToNextOption, help: "Durable consumer names it may use: exact, or a prefix ending in '*'.")
        var consumers: [String] = []
        @Flag(help: "Mark the principal as an operator.")
        var admin = false
        @OptionGroup var audit: AuditOption

        func run() throws {
            let auditLog = try audit.open()
            let token = try usersCommand {
                try UsersAdministration.add(
                    file: try file.path, name: name, publish: publish, subscribe: subscribe, consumers: consumers,
                    admin: admin)
            }
            print(token)
            try auditCommand {
                let permissions = Permissions(publish: publish, subscribe: subscribe, consumers: consumers)
                try auditLog?.userAdded(name, permissions: permissions, admin: admin)
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List principals and their permissions (never hashes).")
        @OptionGroup var file: FileOption

        func run() throws {
            for line in try usersCommand({ try UsersAdministration.list(file: try file.path) }) { print(line) }
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a principal.")
        @Argument(help: "The principal's name.")
        var name: String
        @OptionGroup var file: FileOption
        @OptionGroup var audit: AuditOption

        func run() throws {
            let auditLog = try audit.open()
            let removed = try usersCommand { try UsersAdministration.remove(file: try file.path, name: name) }
            try auditCommand { try auditLog?.userRemoved(removed) }
        }
    }
}

/// Writes an audit record of a change already made; a failure goes to stderr as one line and the exit status is 1.
private func auditCommand(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch {
        FileHandle.standardError.write(Data("telexd users: the change was made, but \(error)\n".utf8))
        throw ExitCode(1)
    }
}

/// Runs a users-file operation; its error goes to stderr as one line and the exit status is 1.
private func usersCommand<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as UsersFileError {
        FileHandle.standardError.write(Data("telexd users: \(error.message)\n".utf8))
        throw ExitCode(1)
    }
}
