#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import TelexProtocol

/// The segment's key index file (Protocol/STORAGE.md §14): written when the segment is sealed, loaded at open.
extension Segment {
    var keysPath: String { String(logPath.dropLast(4)) + KeyTableFile.suffix }

    /// The index a query takes under the log's lock: O(chunks), no entry is copied, no file read.
    var keySnapshot: SegmentKeySnapshot {
        SegmentKeySnapshot(segment: self, baseOffset: baseOffset, nextOffset: nextOffset, size: size,
                           summary: keySummary, growing: keySummary == nil ? keyChunks : KeyChunks(), damaged: damaged)
    }

    /// Seals the index built by a recovery scan: its table, ordered by hash, is returned (to be written) and only
    /// its summary kept. Owner only.
    func sealKeysAfterScan() -> SealedKeys {
        let table = SealedKeys(keyChunks.joined())
        keySummary = SealedKeySummary(table)
        keyChunks = KeyChunks()
        return table
    }

    /// The key table of the sealed segment as its `.log` holds it now, built by walking its valid batches (as a
    /// recovery scan does, without changing the segment). For a `.keys` missing, damaged or stale after open.
    /// Blocking: reads the whole `.log`.
    func scanKeys(nextOffset: Int64, size: Int, limits: RecordBatchLimits) throws(TelexError) -> SealedKeys {
        var entries = KeyEntries()
        _ = try scan(from: 0, offset: baseOffset, lastAppendTime: nil, target: size, limit: size,
                     tailNextOffset: nextOffset, limits: limits) { _, _ in } onBatchBytes: { header, batch in
            entries.add(batch, header: header, segmentBase: self.baseOffset, limits: limits)
        }
        // Copied without the arrays' spare capacity: the cache counts the entries, not the capacity.
        var exact = KeyEntries()
        exact.entries.reserveCapacity(entries.count)
        exact.keyBytes.reserveCapacity(entries.keyBytes.count)
        exact.append(contentsOf: entries)
        return SealedKeys(exact)
    }

    /// Writes `table` to the `.keys` file and fdatasyncs it. Not atomic: a torn or stale file fails its checks
    /// at the next open and is rebuilt. Blocking.
    func writeKeys(_ table: KeyTableFile) throws(TelexError) {
        let path = keysPath
        let fd = try FileIO.open(path, flags: O_WRONLY | O_CREAT | O_TRUNC)
        defer { _ = FileIO.close(fd, path: path) }
        try FileIO.write(fd, parts: [table.encoded()], at: 0, path: path)
        try FileIO.sync(fd, path: path)
    }

    /// The `.keys` file if it exists, whatever it holds; nil when there is none. Blocking.
    static func readKeysFile(_ path: String) throws(TelexError) -> ByteBuffer? {
        guard FileIO.exists(path) else { return nil }
        let fd = try FileIO.open(path, flags: O_RDONLY)
        defer { _ = FileIO.close(fd, path: path) }
        var buffer = ByteBuffer()
        let size = try FileIO.size(fd, path: path)
        _ = try FileIO.read(fd, at: 0, length: size, into: &buffer, path: path)
        return buffer
    }

    /// The stored key index if the `.keys` file is sound and was written for the segment as it is now (same
    /// base offset, next offset and `.log` size); otherwise why not. Blocking.
    func storedKeys() -> Result<SealedKeys, TelexError> {
        storedKeys(nextOffset: nextOffset, size: size)
    }

    /// The stored key index if the `.keys` file is sound and was written for the segment with this next offset
    /// and `.log` size (a query's snapshot of them); otherwise why not. Blocking.
    func storedKeys(nextOffset: Int64, size: Int) -> Result<SealedKeys, TelexError> {
        Result { () throws(TelexError) -> SealedKeys in
            guard let bytes = try Self.readKeysFile(keysPath) else {
                throw TelexError(.storageFailure, "\(keysPath) is missing")
            }
            let table = try KeyTableFile.decode(bytes, path: keysPath)
            try table.check(against: baseOffset, nextOffset: nextOffset, logSize: size, path: keysPath)
            return table.keys
        }
    }
}

extension KeyTableFile {
    /// Throws unless the table was written for a segment with these base offset, next offset and `.log` size.
    func check(against baseOffset: Int64, nextOffset: Int64, logSize: Int, path: String) throws(TelexError) {
        guard self.baseOffset == baseOffset, self.nextOffset == nextOffset, self.logSize == Int64(logSize) else {
            throw TelexError(.storageFailure, """
                \(path): stale key table: written for base offset \(self.baseOffset), next offset \(self.nextOffset), \
                \(self.logSize) log bytes; the segment has \(baseOffset), \(nextOffset), \(logSize)
                """)
        }
    }
}
