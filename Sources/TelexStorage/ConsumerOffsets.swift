#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import Synchronization
import TelexProtocol

/// Committed positions of named durable consumers: for each consumer, per topic, the next offset to read.
///
/// Each consumer is one small file, replaced atomically (write, fsync, rename, fsync directory) on every
/// commit, so a crash leaves either the old or the new positions, never a mix or a torn file.
///
/// Thread-safe. `committed` never waits for file I/O; `commit` blocks until its file is on disk (call it off
/// event loops), and commits are serialised among themselves.
public final class ConsumerOffsets: Sendable {
    public let directory: String
    /// The committed positions, consumer → topic → next offset. Held only to read or update, never across I/O.
    private let positions: Mutex<[String: [String: Int64]]>
    /// Serialises commits, so files are written in the order their positions are published; held across I/O.
    private let commits = Mutex(())

    /// Longest consumer name, in bytes.
    public static let maxNameLength = 128

    /// Opens (creating if missing) the directory of offset files and loads them. Blocking.
    public init(directory: String) throws(TelexError) {
        self.directory = directory
        try FileIO.makeDirectory(directory)
        var positions: [String: [String: Int64]] = [:]
        for name in try FileIO.listDirectory(directory) where name.hasSuffix(".offsets") {
            let consumer = String(name.dropLast(".offsets".count))
            positions[consumer] = try Self.load(directory + "/" + name)
        }
        self.positions = Mutex(positions)
    }

    /// Checks a consumer name: 1-128 bytes of `[A-Za-z0-9_.-]`, not starting with a dot.
    public static func validateName(_ name: String) throws(TelexError) {
        guard !name.isEmpty, name.utf8.count <= maxNameLength, !name.hasPrefix(".") else {
            throw TelexError(.invalidRequest, "consumer name '\(name.prefix(40))' must be 1-\(maxNameLength) bytes and not start with '.'")
        }
        for scalar in name.unicodeScalars {
            let ok = (scalar >= "a" && scalar <= "z") || (scalar >= "A" && scalar <= "Z") || (scalar >= "0" && scalar <= "9")
                || scalar == "_" || scalar == "-" || scalar == "."
            guard ok else {
                throw TelexError(.invalidRequest, "consumer name '\(name)': character '\(scalar)' is not allowed (use A-Z a-z 0-9 _ - .)")
            }
        }
    }

    /// The committed next-offset per topic for `consumer` (empty if it never committed).
    public func committed(_ consumer: String) -> [String: Int64] {
        positions.withLock { $0[consumer] ?? [:] }
    }

    /// Every consumer's committed next-offsets, consumer → topic → offset.
    public var allCommitted: [String: [String: Int64]] {
        positions.withLock { $0 }
    }

    /// Durably records that `consumer` will next read `offset` in `topic`. Returns once it is on disk.
    public func commit(_ consumer: String, topic: String, offset: Int64) throws(TelexError) {
        try Self.validateName(consumer)
        // A tab or newline in the topic would make the file unloadable, and with it the whole data directory.
        try TopicName.validate(topic)
        try commits.withLock { _ throws(TelexError) in
            var entries = committed(consumer)
            entries[topic] = offset
            var text = ByteBuffer()
            for (topic, offset) in entries.sorted(by: { $0.key < $1.key }) {
                text.writeString("\(topic)\t\(offset)\n")
            }
            let path = directory + "/" + consumer + ".offsets"
            let temporary = path + ".tmp"
            let fd = try FileIO.open(temporary, flags: O_WRONLY | O_CREAT | O_TRUNC)
            do throws(TelexError) {
                try FileIO.write(fd, parts: [text], at: 0, path: temporary)
                try FileIO.sync(fd, path: temporary)
                close(fd)
            } catch {
                close(fd)
                throw error
            }
            try FileIO.rename(temporary, path)
            try FileIO.syncDirectory(directory)
            positions.withLock { $0[consumer] = entries }
        }
    }

    private static func load(_ path: String) throws(TelexError) -> [String: Int64] {
        let fd = try FileIO.open(path, flags: O_RDONLY)
        defer { close(fd) }
        var buffer = ByteBuffer()
        _ = try FileIO.read(fd, at: 0, length: try FileIO.size(fd, path: path), into: &buffer, path: path)
        var entries: [String: Int64] = [:]
        for (number, line) in String(buffer: buffer).split(separator: "\n").enumerated() {
            let fields = line.split(separator: "\t")
            guard fields.count == 2, let offset = Int64(fields[1]) else {
                throw TelexError(.storageFailure, "\(path) line \(number + 1): expected 'topic<TAB>offset', got '\(line.prefix(80))'")
            }
            entries[String(fields[0])] = offset
        }
        return entries
    }
}
