#if canImport(Glibc)
import Glibc
#endif
import Crypto
import Foundation
import Logging
import NIOCore
import TelexProtocol
import TelexStorage

/// One archived segment as the local state records it: what a log routes reads by, plus the `.log`'s hash.
public struct ArchivedSegmentRecord: Codable, Sendable, Equatable {
    public var baseOffset: Int64
    public var nextOffset: Int64
    public var bytes: Int
    public var rewrites: UInt32
    public var firstAppendTime: Int64?
    public var lastAppendTime: Int64?
    /// Hex SHA-256 of the `.log` as uploaded.
    public var sha256: String
    /// Whether a `.compacted` marker was uploaded with it.
    public var compacted: Bool

    public init(manifest: SegmentManifest) {
        baseOffset = manifest.baseOffset
        nextOffset = manifest.nextOffset
        bytes = manifest.bytes
        rewrites = manifest.rewrites
        firstAppendTime = manifest.firstAppendTime
        lastAppendTime = manifest.lastAppendTime
        sha256 = manifest.sha256
        compacted = manifest.compactedKey != nil
    }

    public var segment: ArchivedSegment {
        ArchivedSegment(baseOffset: baseOffset, nextOffset: nextOffset, bytes: bytes, rewrites: rewrites,
                        lastAppendTime: lastAppendTime)
    }
}

/// The per-topic upload state `DATA/topics/<topic>/archive.state` (Protocol/STORAGE.md §16.2): JSON Lines, one
/// `ArchivedSegmentRecord` per line, appended and fdatasynced after the segment's manifest was confirmed. The last
/// line for a base offset wins. Blocking: used from the archiver's task and at startup, never on an event loop.
public enum ArchiveState {
    public static let fileName = "archive.state"

    public static func path(dataDirectory: String, topic: String) -> String {
        dataDirectory + "/topics/" + topic + "/" + fileName
    }

    /// The records of the file at `path`, by base offset (last line wins); empty when it does not exist. A line
    /// that does not parse (a torn last line after a crash) is ignored with a warning: its segment is then
    /// re-checked against its manifest, never re-uploaded blindly.
    public static func load(path: String, logger: Logger) throws(TelexError) -> [Int64: ArchivedSegmentRecord] {
        guard FileIO.exists(path) else { return [:] }
        let bytes = try ArchiveFiles.readFile(path)
        var records: [Int64: ArchivedSegmentRecord] = [:]
        let lines = bytes.readableBytesView.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        let decoder = JSONDecoder()
        for (number, line) in lines.enumerated() where !line.isEmpty {
            guard let record = try? decoder.decode(ArchivedSegmentRecord.self, from: Data(line)) else {
                logger.warning(
                    "ignoring an unreadable line of the archive state; its segment is re-checked",
                    metadata: ["file": "\(path)", "line": "\(number + 1)"])
                continue
            }
            records[record.baseOffset] = record
        }
        return records
    }

    /// Appends `record` as one line and fdatasyncs it. A torn last line left by a crash is ended first, so it
    /// stays one unreadable line instead of spoiling this one.
    public static func append(_ record: ArchivedSegmentRecord, path: String) throws(TelexError) {
        let created = !FileIO.exists(path)
        let fd = try FileIO.open(path, flags: O_RDWR | O_CREAT)
        defer { FileIO.close(fd, path: path) }
        let size = try FileIO.size(fd, path: path)
        var line = ByteBuffer()
        if size > 0, try ArchiveFiles.read(fd, at: size - 1, length: 1, path: path).readableBytesView.last != 10 {
            line.writeString("\n")
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        line.writeBytes(try! encoder.encode(record))
        line.writeString("\n")
        try ArchiveFiles.write(fd, line, at: size, path: path)
        try FileIO.sync(fd, path: path)
        if created, let slash = path.lastIndex(of: "/") { try FileIO.syncDirectory(String(path[..<slash])) }
    }
}

/// SHA-256 and MD5 of a file's first `length` bytes, read 1 MiB at a time (hex, lowercase).
struct FileDigest: Equatable {
    var sha256: String
    var md5: String

    init(path: String, length: Int) throws(TelexError) {
        let fd = try FileIO.open(path, flags: O_RDONLY)
        defer { FileIO.close(fd, path: path) }
        var sha = SHA256()
        var md5 = Insecure.MD5()
        var offset = 0
        while offset < length {
            let chunk = try ArchiveFiles.read(fd, at: offset, length: min(1 << 20, length - offset), path: path)
            guard chunk.readableBytes > 0 else {
                throw TelexError(.storageFailure, "\(path) ended at byte \(offset), expected \(length) bytes")
            }
            chunk.withUnsafeReadableBytes { sha.update(bufferPointer: $0); md5.update(bufferPointer: $0) }
            offset += chunk.readableBytes
        }
        sha256 = Self.hex(sha.finalize())
        self.md5 = Self.hex(md5.finalize())
    }

    /// Hex MD5 of `bytes` (an object's single-part ETag).
    static func md5(_ bytes: ByteBuffer) -> String {
        hex(bytes.withUnsafeReadableBytes { Insecure.MD5.hash(data: $0) })
    }

    static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        digest.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}
