#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import TelexProtocol

/// The `NNNNNNNNNNNNNNNNNNNN.compacted` file of a rewritten segment (Protocol/STORAGE.md §15.2): its presence says
/// the segment's offsets may have gaps, inside it and up to `endOffset`, that are compaction's or a purge's doing,
/// not lost data. Recovery and reads then accept a batch whose base offset is above the expected one, and skip
/// from the last batch to `endOffset` without `DATA_LOSS`.
///
/// Layout (big-endian): magic `TXCM`, u16 version 1, i64 end offset, i64 last append time (−1: none), u64 records
/// kept, u64 records removed (by every rewrite so far), u32 rewrites, then the CRC-32 of everything before it.
/// Written through `FileIO.replaceAtomically` (temporary file, fdatasync, rename, directory fsync) before the
/// rewritten `.log` replaces the old one.
public struct CompactionMarker: Sendable, Equatable {
    static let suffix = ".compacted"
    static let magic: UInt32 = 0x5458_434D
    static let version: UInt16 = 1
    static let encodedSize = 4 + 2 + 8 + 8 + 8 + 8 + 4 + 4

    /// The segment's logical end: the next segment's base offset when it was rewritten.
    public var endOffset: Int64
    /// The original segment's newest append time, kept for retention when the rewrite left no batch (or only older
    /// ones); nil if it was empty.
    public var lastAppendTime: Int64?
    /// Records left in the segment after the last rewrite.
    public var recordsKept: Int64
    /// Records removed by every rewrite of the segment so far.
    public var recordsRemoved: Int64
    /// How many times the segment was rewritten.
    public var rewrites: UInt32
    /// False when the file was there but unreadable (CRC mismatch, truncated): the segment is still read as
    /// compacted, with its end at the next segment's base offset.
    public var valid = true

    /// The marker's path for the segment `baseOffset` in `directory`.
    static func path(directory: String, baseOffset: Int64) -> String {
        directory + "/" + Segment.fileName(baseOffset, suffix)
    }

    func encoded() -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeMultipleIntegers(Self.magic, Self.version, endOffset, lastAppendTime ?? -1,
                                     UInt64(recordsKept), UInt64(recordsRemoved), rewrites)
        buffer.writeInteger(CRC32.checksum(buffer))
        return buffer
    }

    init(endOffset: Int64, lastAppendTime: Int64?, recordsKept: Int64, recordsRemoved: Int64, rewrites: UInt32) {
        self.endOffset = endOffset
        self.lastAppendTime = lastAppendTime
        self.recordsKept = recordsKept
        self.recordsRemoved = recordsRemoved
        self.rewrites = rewrites
    }

    /// Decodes a whole marker file; nil if it is not one (wrong size, magic, version or CRC).
    init?(decoding bytes: ByteBuffer) {
        guard bytes.readableBytes == Self.encodedSize else { return nil }
        let body = bytes.getSlice(at: bytes.readerIndex, length: bytes.readableBytes - 4)!
        guard CRC32.checksum(body) == bytes.getInteger(at: bytes.readerIndex + bytes.readableBytes - 4, as: UInt32.self)
        else { return nil }
        var reader = body
        guard let (magic, version, end, last, kept, removed, rewrites) = reader.readMultipleIntegers(
                as: (UInt32, UInt16, Int64, Int64, UInt64, UInt64, UInt32).self),
            magic == Self.magic, version == Self.version
        else { return nil }
        self.init(endOffset: end, lastAppendTime: last < 0 ? nil : last, recordsKept: Int64(kept),
                  recordsRemoved: Int64(removed), rewrites: rewrites)
    }

    /// The marker of segment `baseOffset` in `directory`: nil without one; an invalid one (`valid` false, end at
    /// the base offset) if the file cannot be decoded, so that the segment is still read as compacted.
    static func load(directory: String, baseOffset: Int64) -> CompactionMarker? {
        let path = path(directory: directory, baseOffset: baseOffset)
        guard FileIO.exists(path) else { return nil }
        var bytes = ByteBuffer()
        do throws(TelexError) {
            let fd = try FileIO.open(path, flags: O_RDONLY)
            defer { FileIO.close(fd, path: path) }
            _ = try FileIO.read(fd, at: 0, length: try FileIO.size(fd, path: path), into: &bytes, path: path)
        } catch {
            return invalid(baseOffset)
        }
        return CompactionMarker(decoding: bytes) ?? invalid(baseOffset)
    }

    private static func invalid(_ baseOffset: Int64) -> CompactionMarker {
        var marker = CompactionMarker(endOffset: baseOffset, lastAppendTime: nil, recordsKept: 0, recordsRemoved: 0,
                                      rewrites: 0)
        marker.valid = false
        return marker
    }
}
