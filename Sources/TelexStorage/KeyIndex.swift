import NIOCore
import TelexProtocol

/// One stored version of an article key: where it is and whether it deletes the article.
public struct KeyVersion: Sendable, Equatable {
    public var offset: Int64
    /// When the broker appended the version's batch, in milliseconds since the epoch.
    public var appendTime: Int64
    /// The record's first `ce-type` header is exactly `article.deleted`.
    public var tombstone: Bool

    public init(offset: Int64, appendTime: Int64, tombstone: Bool) {
        self.offset = offset
        self.appendTime = appendTime
        self.tombstone = tombstone
    }
}

/// The key index of one segment: every indexed record's key and version (Protocol/STORAGE.md §14). The form of
/// a `.keys` file, of a recovery scan and of verify's walk; in memory the log keeps one `LogKeys` for all.
///
/// Records with an empty key are not articles and are not indexed. Keys are Strings decoded from UTF-8
/// (invalid bytes repaired), so they compare as the query API does.
struct SegmentKeys: Sendable, Equatable {
    /// Each key's versions in this segment, oldest first.
    var versions: [String: [KeyVersion]] = [:]
    /// Versions indexed, tombstones included.
    var records = 0
    var tombstones = 0

    /// The keys of one batch, decoded before the log's lock is taken: the key (nil when empty) and whether the
    /// record is a tombstone, in record order.
    static func decode(_ keys: [BatchKey]) -> [(key: String?, tombstone: Bool)] {
        keys.map { entry in
            // Through the raw bytes: decoding the generic byte view runs unspecialised, at twice the cost.
            (entry.key.readableBytes == 0
                ? nil : entry.key.withUnsafeReadableBytes { String(decoding: $0, as: UTF8.self) },
             entry.isTombstone)
        }
    }

    /// Indexes the records of the batch at `baseOffset` appended at `appendTime`.
    mutating func add(_ keys: [(key: String?, tombstone: Bool)], baseOffset: Int64, appendTime: Int64) {
        for (index, entry) in keys.enumerated() {
            guard let key = entry.key else { continue }
            add(key, KeyVersion(offset: baseOffset + Int64(index), appendTime: appendTime, tombstone: entry.tombstone))
        }
    }

    mutating func add(_ key: String, _ version: KeyVersion) {
        versions[key, default: []].append(version)
        records += 1
        if version.tombstone { tombstones += 1 }
    }

    /// Whether `offset` lies in a damaged range: its record cannot be read, so it is not answered.
    static func isDamaged(_ offset: Int64, _ damaged: [DamagedRange]) -> Bool {
        !damaged.isEmpty && damaged.contains { $0.contains(offset) }
    }
}

/// A sealed segment's `.keys` file: its key index, and the segment state it was built from
/// (Protocol/STORAGE.md §14.1). All integers big-endian.
///
/// ```
/// magic u32 "TKEY" · version u8 (1) · baseOffset i64 · nextOffset i64 · logSize i64 · keyCount u32
/// keyCount × (key bytes16 · versionCount u32 · versionCount × (offset i64 · appendTime i64 · flags u8))
/// crc u32 (CRC-32 of every byte before it)
/// ```
struct KeyTableFile: Equatable {
    static let magic: UInt32 = 0x544B_4559
    static let version: UInt8 = 1
    static let suffix = ".keys"

    var baseOffset: Int64
    /// The segment's next offset when the table was written.
    var nextOffset: Int64
    /// The segment's `.log` size in bytes when the table was written.
    var logSize: Int64
    var keys: SegmentKeys

    /// The file's bytes. Keys in the order of their first version, so equal tables give equal files.
    func encoded() -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeMultipleIntegers(Self.magic, Self.version, baseOffset, nextOffset, logSize,
                                     UInt32(keys.versions.count))
        let ordered = keys.versions.sorted { $0.value[0].offset < $1.value[0].offset }
        for (key, versions) in ordered {
            var bytes = ByteBuffer(string: key)
            // A key longer than a u16 cannot have come off the wire (keys are bytes16); kept whole or not at all.
            if bytes.readableBytes > Int(UInt16.max) { bytes = ByteBuffer() }
            buffer.writeInteger(UInt16(bytes.readableBytes))
            buffer.writeImmutableBuffer(bytes)
            buffer.writeInteger(UInt32(versions.count))
            for version in versions {
                buffer.writeMultipleIntegers(version.offset, version.appendTime, UInt8(version.tombstone ? 1 : 0))
            }
        }
        buffer.writeInteger(CRC32.checksum(buffer))
        return buffer
    }

    /// Parses and checks a `.keys` file: its CRC, its fields, and every version inside
    /// `baseOffset..<nextOffset` in increasing order per key. Throws `storageFailure` naming the problem.
    static func decode(_ bytes: ByteBuffer, path: String) throws(TelexError) -> KeyTableFile {
        func damaged(_ problem: String) -> TelexError {
            TelexError(.storageFailure, "\(path): damaged key table: \(problem)")
        }
        guard bytes.readableBytes >= 33 + 4 else { throw damaged("\(bytes.readableBytes) bytes is too short") }
        let body = bytes.getSlice(at: bytes.readerIndex, length: bytes.readableBytes - 4)!
        let stored = bytes.getInteger(at: bytes.writerIndex - 4, as: UInt32.self)!
        guard CRC32.checksum(body) == stored else { throw damaged("CRC mismatch") }
        var buffer = body
        let (magic, version, baseOffset, nextOffset, logSize, keyCount) = buffer.readMultipleIntegers(
            as: (UInt32, UInt8, Int64, Int64, Int64, UInt32).self)!
        guard magic == Self.magic else { throw damaged("bad magic \(RecordBatch.hex(magic))") }
        guard version == Self.version else { throw damaged("unknown version \(version) (this telexd reads 1)") }
        guard baseOffset >= 0, nextOffset >= baseOffset, logSize >= 0 else {
            throw damaged("base offset \(baseOffset), next offset \(nextOffset), log size \(logSize)")
        }
        var keys = SegmentKeys()
        for index in 0..<Int(keyCount) {
            guard let length = buffer.readInteger(as: UInt16.self), let key = buffer.readSlice(length: Int(length)),
                let count = buffer.readInteger(as: UInt32.self)
            else { throw damaged("key \(index) of \(keyCount) is truncated") }
            let name = String(decoding: key.readableBytesView, as: UTF8.self)
            guard !name.isEmpty, keys.versions[name] == nil else {
                throw damaged("key \(index) of \(keyCount) is empty or repeated")
            }
            guard Int(count) >= 1, Int(count) * 17 <= buffer.readableBytes else {
                throw damaged("key \(index) of \(keyCount) claims \(count) versions")
            }
            var previous = baseOffset - 1
            for _ in 0..<Int(count) {
                let (offset, appendTime, flags) = buffer.readMultipleIntegers(as: (Int64, Int64, UInt8).self)!
                guard offset > previous, offset < nextOffset, flags <= 1 else {
                    throw damaged("""
                        key \(index) has a version at offset \(offset) outside \(baseOffset)..<\(nextOffset), \
                        out of order, or with flags \(flags)
                        """)
                }
                previous = offset
                keys.add(name, KeyVersion(offset: offset, appendTime: appendTime, tombstone: flags == 1))
            }
        }
        guard buffer.readableBytes == 0 else { throw damaged("\(buffer.readableBytes) bytes after the last key") }
        return KeyTableFile(baseOffset: baseOffset, nextOffset: nextOffset, logSize: logSize, keys: keys)
    }
}

/// The key index of a whole log: each key's versions across all its segments, oldest first.
///
/// One map per log, not one per segment: a key with versions in many segments costs one dictionary entry, one
/// String and one array instead of one of each per segment (Protocol/STORAGE.md §14.4). A segment's table is
/// cut out of it when the segment is sealed (`table(for:)`).
struct LogKeys: Sendable {
    var versions: [String: [KeyVersion]] = [:]

    mutating func add(_ keys: [(key: String?, tombstone: Bool)], baseOffset: Int64, appendTime: Int64) {
        for (index, entry) in keys.enumerated() {
            guard let key = entry.key else { continue }
            versions[key, default: []].append(
                KeyVersion(offset: baseOffset + Int64(index), appendTime: appendTime, tombstone: entry.tombstone))
        }
    }

    /// Adds a segment's versions; segments are added in offset order, so every key's versions stay ordered.
    mutating func add(_ segment: SegmentKeys) {
        for (key, segmentVersions) in segment.versions { versions[key, default: []].append(contentsOf: segmentVersions) }
    }

    /// The versions at offsets in `range` (one segment's), as that segment's table.
    func table(for range: Range<Int64>) -> SegmentKeys {
        var table = SegmentKeys()
        for (key, keyVersions) in versions {
            guard let last = keyVersions.last, last.offset >= range.lowerBound,
                keyVersions[0].offset < range.upperBound
            else { continue }
            for version in keyVersions where range.contains(version.offset) { table.add(key, version) }
        }
        return table
    }

    /// Forgets the versions below `offset` (retention deleted their segments).
    mutating func removeVersions(below offset: Int64) {
        versions = versions.compactMapValues { keyVersions in
            guard keyVersions[0].offset < offset else { return keyVersions }
            let kept = keyVersions.drop { $0.offset < offset }
            return kept.isEmpty ? nil : Array(kept)
        }
    }

    /// Each key's newest version below `end` outside `damaged`.
    func latest(below end: Int64, damaged: [DamagedRange]) -> [String: KeyVersion] {
        var latest: [String: KeyVersion] = [:]
        latest.reserveCapacity(versions.count)
        for (key, keyVersions) in versions {
            let newest = keyVersions.last { $0.offset < end && !SegmentKeys.isDamaged($0.offset, damaged) }
            if let newest { latest[key] = newest }
        }
        return latest
    }
}
