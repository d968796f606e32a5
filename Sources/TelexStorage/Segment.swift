#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import TelexProtocol

/// A sparse offset index entry: the batch starting at `relativeOffset` sits at byte `position`.
struct OffsetIndexEntry: Equatable {
    static let size = 8
    var relativeOffset: UInt32
    var position: UInt32
}

/// A time index entry: the batch at `relativeOffset` was appended at `timestamp` (and no earlier batch later).
struct TimeIndexEntry: Equatable {
    static let size = 12
    var timestamp: Int64
    var relativeOffset: UInt32
}

/// One log file of whole batches plus its sparse offset and time indexes, named by its base offset.
///
/// The three files are `CachedFile`s of the store's `FileDescriptorCache`: opened when first used, closed by the
/// cache when idle and the budget is reached, and opened again (same path, without `O_CREAT`) on the next use.
/// Every use of a descriptor holds a lease, so none is closed under its user, and a reader holding a lease (a
/// `LogSlice`) can finish even after retention deleted the files.
///
/// Lock discipline (why this is `@unchecked Sendable`): the `let` properties (paths, cached files, base offset)
/// are immutable and may be used from any thread; `pread`, `fdatasync` and index `pwrite`s through leased
/// descriptors are safe concurrently with appends. Every `var` (size, offsets, times, the in-memory indexes) is
/// read and written only while holding the `Mutex` of the owning `TopicLog`, or before the segment is published
/// to one (recovery in `TopicLog.init`). That lock lives in the log's state, not here, because one critical
/// section updates the log and its active segment together (an append moves both ends); the compiler cannot
/// check a lock held by another object, so the discipline is kept by hand in `TopicLog`.
final class Segment: @unchecked Sendable {
    let baseOffset: Int64
    let logFile: CachedFile
    let indexFile: CachedFile
    let timeIndexFile: CachedFile
    var logPath: String { logFile.path }

    /// Bytes of whole batches in the file.
    var size: Int
    /// The offset after the last record in this segment.
    var nextOffset: Int64
    /// Append time of the newest batch, or nil when empty.
    var lastAppendTime: Int64?
    /// Append time of the first batch, or nil when empty; drives rolling by age.
    var firstAppendTime: Int64?
    /// Base offset of the newest batch, or nil when empty; names the batch of the closing time index entry.
    var lastBatchOffset: Int64?
    /// The offset index, entry for entry as in the `.index` file (an entry is written at its position there).
    var offsetIndex: [OffsetIndexEntry] = []
    /// The time index, entry for entry as in the `.timeindex` file.
    var timeIndex: [TimeIndexEntry] = []
    private var bytesSinceIndexEntry = 0
    /// Damaged ranges found by recovery or while serving, in file order (Protocol/STORAGE.md §6.2).
    var damaged: [DamagedRange] = []
    /// The segment's key index (§14.1): chunks while it grows (appends, a recovery scan), replaced by the summary
    /// of its sealed table when its sealing round (or, at open, recovery) has built one; the table itself is in
    /// the `.keys` file, loaded on demand through the log's `KeyTableCache`.
    var keyChunks = KeyChunks()
    var keySummary: SealedKeySummary?
    /// Key versions (tombstones included) and tombstones indexed in this segment.
    var keyRecords = 0
    var keyTombstones = 0
    /// How far the batches have been CRC-checked from the start of the file (by recovery, on append, or when
    /// first served): a segment loaded from its indexes starts unchecked.
    var verified: Verified
    /// The segment's `.compacted` marker when it was rewritten by compaction or a purge: its offsets may then have
    /// gaps (Protocol/STORAGE.md §15). Read when the segment object is made; a rewrite makes a new object.
    let compaction: CompactionMarker?

    /// The CRC-checked prefix of the file and what the scan knew at its end.
    struct Verified {
        var bytes: Int
        var nextOffset: Int64
        var lastAppendTime: Int64?
    }

    static func fileName(_ baseOffset: Int64, _ suffix: String) -> String {
        let digits = String(baseOffset)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits + suffix
    }

    /// Opens the segment's files, creating any that are missing, reads the log's size, and leaves the
    /// descriptors to `files`.
    init(directory: String, baseOffset: Int64, files: FileDescriptorCache) throws(TelexError) {
        self.baseOffset = baseOffset
        let logFile = CachedFile(path: directory + "/" + Segment.fileName(baseOffset, ".log"), cache: files)
        let indexFile = CachedFile(path: directory + "/" + Segment.fileName(baseOffset, ".index"), cache: files)
        let timeIndexFile = CachedFile(path: directory + "/" + Segment.fileName(baseOffset, ".timeindex"), cache: files)
        self.logFile = logFile
        self.indexFile = indexFile
        self.timeIndexFile = timeIndexFile
        size = try logFile.lease(creating: true).withDescriptor { fd throws(TelexError) in
            try FileIO.size(fd, path: logFile.path)
        }
        _ = try indexFile.lease(creating: true)
        _ = try timeIndexFile.lease(creating: true)
        nextOffset = baseOffset
        verified = Verified(bytes: 0, nextOffset: baseOffset, lastAppendTime: nil)
        compaction = CompactionMarker.load(directory: directory, baseOffset: baseOffset)
    }

    /// Opens an archived segment's `.log` read-only (`TopicLog+Archive.swift`): no file is created and its indexes
    /// live in memory only (their `CachedFile`s are never opened). `compaction` stands in for the marker the archive
    /// does not hand over. The caller scans it whole (`recover`) before publishing it; its `var`s never change after.
    init(archivedLogPath path: String, baseOffset: Int64, compaction: CompactionMarker?, files: FileDescriptorCache)
        throws(TelexError)
    {
        self.baseOffset = baseOffset
        let logFile = CachedFile(path: path, cache: files, readOnly: true)
        self.logFile = logFile
        indexFile = CachedFile(path: path + ".index", cache: files)
        timeIndexFile = CachedFile(path: path + ".timeindex", cache: files)
        size = try logFile.lease().withDescriptor { fd throws(TelexError) in try FileIO.size(fd, path: path) }
        nextOffset = baseOffset
        verified = Verified(bytes: 0, nextOffset: baseOffset, lastAppendTime: nil)
        self.compaction = compaction
    }

    /// Appends one stamped batch at the end of the file. On a failed write the file is cut back.
    func append(_ parts: [ByteBuffer], header: RecordBatchHeader, indexInterval: Int) throws(TelexError) {
        let position = size
        try logFile.withDescriptor { fd throws(TelexError) in
            do throws(TelexError) {
                try FileIO.write(fd, parts: parts, at: position, path: logPath)
            } catch {
                try? FileIO.truncate(fd, to: position, path: logPath)
                throw error
            }
        }
        size += header.totalSize
        recordAppended(header, at: position, indexInterval: indexInterval, persist: true)
    }

    /// Updates in-memory state (and, with `persist`, the index files) for a batch now at `position`.
    func recordAppended(_ header: RecordBatchHeader, at position: Int, indexInterval: Int, persist: Bool) {
        if offsetIndex.isEmpty || bytesSinceIndexEntry >= indexInterval {
            let relative = UInt32(header.baseOffset - baseOffset)
            let entry = OffsetIndexEntry(relativeOffset: relative, position: UInt32(position))
            offsetIndex.append(entry)
            let timeEntry = TimeIndexEntry(timestamp: header.appendTime, relativeOffset: relative)
            if timeIndex.last.map({ header.appendTime > $0.timestamp }) ?? true {
                timeIndex.append(timeEntry)
                if persist { writeTimeEntry(timeEntry) }
            }
            if persist { writeIndexEntry(entry) }
            bytesSinceIndexEntry = 0
        }
        bytesSinceIndexEntry += header.totalSize
        // An appended batch was validated, CRC and all, before it was written.
        if persist, verified.bytes == position {
            verified = Verified(bytes: position + header.totalSize, nextOffset: header.nextOffset,
                                lastAppendTime: header.appendTime)
        }
        nextOffset = header.nextOffset
        lastBatchOffset = header.baseOffset
        if firstAppendTime == nil { firstAppendTime = header.appendTime }
        lastAppendTime = max(lastAppendTime ?? header.appendTime, header.appendTime)
    }

    // Index files are derived data: a failed index write (or open) is repaired by the rebuild on the next open.
    // Entries are written at their own position, not at the descriptor's file position, which a re-opened
    // descriptor does not keep.
    private func writeIndexEntry(_ entry: OffsetIndexEntry) {
        var buffer = ByteBuffer()
        buffer.writeMultipleIntegers(entry.relativeOffset, entry.position)
        let position = (offsetIndex.count - 1) * OffsetIndexEntry.size
        try? indexFile.withDescriptor { fd throws(TelexError) in
            try FileIO.write(fd, parts: [buffer], at: position, path: indexFile.path)
        }
    }

    private func writeTimeEntry(_ entry: TimeIndexEntry) {
        var buffer = ByteBuffer()
        buffer.writeMultipleIntegers(entry.timestamp, entry.relativeOffset)
        let position = (timeIndex.count - 1) * TimeIndexEntry.size
        try? timeIndexFile.withDescriptor { fd throws(TelexError) in
            try FileIO.write(fd, parts: [buffer], at: position, path: timeIndexFile.path)
        }
    }

    /// The file position of the indexed batch at or before `offset`.
    func indexedPosition(atOrBefore offset: Int64) -> (offset: Int64, position: Int) {
        let relative = offset - baseOffset
        var low = 0
        var high = offsetIndex.count - 1
        var found: OffsetIndexEntry?
        while low <= high {
            let middle = (low + high) / 2
            if Int64(offsetIndex[middle].relativeOffset) <= relative {
                found = offsetIndex[middle]
                low = middle + 1
            } else {
                high = middle - 1
            }
        }
        guard let entry = found else { return (baseOffset, 0) }
        return (baseOffset + Int64(entry.relativeOffset), Int(entry.position))
    }

    /// The offset of the last indexed batch appended before `timestamp`, to start a time search from.
    func indexedOffset(before timestamp: Int64) -> Int64 {
        var low = 0
        var high = timeIndex.count - 1
        var found: TimeIndexEntry?
        while low <= high {
            let middle = (low + high) / 2
            if timeIndex[middle].timestamp < timestamp {
                found = timeIndex[middle]
                low = middle + 1
            } else {
                high = middle - 1
            }
        }
        return baseOffset + Int64(found?.relativeOffset ?? 0)
    }

    /// Reads the batch header at `position`; nil past `limit`.
    func header(at position: Int, limit: Int) throws(TelexError) -> RecordBatchHeader? {
        try header(in: logFile.lease(), at: position, limit: limit)
    }

    /// Reads the batch header at `position` through `log`, a lease on this segment's `.log`; nil past `limit`.
    private func header(in log: FileLease, at position: Int, limit: Int) throws(TelexError) -> RecordBatchHeader? {
        guard position + RecordBatchHeader.size <= limit else { return nil }
        var buffer = ByteBuffer()
        let count = try log.withDescriptor { fd throws(TelexError) in
            try FileIO.read(fd, at: position, length: RecordBatchHeader.size, into: &buffer, path: logPath)
        }
        guard count == RecordBatchHeader.size else { return nil }
        return RecordBatchHeader.peek(buffer, at: 0)
    }

    /// Writes the index files anew from the in-memory indexes.
    func rewriteIndexes() throws(TelexError) {
        var index = ByteBuffer()
        for entry in offsetIndex { index.writeMultipleIntegers(entry.relativeOffset, entry.position) }
        var times = ByteBuffer()
        for entry in timeIndex { times.writeMultipleIntegers(entry.timestamp, entry.relativeOffset) }
        for (file, bytes) in [(indexFile, index), (timeIndexFile, times)] {
            try file.withDescriptor { fd throws(TelexError) in
                try FileIO.truncate(fd, to: 0, path: file.path)
                try FileIO.write(fd, parts: [bytes], at: 0, path: file.path)
            }
        }
    }

    /// Adds a closing time index entry for the newest batch, so the index knows the segment's last time.
    func sealTimeIndex() {
        guard let lastBatchOffset, let last = lastAppendTime, timeIndex.last.map({ last > $0.timestamp }) ?? true
        else { return }
        let entry = TimeIndexEntry(timestamp: last, relativeOffset: UInt32(lastBatchOffset - baseOffset))
        timeIndex.append(entry)
        writeTimeEntry(entry)
    }

    /// Forces the log bytes to disk: the group-commit fsync. Indexes are derived data, rebuilt on recovery.
    ///
    /// The descriptor may be a different one from the one the bytes were written through (the cache may have
    /// closed and re-opened the file meanwhile): `fdatasync` flushes the file's dirty pages, whichever
    /// descriptor wrote them (Protocol/STORAGE.md §11.2).
    func syncLog() throws(TelexError) {
        try logFile.sync()
    }

    /// Forces the log and both indexes to disk (sealing a rolled segment, `sync()` and close).
    func sync() throws(TelexError) {
        try syncLog()
        for file in [indexFile, timeIndexFile] { try? file.sync() }
    }

    /// Closes the segment's idle descriptors now (a closed log, deleted files); leased ones close when idle.
    func closeFiles() {
        logFile.closeIfIdle()
        indexFile.closeIfIdle()
        timeIndexFile.closeIfIdle()
    }

    /// Loads the index files, returning false if they are missing, malformed or disagree with the log.
    func loadIndexes() throws(TelexError) -> Bool {
        let log = try logFile.lease()
        var buffer = try readWholeFile(indexFile)
        let indexSize = buffer.readableBytes
        guard indexSize % OffsetIndexEntry.size == 0, indexSize > 0 || size == 0 else { return false }
        var entries: [OffsetIndexEntry] = []
        while let (relative, position) = buffer.readMultipleIntegers(as: (UInt32, UInt32).self) {
            if let last = entries.last, relative <= last.relativeOffset || position <= last.position { return false }
            guard Int(position) < size else { return false }
            entries.append(OffsetIndexEntry(relativeOffset: relative, position: position))
        }
        // A compacted segment's first batch may start above its base offset (Protocol/STORAGE.md §15.2).
        guard entries.first.map({ ($0.relativeOffset == 0 || compaction != nil) && $0.position == 0 }) ?? true
        else { return false }
        // Every entry must point at a batch with the offset it claims.
        for entry in entries {
            guard let header = try header(in: log, at: Int(entry.position), limit: size),
                header.baseOffset == baseOffset + Int64(entry.relativeOffset)
            else { return false }
        }
        var timeBuffer = try readWholeFile(timeIndexFile)
        let timeSize = timeBuffer.readableBytes
        guard timeSize % TimeIndexEntry.size == 0, timeSize > 0 || size == 0 else { return false }
        var times: [TimeIndexEntry] = []
        while let (timestamp, relative) = timeBuffer.readMultipleIntegers(as: (Int64, UInt32).self) {
            if let last = times.last, timestamp <= last.timestamp || relative < last.relativeOffset { return false }
            times.append(TimeIndexEntry(timestamp: timestamp, relativeOffset: relative))
        }
        offsetIndex = entries
        // Every time entry must name a batch appended at the time it claims, or time lookups would skip batches.
        for entry in times {
            guard let header = try header(in: log, startingAt: baseOffset + Int64(entry.relativeOffset)),
                header.appendTime == entry.timestamp
            else { return false }
        }
        timeIndex = times
        return true
    }

    private func readWholeFile(_ file: CachedFile) throws(TelexError) -> ByteBuffer {
        var buffer = ByteBuffer()
        try file.withDescriptor { fd throws(TelexError) in
            let size = try FileIO.size(fd, path: file.path)
            _ = try FileIO.read(fd, at: 0, length: size, into: &buffer, path: file.path)
        }
        return buffer
    }

    /// The header of the batch whose base offset is `offset`, walking from the offset index; nil if none starts there.
    private func header(in log: FileLease, startingAt offset: Int64) throws(TelexError) -> RecordBatchHeader? {
        var position = indexedPosition(atOrBefore: offset).position
        while let header = try header(in: log, at: position, limit: size), header.baseOffset <= offset {
            if header.baseOffset == offset { return header }
            position += header.totalSize
        }
        return nil
    }

    /// Walks the batches after the last index entry to learn the segment's end; false if they do not line up.
    func loadTail(indexInterval: Int) throws(TelexError) -> Bool {
        let log = try logFile.lease()
        var position = Int(offsetIndex.last?.position ?? 0)
        var sawBatch = false
        while let header = try header(in: log, at: position, limit: size) {
            guard header.totalSize >= RecordBatchHeader.size, position + header.totalSize <= size,
                !sawBatch || header.baseOffset == nextOffset || (compaction != nil && header.baseOffset > nextOffset)
            else { return false }
            if !sawBatch, let first = offsetIndex.last, header.baseOffset != baseOffset + Int64(first.relativeOffset) {
                return false
            }
            sawBatch = true
            nextOffset = header.nextOffset
            lastBatchOffset = header.baseOffset
            if firstAppendTime == nil, position == 0 { firstAppendTime = header.appendTime }
            lastAppendTime = max(lastAppendTime ?? header.appendTime, header.appendTime)
            position += header.totalSize
        }
        if firstAppendTime == nil, size > 0, let first = try header(in: log, at: 0, limit: size) {
            firstAppendTime = first.appendTime
        }
        bytesSinceIndexEntry = indexInterval
        applyCompactionEnd()
        return position == size
    }

    /// Scans every batch from the start, checking CRCs, and rebuilds the indexes from what is valid, stepping over
    /// damaged ranges (kept in `damaged`). The scan's `end` is where valid data ends; with a `tornReason`, the bytes
    /// after it are a torn tail. `following` is the next segment's base offset (nil for the active segment): a
    /// sealed segment's bad tail is a damaged range up to it, never a torn tail.
    /// With `indexKeys` the key index is rebuilt from the valid batches too.
    func recover(
        indexInterval: Int, limits: RecordBatchLimits, following: Int64?, indexKeys: Bool
    ) throws(TelexError) -> SegmentScan {
        offsetIndex = []
        keyChunks = KeyChunks()
        keySummary = nil
        timeIndex = []
        bytesSinceIndexEntry = 0
        nextOffset = baseOffset
        firstAppendTime = nil
        lastAppendTime = nil
        lastBatchOffset = nil
        let scan = try scan(from: 0, offset: baseOffset, lastAppendTime: nil, target: size, limit: size,
                            tailNextOffset: following, limits: limits) { header, position in
            // Only valid batches get index entries, so none points into damage.
            recordAppended(header, at: position, indexInterval: indexInterval, persist: false)
        } onBatchBytes: { header, batch in
            // A batch whose key table does not parse stays readable; its records are just not indexed.
            let delta = header.baseOffset - self.baseOffset
            guard indexKeys, delta >= 0, delta + Int64(header.recordCount) <= Int64(UInt32.max) else { return }
            try? RecordBatch.forEachKey(of: batch, header: header, limits: limits) { index, key, tombstone in
                self.keyChunks.add(key, offsetDelta: UInt32(delta + Int64(index)), appendTime: header.appendTime,
                              tombstone: tombstone)
            }
        }
        damaged = scan.damaged
        nextOffset = scan.nextOffset
        verified = Verified(bytes: scan.end, nextOffset: scan.nextOffset, lastAppendTime: scan.lastAppendTime)
        applyCompactionEnd()
        return scan
    }

    /// Cuts the file to `length` bytes.
    func truncate(to length: Int) throws(TelexError) {
        try logFile.withDescriptor { fd throws(TelexError) in try FileIO.truncate(fd, to: length, path: logPath) }
        size = length
    }

    /// Removes the segment's files and closes their idle descriptors; readers holding a lease keep working on
    /// the unlinked file. Blocking: call it outside the log's lock, once the segment has left the log (its files
    /// must not be opened again).
    func deleteFiles() throws(TelexError) {
        defer { closeFiles() }
        try FileIO.remove(logPath)
        try FileIO.remove(indexFile.path)
        try FileIO.remove(timeIndexFile.path)
        try FileIO.remove(String(logPath.dropLast(4)) + CompactionMarker.suffix)
        try FileIO.remove(keysPath)
    }
}

/// Reads the batch headers of one segment through a window of file bytes, so a walk over many small batches
/// costs one `pread` per window instead of one per header.
///
/// Only bytes below `limit` (the segment size when the walk started) are ever read. A batch at least as large
/// as the window leaves its successor outside any window read from its start, so after such a jump only the
/// next header is read, not a whole window of batch data.
struct HeaderWindow {
    /// Window size for reads: 64 KiB.
    static let defaultBytes = 64 << 10

    /// The segment's `.log`, leased for the walk.
    let log: FileLease
    let limit: Int
    let windowBytes: Int
    /// The segment's damaged ranges, which `chainedHeader(skippingDamageAt:expected:)` steps over.
    let damaged: [DamagedRange]
    /// Whether base offsets may jump ahead (a compacted segment, `Segment.compaction`).
    let allowsGaps: Bool
    private var buffer = ByteBuffer()
    /// File position of the buffer's first byte.
    private var start = 0
    /// Position of the last header returned, to tell how far the walk jumped.
    private var previous: Int?

    init(
        _ log: FileLease, limit: Int, windowBytes: Int = HeaderWindow.defaultBytes, damaged: [DamagedRange] = [],
        allowsGaps: Bool = false
    ) {
        precondition(windowBytes >= RecordBatchHeader.size, "a header window must hold one header")
        self.log = log
        self.limit = limit
        self.windowBytes = windowBytes
        self.damaged = damaged
        self.allowsGaps = allowsGaps
    }

    /// The batch header at `position`; nil when fewer than a header's bytes remain below `limit`.
    mutating func header(at position: Int) throws(TelexError) -> RecordBatchHeader? {
        guard position + RecordBatchHeader.size <= limit else { return nil }
        if position < start || position + RecordBatchHeader.size > start + buffer.readableBytes {
            let jump = previous.map { position - $0 } ?? 0
            let wanted = jump >= windowBytes ? RecordBatchHeader.size : windowBytes
            buffer.clear()
            start = position
            let length = min(wanted, limit - position)
            let count = try log.withDescriptor { fd throws(TelexError) in
                try FileIO.read(fd, at: position, length: length, into: &buffer, path: log.file.path)
            }
            guard count >= RecordBatchHeader.size else { return nil }
        }
        previous = position
        return RecordBatchHeader.peek(buffer, at: position - start)
    }
}
