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
/// The file descriptors stay open until the last reference goes, so a reader holding a segment can finish even
/// after retention deleted its files.
///
/// Lock discipline (why this is `@unchecked Sendable`): the `let` properties (paths, descriptors, base offset)
/// are immutable and may be used from any thread; `pread`, `fdatasync` and index `write`s on the descriptors
/// are safe concurrently with appends. Every `var` (size, offsets, times, the in-memory indexes) is read and
/// written only while holding the `Mutex` of the owning `TopicLog`, or before the segment is published to one
/// (recovery in `TopicLog.init`). That lock lives in the log's state, not here, because one critical section
/// updates the log and its active segment together (an append moves both ends); the compiler cannot check a
/// lock held by another object, so the discipline is kept by hand in `TopicLog`.
final class Segment: @unchecked Sendable {
    let baseOffset: Int64
    let logPath: String
    let indexPath: String
    let timeIndexPath: String
    let fd: CInt
    private let indexFD: CInt
    private let timeIndexFD: CInt

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
    var offsetIndex: [OffsetIndexEntry] = []
    var timeIndex: [TimeIndexEntry] = []
    private var bytesSinceIndexEntry = 0

    static func fileName(_ baseOffset: Int64, _ suffix: String) -> String {
        let digits = String(baseOffset)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits + suffix
    }

    init(directory: String, baseOffset: Int64) throws(TelexError) {
        self.baseOffset = baseOffset
        logPath = directory + "/" + Segment.fileName(baseOffset, ".log")
        indexPath = directory + "/" + Segment.fileName(baseOffset, ".index")
        timeIndexPath = directory + "/" + Segment.fileName(baseOffset, ".timeindex")
        let fd = try FileIO.open(logPath, flags: O_RDWR | O_CREAT)
        var opened = [fd]
        do {
            let indexFD = try FileIO.open(indexPath, flags: O_RDWR | O_CREAT)
            opened.append(indexFD)
            let timeIndexFD = try FileIO.open(timeIndexPath, flags: O_RDWR | O_CREAT)
            opened.append(timeIndexFD)
            size = try FileIO.size(fd, path: logPath)
            self.fd = fd
            self.indexFD = indexFD
            self.timeIndexFD = timeIndexFD
        } catch {
            for descriptor in opened { close(descriptor) }
            throw error
        }
        nextOffset = baseOffset
    }

    deinit {
        close(fd)
        close(indexFD)
        close(timeIndexFD)
    }

    /// Appends one stamped batch at the end of the file. On a failed write the file is cut back.
    func append(_ parts: [ByteBuffer], header: RecordBatchHeader, indexInterval: Int) throws(TelexError) {
        let position = size
        do {
            try FileIO.write(fd, parts: parts, at: position, path: logPath)
        } catch {
            try? FileIO.truncate(fd, to: position, path: logPath)
            throw error
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
        nextOffset = header.nextOffset
        lastBatchOffset = header.baseOffset
        if firstAppendTime == nil { firstAppendTime = header.appendTime }
        lastAppendTime = max(lastAppendTime ?? header.appendTime, header.appendTime)
    }

    // Index files are derived data: a failed index write is repaired by the rebuild on the next open.
    private func writeIndexEntry(_ entry: OffsetIndexEntry) {
        var buffer = ByteBuffer()
        buffer.writeMultipleIntegers(entry.relativeOffset, entry.position)
        try? FileIO.append(indexFD, buffer, path: indexPath)
    }

    private func writeTimeEntry(_ entry: TimeIndexEntry) {
        var buffer = ByteBuffer()
        buffer.writeMultipleIntegers(entry.timestamp, entry.relativeOffset)
        try? FileIO.append(timeIndexFD, buffer, path: timeIndexPath)
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
        guard position + RecordBatchHeader.size <= limit else { return nil }
        var buffer = ByteBuffer()
        let count = try FileIO.read(fd, at: position, length: RecordBatchHeader.size, into: &buffer, path: logPath)
        guard count == RecordBatchHeader.size else { return nil }
        return RecordBatchHeader.peek(buffer, at: 0)
    }

    /// Writes the index files anew from the in-memory indexes.
    func rewriteIndexes() throws(TelexError) {
        var index = ByteBuffer()
        for entry in offsetIndex { index.writeMultipleIntegers(entry.relativeOffset, entry.position) }
        var times = ByteBuffer()
        for entry in timeIndex { times.writeMultipleIntegers(entry.timestamp, entry.relativeOffset) }
        try FileIO.truncate(indexFD, to: 0, path: indexPath)
        try FileIO.write(indexFD, parts: [index], at: 0, path: indexPath)
        try FileIO.truncate(timeIndexFD, to: 0, path: timeIndexPath)
        try FileIO.write(timeIndexFD, parts: [times], at: 0, path: timeIndexPath)
        lseek(indexFD, 0, SEEK_END)
        lseek(timeIndexFD, 0, SEEK_END)
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
    func syncLog() throws(TelexError) {
        try FileIO.sync(fd, path: logPath)
    }

    /// Forces the log and both indexes to disk (sealing a rolled segment, `sync()` and close).
    func sync() throws(TelexError) {
        try syncLog()
        try? FileIO.sync(indexFD, path: indexPath)
        try? FileIO.sync(timeIndexFD, path: timeIndexPath)
    }

    /// Loads the index files, returning false if they are missing, malformed or disagree with the log.
    func loadIndexes() throws(TelexError) -> Bool {
        var buffer = ByteBuffer()
        let indexSize = try FileIO.size(indexFD, path: indexPath)
        _ = try FileIO.read(indexFD, at: 0, length: indexSize, into: &buffer, path: indexPath)
        guard indexSize % OffsetIndexEntry.size == 0, indexSize > 0 || size == 0 else { return false }
        var entries: [OffsetIndexEntry] = []
        while let (relative, position) = buffer.readMultipleIntegers(as: (UInt32, UInt32).self) {
            if let last = entries.last, relative <= last.relativeOffset || position <= last.position { return false }
            guard Int(position) < size else { return false }
            entries.append(OffsetIndexEntry(relativeOffset: relative, position: position))
        }
        guard entries.first.map({ $0.relativeOffset == 0 && $0.position == 0 }) ?? true else { return false }
        // Every entry must point at a batch with the offset it claims.
        for entry in entries {
            guard let header = try header(at: Int(entry.position), limit: size),
                header.baseOffset == baseOffset + Int64(entry.relativeOffset)
            else { return false }
        }
        var timeBuffer = ByteBuffer()
        let timeSize = try FileIO.size(timeIndexFD, path: timeIndexPath)
        _ = try FileIO.read(timeIndexFD, at: 0, length: timeSize, into: &timeBuffer, path: timeIndexPath)
        guard timeSize % TimeIndexEntry.size == 0, timeSize > 0 || size == 0 else { return false }
        var times: [TimeIndexEntry] = []
        while let (timestamp, relative) = timeBuffer.readMultipleIntegers(as: (Int64, UInt32).self) {
            if let last = times.last, timestamp <= last.timestamp || relative < last.relativeOffset { return false }
            times.append(TimeIndexEntry(timestamp: timestamp, relativeOffset: relative))
        }
        offsetIndex = entries
        // Every time entry must name a batch appended at the time it claims, or time lookups would skip batches.
        for entry in times {
            guard let header = try header(startingAt: baseOffset + Int64(entry.relativeOffset)),
                header.appendTime == entry.timestamp
            else { return false }
        }
        timeIndex = times
        return true
    }

    /// The header of the batch whose base offset is `offset`, walking from the offset index; nil if none starts there.
    private func header(startingAt offset: Int64) throws(TelexError) -> RecordBatchHeader? {
        var position = indexedPosition(atOrBefore: offset).position
        while let header = try header(at: position, limit: size), header.baseOffset <= offset {
            if header.baseOffset == offset { return header }
            position += header.totalSize
        }
        return nil
    }

    /// Walks the batches after the last index entry to learn the segment's end; false if they do not line up.
    func loadTail(indexInterval: Int) throws(TelexError) -> Bool {
        var position = Int(offsetIndex.last?.position ?? 0)
        var sawBatch = false
        while let header = try header(at: position, limit: size) {
            guard header.totalSize >= RecordBatchHeader.size, position + header.totalSize <= size,
                !sawBatch || header.baseOffset == nextOffset
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
        if firstAppendTime == nil, size > 0, let first = try header(at: 0, limit: size) {
            firstAppendTime = first.appendTime
        }
        bytesSinceIndexEntry = indexInterval
        return position == size
    }

    /// Scans every batch from the start, checking CRCs, and rebuilds the indexes from what is valid.
    /// Returns the byte position where valid data ends and why it ended there, if early.
    func recover(indexInterval: Int, limits: RecordBatchLimits) throws(TelexError)
        -> (validBytes: Int, batches: Int, reason: String?)
    {
        offsetIndex = []
        timeIndex = []
        bytesSinceIndexEntry = 0
        nextOffset = baseOffset
        firstAppendTime = nil
        lastAppendTime = nil
        lastBatchOffset = nil
        var position = 0
        var batches = 0
        var reason: String?
        var buffer = ByteBuffer()
        while position < size {
            guard let header = try header(at: position, limit: size) else {
                reason = "a torn batch header (\(size - position) bytes)"
                break
            }
            guard header.totalSize >= RecordBatchHeader.size, position + header.totalSize <= size else {
                reason = "a batch of \(header.totalSize) bytes with only \(size - position) bytes in the file"
                break
            }
            guard header.baseOffset == nextOffset else {
                reason = "base offset \(header.baseOffset) where \(nextOffset) was expected"
                break
            }
            buffer.clear()
            _ = try FileIO.read(fd, at: position, length: header.totalSize, into: &buffer, path: logPath)
            do {
                _ = try RecordBatch.validate(buffer, limits: limits, context: "batch at offset \(header.baseOffset)")
            } catch {
                reason = error.message
                break
            }
            if let last = lastAppendTime, header.appendTime < last {
                reason = "append time going backwards at offset \(header.baseOffset)"
                break
            }
            recordAppended(header, at: position, indexInterval: indexInterval, persist: false)
            position += header.totalSize
            batches += 1
        }
        return (position, batches, reason)
    }

    /// Cuts the file to `length` bytes.
    func truncate(to length: Int) throws(TelexError) {
        try FileIO.truncate(fd, to: length, path: logPath)
        size = length
    }

    /// Removes the segment's files; open readers keep working on the unlinked file. Blocking: call it outside
    /// the log's lock.
    func deleteFiles() throws(TelexError) {
        try FileIO.remove(logPath)
        try FileIO.remove(indexPath)
        try FileIO.remove(timeIndexPath)
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

    let segment: Segment
    let limit: Int
    let windowBytes: Int
    private var buffer = ByteBuffer()
    /// File position of the buffer's first byte.
    private var start = 0
    /// Position of the last header returned, to tell how far the walk jumped.
    private var previous: Int?

    init(_ segment: Segment, limit: Int, windowBytes: Int = HeaderWindow.defaultBytes) {
        precondition(windowBytes >= RecordBatchHeader.size, "a header window must hold one header")
        self.segment = segment
        self.limit = limit
        self.windowBytes = windowBytes
    }

    /// The batch header at `position`; nil when fewer than a header's bytes remain below `limit`.
    mutating func header(at position: Int) throws(TelexError) -> RecordBatchHeader? {
        guard position + RecordBatchHeader.size <= limit else { return nil }
        if position < start || position + RecordBatchHeader.size > start + buffer.readableBytes {
            let jump = previous.map { position - $0 } ?? 0
            let wanted = jump >= windowBytes ? RecordBatchHeader.size : windowBytes
            buffer.clear()
            start = position
            let count = try FileIO.read(
                segment.fd, at: position, length: min(wanted, limit - position), into: &buffer, path: segment.logPath)
            guard count >= RecordBatchHeader.size else { return nil }
        }
        previous = position
        return RecordBatchHeader.peek(buffer, at: position - start)
    }
}
