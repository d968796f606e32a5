import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The users file (`telexd --users FILE`): JSON `{"version": 1, "principals": [...]}`, schema in the README.
public struct UsersFile: Codable, Sendable, Equatable {
    /// Schema version; 1.
    public var version: Int
    /// The principals, unique by name.
    public var principals: [Principal]

    public init(principals: [Principal] = []) {
        version = 1
        self.principals = principals
    }

    /// Parses and validates a users file's bytes; `path` is only used in error messages.
    public static func decode(_ data: Data, path: String) throws(UsersFileError) -> UsersFile {
        let file: UsersFile
        do {
            file = try JSONDecoder().decode(UsersFile.self, from: data)
        } catch {
            throw UsersFileError("users file \(path) is not valid: \(Self.describe(error))")
        }
        guard file.version == 1 else {
            throw UsersFileError("users file \(path) has version \(file.version); this telexd reads version 1")
        }
        var seen = Set<String>()
        for principal in file.principals {
            do {
                try principal.validate()
            } catch {
                throw UsersFileError("users file \(path): \(error.message)")
            }
            guard seen.insert(principal.name).inserted else {
                throw UsersFileError("users file \(path): principal '\(principal.name)' appears twice")
            }
        }
        return file
    }

    /// Reads and validates the users file at `path`.
    public static func load(path: String) throws(UsersFileError) -> UsersFile {
        guard FileManager.default.fileExists(atPath: path) else {
            throw UsersFileError("users file \(path) does not exist (create it with 'telexd users add NAME --file \(path) ...')")
        }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw UsersFileError("users file \(path) cannot be read: \(error.localizedDescription)")
        }
        return try decode(data, path: path)
    }

    /// Writes the file atomically (a temporary file in the same directory, fsynced, then renamed over `path`),
    /// readable and writable by the owner only (mode 0600).
    public func write(to path: String) throws(UsersFileError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let bytes: [UInt8]
        do {
            bytes = Array(try encoder.encode(self)) + Array("\n".utf8)
        } catch {
            throw UsersFileError("users file \(path) could not be encoded: \(error)")
        }
        let temporary = "\(path).tmp-\(getpid())"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw Self.systemError("creating \(temporary)") }
        var written = 0
        while written < bytes.count {
            let count = bytes[written...].withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else {
                let error = Self.systemError("writing \(temporary)")
                close(descriptor)
                unlink(temporary)
                throw error
            }
            written += count
        }
        guard fchmod(descriptor, 0o600) == 0, fsync(descriptor) == 0 else {
            let error = Self.systemError("syncing \(temporary)")
            close(descriptor)
            unlink(temporary)
            throw error
        }
        close(descriptor)
        guard rename(temporary, path) == 0 else {
            let error = Self.systemError("renaming \(temporary) to \(path)")
            unlink(temporary)
            throw error
        }
        let directory = open(URL(fileURLWithPath: path).deletingLastPathComponent().path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directory >= 0 {
            _ = fsync(directory)
            close(directory)
        }
    }

    /// Adds a principal with a new random secret and returns its token `NAME.SECRET` (the only copy of the secret).
    public mutating func add(
        name: String, publish: [String], subscribe: [String], consumers: [String], admin: Bool
    ) throws(UsersFileError) -> String {
        guard !principals.contains(where: { $0.name == name }) else {
            throw UsersFileError("principal '\(name)' already exists; remove it first to give it a new token")
        }
        let secret = Secrets.makeSecret()
        let principal = Principal(
            name: name, secretSHA256: Secrets.hashHex(secret), publish: publish, subscribe: subscribe,
            consumers: consumers, admin: admin)
        try principal.validate()
        principals.append(principal)
        return "\(name).\(secret)"
    }

    /// Removes the principal named `name`.
    public mutating func remove(name: String) throws(UsersFileError) {
        guard let index = principals.firstIndex(where: { $0.name == name }) else {
            throw UsersFileError("no principal named '\(name)'")
        }
        principals.remove(at: index)
    }

    /// One line per principal: name and permissions, never the hash.
    public var listing: [String] {
        principals.map { principal in
            func list(_ values: [String]) -> String { values.isEmpty ? "-" : values.joined(separator: ",") }
            return "\(principal.name)\tpublish=\(list(principal.publish))\tsubscribe=\(list(principal.subscribe))"
                + "\tconsumers=\(list(principal.consumers))\tadmin=\(principal.admin)"
                + (principal.secretSHA256 == nil ? "\ttoken=none" : "")
        }
    }

    private static func systemError(_ doing: String) -> UsersFileError {
        UsersFileError("\(doing) failed: \(String(cString: strerror(errno)))")
    }

    private static func describe(_ error: any Error) -> String {
        switch error as? DecodingError {
        case .keyNotFound(let key, let context)?:
            "missing '\(key.stringValue)' at \(path(context.codingPath))"
        case .typeMismatch(_, let context)?, .valueNotFound(_, let context)?:
            "\(context.debugDescription) at \(path(context.codingPath))"
        case .dataCorrupted(let context)?:
            context.debugDescription
        default:
            "\(error)"
        }
    }

    private static func path(_ keys: [any CodingKey]) -> String {
        keys.isEmpty ? "the top level" : keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
    }
}

/// `telexd users add|list|remove` as functions over a users file path.
public enum UsersAdministration {
    /// Adds a principal (creating the file if it does not exist) and returns its token.
    public static func add(
        file path: String, name: String, publish: [String], subscribe: [String], consumers: [String] = [],
        admin: Bool = false
    ) throws(UsersFileError) -> String {
        var file = FileManager.default.fileExists(atPath: path) ? try UsersFile.load(path: path) : UsersFile()
        let token = try file.add(name: name, publish: publish, subscribe: subscribe, consumers: consumers, admin: admin)
        try file.write(to: path)
        return token
    }

    /// The listing of the file at `path` (names and permissions, never hashes).
    public static func list(file path: String) throws(UsersFileError) -> [String] {
        try UsersFile.load(path: path).listing
    }

    /// Removes the principal `name` from the file at `path`.
    public static func remove(file path: String, name: String) throws(UsersFileError) {
        var file = try UsersFile.load(path: path)
        try file.remove(name: name)
        try file.write(to: path)
    }
}
