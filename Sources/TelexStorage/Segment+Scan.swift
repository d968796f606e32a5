import NIOCore
import TelexProtocol

/// Bytes of a segment that hold no valid batch but are followed by valid ones: corruption, not a torn tail.
/// They stay in the file (Protocol/STORAGE.md §6.2); readers are served around them.
public struct DamagedRange: Sendable, Equatable {
    /// File position of the first damaged byte.
    public var position: Int
    /// Damaged bytes: up to the next valid batch (or the end of a sealed segment, or of the active segment's whole
    /// last batch).
    public var length: Int
    /// The first offset lost: the one after the last valid batch before the damage.
    public var firstOffset: Int64
    /// The first offset after the damage: the base offset of the next valid batch (or the next segment's base).
    public var nextOffset: Int64

    /// File position after the last damaged byte.
    public var end: Int { position + length }

    /// Whether `offset` was stored in the damaged bytes.
    func contains(_ offset: Int64) -> Bool { offset >= firstOffset && offset < nextOffset }
}

/// What a scan of a segment's batches found.
struct SegmentScan {
    /// File position where the scan stopped: after the last valid batch (the target or a torn tail).
    var end: Int
    /// The offset after the last valid batch.
    var nextOffset: Int64
    /// The newest append time of the valid batches (the maximum: a time going backwards is only a warning).
    var lastAppendTime: Int64?
    var batches = 0
    /// Valid batches whose append time is before an earlier batch's: the time is outside the CRC, so a bit flip
    /// can move one forward and make every later batch look older. Logged as warnings, never a failure.
    var appendTimesGoingBackwards: [(offset: Int64, appendTime: Int64, newest: Int64)] = []
    /// Damaged ranges found, in file order.
    var damaged: [DamagedRange] = []
    /// Why the bytes from `end` on are not a batch, when no valid batch follows them (a torn tail).
    var tornReason: String?
}

/// File bytes read a window at a time, for scans that look at every byte position.
private struct ScanWindow {
    static let bytes = 1 << 20
    let log: FileLease
    let limit: Int
    private(set) var buffer = ByteBuffer()
    /// File position of `buffer`'s first byte.
    private(set) var start = 0

    init(_ log: FileLease, limit: Int) {
        self.log = log
        self.limit = limit
    }

    /// Makes `length` bytes at `position` available (fewer near `limit`) and returns the buffer index of `position`.
    mutating func load(_ position: Int, length: Int) throws(TelexError) -> Int? {
        let wanted = min(length, limit - position)
        guard wanted > 0 else { return nil }
        if position < start || position + wanted > start + buffer.readableBytes {
            buffer.clear()
            start = position
            let count = try log.withDescriptor { fd throws(TelexError) in
                try FileIO.read(fd, at: position, length: min(max(length, Self.bytes), limit - position),
                                into: &buffer, path: log.file.path)
            }
            guard count >= wanted else { return nil }
        }
        return position - start
    }
}

extension Segment {
    /// Walks whole batches from `position`, where offset `offset` is expected, checking each one as recovery does
    /// (whole, the expected base offset, `RecordBatch.validate` with its CRC), until `target` (at a batch boundary)
    /// or `limit`. `onBatch` gets each valid batch and its position. An append time going backwards is recorded in
    /// `appendTimesGoingBackwards`, not a failure (bytes 12-19 are outside the CRC).
    ///
    /// A bad batch is followed by a search, byte by byte up to `limit`, for a valid batch with a plausible base
    /// offset (at or above the expected one, within this segment's u32 range) that chains onward (see
    /// `chainsOnward`): if one is found, the bytes in between are a
    /// `DamagedRange` and the walk goes on from there. If none, `tailNextOffset` (a sealed segment's tail, known to
    /// end where the next segment starts) makes the bytes up to `limit` a damaged range; without it (the active
    /// segment) a batch that was written whole (see `wholeDamagedBatch`) is a damaged range (its offsets kept), and
    /// anything else is an incomplete write: the scan ends with `tornReason`.
    func scan(
        from position: Int, offset: Int64, lastAppendTime: Int64?, target: Int, limit: Int,
        tailNextOffset: Int64? = nil, limits: RecordBatchLimits,
        onBatch: (RecordBatchHeader, Int) -> Void = { _, _ in },
        onBatchBytes: ((RecordBatchHeader, ByteBuffer) -> Void)? = nil
    ) throws(TelexError) -> SegmentScan {
        var window = ScanWindow(try logFile.lease(), limit: limit)
        var scan = SegmentScan(end: position, nextOffset: offset, lastAppendTime: lastAppendTime)
        var position = position
        while position < target, position < limit {
            var reason: String?
            // A compacted segment's batches may start above the expected offset (Protocol/STORAGE.md §15).
            if let header = try validBatch(at: position, in: &window, expected: scan.nextOffset,
                                           exact: compaction == nil, limits: limits, reason: &reason) {
                // The batch is still in the window: validation loaded it whole.
                if let onBatchBytes, let start = try window.load(position, length: header.totalSize) {
                    onBatchBytes(header, window.buffer.getSlice(at: start, length: header.totalSize)!)
                }
                accept(header, at: position, into: &scan, onBatch: onBatch)
                position += header.totalSize
                continue
            }
            if case let (candidate, found)? = try nextChainingBatch(after: position, in: &window,
                                                                    expected: scan.nextOffset, limits: limits) {
                scan.damaged.append(DamagedRange(position: position, length: candidate - position,
                                                 firstOffset: scan.nextOffset, nextOffset: found.baseOffset))
                if let onBatchBytes, let start = try window.load(candidate, length: found.totalSize) {
                    onBatchBytes(found, window.buffer.getSlice(at: start, length: found.totalSize)!)
                }
                accept(found, at: candidate, into: &scan, onBatch: onBatch)
                position = candidate + found.totalSize
            } else if let tailNextOffset {
                scan.damaged.append(DamagedRange(position: position, length: limit - position,
                                                 firstOffset: scan.nextOffset, nextOffset: max(tailNextOffset, scan.nextOffset)))
                scan.nextOffset = max(tailNextOffset, scan.nextOffset)
                position = limit
            } else if let (length, next) = try wholeDamagedBatch(at: position, in: &window, expected: scan.nextOffset,
                                                                 limits: limits) {
                scan.damaged.append(DamagedRange(position: position, length: length,
                                                 firstOffset: scan.nextOffset, nextOffset: next))
                scan.nextOffset = next
                position += length
            } else {
                scan.end = position
                scan.tornReason = reason ?? "bytes that are not a batch"
                return scan
            }
        }
        scan.end = position
        return scan
    }

    /// The first valid batch after the bad bytes at `position` that can be trusted as real: a plausible base
    /// offset, its CRC, and a successor that is valid and chains to it (or the end of the bytes right after it),
    /// so that a valid batch stored inside a record's value is not taken for one.
    private func nextChainingBatch(
        after position: Int, in window: inout ScanWindow, expected: Int64, limits: RecordBatchLimits
    ) throws(TelexError) -> (Int, RecordBatchHeader)? {
        var candidate = position + 1
        var ignored: String?
        while candidate + RecordBatchHeader.size <= window.limit {
            if let found = try validBatch(at: candidate, in: &window, expected: expected, exact: false, limits: limits,
                                          reason: &ignored)
            {
                if try chainsOnward(at: candidate + found.totalSize, in: &window, expected: found.nextOffset,
                                    limits: limits)
                {
                    return (candidate, found)
                }
            }
            candidate += 1
        }
        return nil
    }

    /// Whether what follows a candidate at `end` confirms it: the end of the bytes, a valid batch with offset
    /// `expected`, or the start of one cut short by the end of the bytes (a torn write after the candidate).
    private func chainsOnward(
        at end: Int, in window: inout ScanWindow, expected: Int64, limits: RecordBatchLimits
    ) throws(TelexError) -> Bool {
        let remaining = window.limit - end
        if remaining < RecordBatchHeader.size { return true }
        var ignored: String?
        if try validBatch(at: end, in: &window, expected: expected, exact: compaction == nil, limits: limits,
                          reason: &ignored) != nil
        {
            return true
        }
        guard let index = try window.load(end, length: RecordBatchHeader.size),
            let header = RecordBatchHeader.peek(window.buffer, at: index)
        else { return false }
        return header.magic == RecordBatchHeader.currentMagic && header.baseOffset == expected
            && header.totalSize > remaining
    }

    /// The length and next offset of the bad batch at `position` if it is whole and was written whole, so that
    /// its offsets may have been acknowledged (Protocol/STORAGE.md §6.1); nil for an incomplete write.
    ///
    /// First the CRC (bytes 24 on) is tried with the header's length and with the rest of the file as the length:
    /// a match is a whole batch whose `batchLength`, base offset or append time (outside the CRC) were flipped,
    /// and its record count is trusted. Otherwise bytes of the header's length (the rest of the file if that
    /// length is below a header) with no unwritten sector (see `hasUnwrittenSector`) are damage whatever the
    /// header says, ending at the highest offset they could hold. A header longer than the file with no CRC match
    /// is a write cut short.
    private func wholeDamagedBatch(
        at position: Int, in window: inout ScanWindow, expected: Int64, limits: RecordBatchLimits
    ) throws(TelexError) -> (length: Int, nextOffset: Int64)? {
        let remaining = window.limit - position
        guard let index = try window.load(position, length: RecordBatchHeader.size),
            window.buffer.readableBytes - index >= RecordBatchHeader.size,
            let header = RecordBatchHeader.peek(window.buffer, at: index),
            // A header of zeros was never written (no batch has length 0); it also spares reading a long zero tail.
            header != RecordBatchHeader.peek(ByteBuffer(repeating: 0, count: RecordBatchHeader.size), at: 0)
        else { return nil }
        var lengths = [remaining]
        if header.totalSize >= RecordBatchHeader.size, header.totalSize < remaining { lengths.insert(header.totalSize, at: 0) }
        for length in lengths {
            guard let start = try window.load(position, length: length) else { continue }
            let covered = window.buffer.getSlice(at: start + RecordBatchHeader.crcStart,
                                                 length: length - RecordBatchHeader.crcStart)!
            if CRC32.checksum(covered) == header.crc, header.recordCount >= 1,
                Int(header.recordCount) <= limits.maxRecordCount
            {
                return (length, expected + Int64(header.recordCount))
            }
        }
        let length = header.totalSize < RecordBatchHeader.size ? remaining : header.totalSize
        guard length <= remaining, try !hasUnwrittenSector(from: position, length: length, in: &window),
            let start = try window.load(position, length: length)
        else { return nil }
        let count = mostRecords(header, in: window.buffer, at: start, length: length, expected: expected, limits: limits)
        return (length, expected + Int64(count))
    }

    /// How many offsets a whole batch of `length` bytes at `start` in `buffer` whose CRC fails held, erring high
    /// so that no offset handed out is given out again. A record count that one flipped bit made wrong is found by
    /// the CRC. Otherwise a header that passes its checks is believed (with the count its claimed base offset
    /// implies, if higher); failing them, the most records the bytes could hold (each takes at least 16 bytes).
    private func mostRecords(
        _ header: RecordBatchHeader, in buffer: ByteBuffer, at start: Int, length: Int, expected: Int64,
        limits: RecordBatchLimits
    ) -> Int {
        var copy = buffer.getSlice(at: start, length: length)!
        for bit in 0..<32 {
            let count = header.recordCount ^ (1 << UInt32(bit))
            copy.setInteger(count, at: 56)
            if CRC32.checksum(copy.getSlice(at: RecordBatchHeader.crcStart, length: length - RecordBatchHeader.crcStart)!)
                == header.crc, count >= 1, Int(count) <= limits.maxRecordCount
            {
                return Int(count)
            }
        }
        var checked = header
        checked.batchLength = UInt32(length - RecordBatchHeader.lengthPrefixSize)
        if (try? RecordBatch.checkHeader(checked, limits: limits, context: "")) != nil {
            let claimed = header.baseOffset > expected && header.baseOffset - baseOffset <= Int64(UInt32.max)
                ? Int(header.nextOffset - expected) : 0
            return min(max(Int(header.recordCount), claimed), limits.maxRecordCount)
        }
        var most = max(1, (length - RecordBatchHeader.size) / 16)
        if Int(header.uncompressedLength) <= limits.maxUncompressedBytes {
            most = max(most, Int(header.uncompressedLength) / 16)
        }
        return min(most, limits.maxRecordCount)
    }

    /// Whether the `length` bytes at `position` hold a sector never written (segment files are append-only, so a
    /// lost write reads as zeros): an all-zero 512-byte-aligned block, or an all-zero part of one at either end. A
    /// first part counts only if it holds the whole `batchLength` field (bytes 8-11), never zero in a batch: a
    /// shorter one holds only high bytes of the base offset, which are zeros.
    private func hasUnwrittenSector(from position: Int, length: Int, in window: inout ScanWindow) throws(TelexError) -> Bool {
        guard let start = try window.load(position, length: length) else { return true }
        let end = position + length
        var block = position / 512 * 512
        while block < end {
            let from = max(block, position)
            let to = min(block + 512, end)
            block += 512
            if from == position, position % 512 != 0, to - from < RecordBatchHeader.lengthPrefixSize { continue }
            if window.buffer.withUnsafeReadableBytes({ bytes in
                bytes[(start + from - position)..<(start + to - position)].allSatisfy { $0 == 0 }
            }) {
                return true
            }
        }
        return false
    }

    private func accept(
        _ header: RecordBatchHeader, at position: Int, into scan: inout SegmentScan,
        onBatch: (RecordBatchHeader, Int) -> Void
    ) {
        onBatch(header, position)
        scan.nextOffset = header.nextOffset
        if let newest = scan.lastAppendTime, header.appendTime < newest {
            scan.appendTimesGoingBackwards.append((header.baseOffset, header.appendTime, newest))
        }
        scan.lastAppendTime = max(scan.lastAppendTime ?? header.appendTime, header.appendTime)
        scan.batches += 1
        scan.end = position + header.totalSize
    }

    /// The header of the valid batch at `position`, or nil with `reason` saying why there is none. With `exact`
    /// its base offset must be `expected`; otherwise at or above it (a candidate after damage).
    private func validBatch(
        at position: Int, in window: inout ScanWindow, expected: Int64, exact: Bool, limits: RecordBatchLimits,
        reason: inout String?
    ) throws(TelexError) -> RecordBatchHeader? {
        let remaining = window.limit - position
        guard let index = try window.load(position, length: RecordBatchHeader.size),
            window.buffer.readableBytes - index >= RecordBatchHeader.size
        else {
            reason = "a torn batch header (\(remaining) bytes)"
            return nil
        }
        // Most positions inside damage fail here, before a header is parsed.
        guard exact || window.buffer.getInteger(at: index + RecordBatchHeader.crcStart, as: UInt8.self)
            == RecordBatchHeader.currentMagic
        else { return nil }
        let header = RecordBatchHeader.peek(window.buffer, at: index)!
        guard header.totalSize >= RecordBatchHeader.size, header.totalSize <= remaining else {
            reason = "a batch of \(header.totalSize) bytes with only \(remaining) bytes in the file"
            return nil
        }
        guard exact ? header.baseOffset == expected
            : header.baseOffset >= expected && header.baseOffset - baseOffset <= Int64(UInt32.max)
        else {
            reason = "base offset \(header.baseOffset) where \(expected) was expected"
            return nil
        }
        guard let start = try window.load(position, length: header.totalSize) else {
            reason = "a short read at \(position)"
            return nil
        }
        let batch = window.buffer.getSlice(at: start, length: header.totalSize)!
        do {
            _ = try RecordBatch.validate(batch, limits: limits, context: "batch at offset \(header.baseOffset)")
        } catch {
            reason = error.message
            return nil
        }
        return header
    }
}
