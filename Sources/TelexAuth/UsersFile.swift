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

    /// Writes the file atomically: a new temporary file in the same directory (random name, created exclusively,
    /// never through a symbolic link), fsynced, renamed over `path`, and the directory fsynced. Replacing a file
    /// keeps its owner and mode (changing the owner back needs the right to: run as the owner or root); a new
    /// file is readable and writable by its owner only (0600).
    public func write(to path: String) throws(UsersFileError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let bytes: [UInt8]
        do {
            bytes = Array(try encoder.encode(self)) + Array("\n".utf8)
        } catch {
            throw UsersFileError("users file \(path) could not be encoded: \(error)")
        }
        var existing = stat()
        let replacing = stat(path, &existing) == 0
        let temporary = "\(path).tmp-\(Secrets.makeSecret().prefix(16))"
        let descriptor = try Self.createExclusively(temporary)
        do throws(UsersFileError) {
            try Self.write(bytes, to: descriptor, path: temporary)
            try Self.setOwnerAndMode(of: descriptor, temporary: temporary, like: replacing ? existing : nil, path: path)
            guard fsync(descriptor) == 0 else { throw Self.systemError("syncing \(temporary)") }
        } catch {
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

    /// Creates `path` for writing, mode 0600; fails if anything (a file, or a symbolic link) is already there.
    static func createExclusively(_ path: String) throws(UsersFileError) -> Int32 {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw systemError("creating \(path)") }
        return descriptor
    }

    private static func write(_ bytes: [UInt8], to descriptor: Int32, path: String) throws(UsersFileError) {
        var written = 0
        while written < bytes.count {
            let count = bytes[written...].withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { throw systemError("writing \(path)") }
            written += count
        }
    }

    /// Gives the new file `existing`'s owner, group and permission bits, or mode 0600 when there is none.
    private static func setOwnerAndMode(
        of descriptor: Int32, temporary: String, like existing: stat?, path: String
    ) throws(UsersFileError) {
        guard let existing else {
            guard fchmod(descriptor, 0o600) == 0 else { throw systemError("setting the mode of \(temporary)") }
            return
        }
        var created = stat()
        guard fstat(descriptor, &created) == 0 else { throw systemError("reading the owner of \(temporary)") }
        if created.st_uid != existing.st_uid || created.st_gid != existing.st_gid {
            guard fchown(descriptor, existing.st_uid, existing.st_gid) == 0 else {
                throw UsersFileError(
                    "cannot keep the owner (uid \(existing.st_uid), gid \(existing.st_gid)) of \(path): "
                        + "\(String(cString: strerror(errno))); run as that user or as root")
            }
        }
        guard fchmod(descriptor, existing.st_mode & 0o777) == 0 else {
            throw systemError("setting the mode of \(temporary)")
        }
    }

    /// Runs `body` holding an exclusive `flock` on `PATH.lock` (created beside the users file, mode 0600, never
    /// through a symbolic link, and left in place), so that concurrent read-modify-writes of the file do not lose
    /// each other's changes.
    static func withLock<T>(on path: String, _ body: () throws(UsersFileError) -> T) throws(UsersFileError) -> T {
        let lockPath = path + ".lock"
        let descriptor = open(lockPath, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw systemError("opening the lock file \(lockPath)") }
        defer { close(descriptor) }
        while flock(descriptor, LOCK_EX) != 0 {
            guard errno == EINTR else { throw systemError("locking \(lockPath)") }
        }
        return try body()
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

    /// Removes the principal named `name` and returns it.
    @discardableResult
    public mutating func remove(name: String) throws(UsersFileError) -> Principal {
        guard let index = principals.firstIndex(where: { $0.name == name }) else {
            throw UsersFileError("no principal named '\(name)'")
        }
        return principals.remove(at: index)
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
    /// Adds a principal (creating the file if it does not exist) and returns its token. Holds the file's lock
    /// (`PATH.lock`) from reading to writing.
    public static func add(
        file path: String, name: String, publish: [String], subscribe: [String], consumers: [String] = [],
        admin: Bool = false
    ) throws(UsersFileError) -> String {
        try UsersFile.withLock(on: path) { () throws(UsersFileError) -> String in
            var file = FileManager.default.fileExists(atPath: path) ? try UsersFile.load(path: path) : UsersFile()
            let token = try file.add(
                name: name, publish: publish, subscribe: subscribe, consumers: consumers, admin: admin)
            try file.write(to: path)
            return token
        }
    }

    /// The listing of the file at `path` (names and permissions, never hashes).
    public static func list(file path: String) throws(UsersFileError) -> [String] {
        try UsersFile.load(path: path).listing
    }

    /// Removes the principal `name` from the file at `path` and returns what it was. Holds the file's lock
    /// (`PATH.lock`) from reading to writing.
    @discardableResult
    public static func remove(file path: String, name: String) throws(UsersFileError) -> Principal {
        try UsersFile.withLock(on: path) { () throws(UsersFileError) -> Principal in
            var file = try UsersFile.load(path: path)
            let removed = try file.remove(name: name)
            try file.write(to: path)
            return removed
        }
    }
}
