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
    /// The committed positions, consumer → topic → position. Held only to read or update, never across I/O.
    private let positions: Mutex<[String: [String: Position]]>
    /// Serialises commits, so files are written in the order their positions are published; held across I/O.
    private let commits = Mutex(())

    /// Longest consumer name, in bytes.
    public static let maxNameLength = 128

    /// One committed position: the next offset to read, and when it was committed.
    public struct Position: Sendable, Equatable {
        public var offset: Int64
        /// Milliseconds since the epoch; 0 when the file did not record it (written by an older broker).
        public var commitTime: Int64

        public init(offset: Int64, commitTime: Int64) {
            self.offset = offset
            self.commitTime = commitTime
        }
    }

    /// Opens (creating if missing) the directory of offset files and loads them. Blocking.
    public init(directory: String) throws(TelexError) {
        self.directory = directory
        try FileIO.makeDirectory(directory)
        var positions: [String: [String: Position]] = [:]
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
        positions.withLock { $0[consumer]?.mapValues(\.offset) ?? [:] }
    }

    /// Every consumer's positions with their commit times, consumer → topic → position.
    public var all: [String: [String: Position]] { positions.withLock { $0 } }

    /// Durably records that `consumer` will next read `offset` in `topic`. Returns once it is on disk.
    public func commit(_ consumer: String, topic: String, offset: Int64) throws(TelexError) {
        try commit(consumer, offsets: [topic: offset])
    }

    /// Durably records several of `consumer`'s positions at once (one file write), as `commit` does for one.
    public func commit(_ consumer: String, offsets: [String: Int64]) throws(TelexError) {
        try Self.validateName(consumer)
        // A tab or newline in the topic would make the file unloadable, and with it the whole data directory.
        for topic in offsets.keys { try TopicName.validate(topic) }
        let now = FileIO.nowMilliseconds()
        try commits.withLock { _ throws(TelexError) in
            var entries = positions.withLock { $0[consumer] ?? [:] }
            for (topic, offset) in offsets { entries[topic] = Position(offset: offset, commitTime: now) }
            try write(consumer, entries)
        }
    }

    /// Durably forgets every consumer's position in `topic` (the topic was deleted). Blocking.
    public func removeTopic(_ topic: String) throws(TelexError) {
        try commits.withLock { _ throws(TelexError) in
            for (consumer, var entries) in positions.withLock({ $0 }) where entries[topic] != nil {
                entries[topic] = nil
                try write(consumer, entries)
            }
        }
    }

    /// Replaces `consumer`'s file with `entries` and publishes them; called holding `commits`.
    private func write(_ consumer: String, _ entries: [String: Position]) throws(TelexError) {
        var text = ByteBuffer()
        for (topic, position) in entries.sorted(by: { $0.key < $1.key }) {
            text.writeString("\(topic)\t\(position.offset)\t\(position.commitTime)\n")
        }
        try FileIO.replaceAtomically(directory + "/" + consumer + ".offsets", in: directory, with: text)
        positions.withLock { $0[consumer] = entries }
    }

    /// Reads one file: `topic<TAB>offset<TAB>commitTime` lines, or `topic<TAB>offset` as older brokers wrote them.
    static func load(_ path: String) throws(TelexError) -> [String: Position] {
        let fd = try FileIO.open(path, flags: O_RDONLY)
        defer { close(fd) }
        var buffer = ByteBuffer()
        _ = try FileIO.read(fd, at: 0, length: try FileIO.size(fd, path: path), into: &buffer, path: path)
        var entries: [String: Position] = [:]
        for (number, line) in String(buffer: buffer).split(separator: "\n").enumerated() {
            let fields = line.split(separator: "\t")
            guard fields.count == 2 || fields.count == 3, let offset = Int64(fields[1]),
                let commitTime = fields.count == 3 ? Int64(fields[2]) : 0
            else {
                throw TelexError(.storageFailure,
                    "\(path) line \(number + 1): expected 'topic<TAB>offset<TAB>commitTime', got '\(line.prefix(80))'")
            }
            entries[String(fields[0])] = Position(offset: offset, commitTime: commitTime)
        }
        return entries
    }
}
