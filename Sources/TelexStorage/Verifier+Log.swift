#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import TelexProtocol

/// The walk over a segment's `.log`: every batch checked, and damage stepped over to the next valid batch.
extension StorageVerifier.Run {
    /// Walks every batch of a `.log`; nil if the file is gone.
    mutating func walkLog(
        _ topic: String, path: String, baseOffset: Int64, chain: inout StorageVerifier.TopicChain
    ) throws(TelexError) -> StorageVerifier.LogWalk? {
        let file = String(path.split(separator: "/").last!)
        guard let fd = try StorageVerifier.openIfPresent(path) else { return nil }
        defer { close(fd) }
        var window = try StorageVerifier.FileWindow(fd: fd, path: path)
        let size = window.size
        if let previousEnd = chain.previousEnd, baseOffset < previousEnd {
            add(topic, file, nil, baseOffset, """
                segment starts at offset \(baseOffset) but the previous segment ends at \(previousEnd); \
                the broker refuses to open this topic
                """)
        }
        var walk = StorageVerifier.LogWalk(size: size)
        // A compacted segment's offsets may jump ahead, and it ends at its marker's end offset (STORAGE.md §15).
        let directory = String(path.dropLast(file.count + 1))
        let compaction = CompactionMarker.load(directory: directory, baseOffset: baseOffset)
        if compaction?.valid == false {
            add(topic, Segment.fileName(baseOffset, CompactionMarker.suffix), nil, nil,
                "not a valid compaction marker (size, magic, version or CRC); the segment is read as compacted")
        }
        var position = 0
        var expected = baseOffset
        // After a batch whose base offset was wrong, the next may follow either the chain or that batch.
        var alternative: Int64?
        // After damage the record count before is not trusted, so the next base offset is taken as found.
        var chainTrusted = true
        while position < size {
            guard let header = try window.header(at: position) else {
                add(topic, file, position, expected,
                    "truncated: \(size - position) bytes at the end of the file are less than a batch header")
                break
            }
            let fits = header.totalSize >= RecordBatchHeader.size && position + header.totalSize <= size
            let batch = fits ? try window.slice(at: position, length: header.totalSize) : nil
            let problem = batch.flatMap { checkBatch($0, header: header) }
            // A damaged batch whose successor is sound is a batch in place; otherwise its length is not trusted.
            var inPlace = batch != nil && problem == nil
            if batch != nil, problem != nil {
                inPlace = try isSound(&window, at: position + header.totalSize, notBelow: baseOffset)
            }
            if inPlace {
                report.batches += 1
                var next = header.nextOffset
                if chainTrusted, header.baseOffset != expected, header.baseOffset != alternative,
                    compaction == nil || header.baseOffset < expected
                {
                    add(topic, file, position, header.baseOffset,
                        "base offset \(header.baseOffset) where \(expected) was expected (offset chain broken)")
                    alternative = next
                    next = expected + Int64(header.recordCount)
                } else {
                    alternative = nil
                }
                if let problem { add(topic, file, position, header.baseOffset, problem) }
                chainTrusted = problem == nil
                if let last = chain.lastAppendTime, header.appendTime < last {
                    add(topic, file, position, header.baseOffset,
                        "append time \(header.appendTime) is earlier than the previous batch's \(last)")
                }
                chain.lastAppendTime = max(chain.lastAppendTime ?? header.appendTime, header.appendTime)
                walk.batchAtPosition[position] = header
                walk.batchAtOffset[header.baseOffset] = header
                if problem == nil, let batch {
                    walk.keys.add(batch, header: header, segmentBase: baseOffset, limits: limits)
                }
                expected = next
                position += header.totalSize
                continue
            }
            let what = problem ?? (header.totalSize < RecordBatchHeader.size
                ? "batchLength \(header.batchLength) is below the minimum"
                : "the batch declares \(header.totalSize) bytes but \(size - position) remain")
            guard let resume = try nextSoundBatch(&window, after: position, notBelow: expected) else {
                add(topic, file, position, expected, problem == nil && header.totalSize >= RecordBatchHeader.size
                    ? "truncated: \(what)" : "\(what); no valid batch follows in the \(size - position) bytes from here")
                break
            }
            add(topic, file, position, expected, """
                \(what); bytes \(position)..<\(resume.position) are damaged, the next valid batch is at byte \
                \(resume.position) (offset \(resume.header.baseOffset))
                """)
            walk.damagedBytes.append(position..<resume.position)
            if resume.header.baseOffset > expected { walk.damagedOffsets.append(expected..<resume.header.baseOffset) }
            chainTrusted = false
            position = resume.position
        }
        walk.checkedBytes = position
        let end = compaction.map { $0.valid ? max(expected, $0.endOffset) : expected } ?? expected
        walk.nextOffset = end
        chain.previousEnd = end
        return walk
    }

    /// CRC first (the message names both values), then the broker's validation and, for a compressed batch,
    /// inflating and walking its records. Returns what is wrong, or nil for an intact batch.
    mutating func checkBatch(_ batch: ByteBuffer, header: RecordBatchHeader) -> String? {
        let crc = StorageVerifier.crc(of: batch, header: header)
        guard crc == header.crc else {
            return "CRC mismatch (stored \(RecordBatch.hex(header.crc)), computed \(RecordBatch.hex(crc)))"
        }
        do {
            _ = try RecordBatch.validate(batch, limits: limits, context: "batch")
            if header.codec != Codec.none {
                _ = try RecordBatch.decodeRecords(
                    batch, limits: limits, decompressor: decompressor, context: "batch", scratch: &scratch)
            }
            return nil
        } catch {
            return error.message
        }
    }

    /// Whether `position` is the end of the file or the start of a batch that looks whole and whose CRC holds.
    func isSound(
        _ window: inout StorageVerifier.FileWindow, at position: Int, notBelow offset: Int64
    ) throws(TelexError) -> Bool {
        guard position < window.size else { return true }
        return try soundBatch(&window, at: position, notBelow: offset) != nil
    }

    /// The first sound batch after `position`, looked for byte by byte.
    func nextSoundBatch(
        _ window: inout StorageVerifier.FileWindow, after position: Int, notBelow offset: Int64
    ) throws(TelexError) -> (position: Int, header: RecordBatchHeader)? {
        var candidate = position + 1
        while candidate + RecordBatchHeader.size <= window.size {
            if let header = try soundBatch(&window, at: candidate, notBelow: offset) { return (candidate, header) }
            candidate += 1
        }
        return nil
    }

    /// The header at `position` if a batch starts there: known magic and codec, at least one record, a length
    /// inside the file, a base offset not below `offset`, and a CRC that holds.
    private func soundBatch(
        _ window: inout StorageVerifier.FileWindow, at position: Int, notBelow offset: Int64
    ) throws(TelexError) -> RecordBatchHeader? {
        guard let header = try window.header(at: position), header.magic == RecordBatchHeader.currentMagic,
            header.codec != nil, header.recordCount >= 1, header.baseOffset >= offset,
            header.totalSize >= RecordBatchHeader.size, position + header.totalSize <= window.size,
            let batch = try window.slice(at: position, length: header.totalSize)
        else { return nil }
        return StorageVerifier.crc(of: batch, header: header) == header.crc ? header : nil
    }
}

extension StorageVerifier {
    /// The CRC of a whole batch's covered bytes (PROTOCOL.md §6.4).
    static func crc(of batch: ByteBuffer, header: RecordBatchHeader) -> UInt32 {
        CRC32.checksum(batch.getSlice(at: batch.readerIndex + RecordBatchHeader.crcStart,
                                      length: header.totalSize - RecordBatchHeader.crcStart)!)
    }

    /// Reads a file through a 1 MiB window, so a walk over small batches costs one `pread` per window.
    struct FileWindow {
        static let windowBytes = 1 << 20
        let fd: CInt
        let path: String
        /// The size when opened; nothing past it is read.
        let size: Int
        private var buffer = ByteBuffer()
        /// File position of the buffer's first readable byte.
        private var start = 0

        init(fd: CInt, path: String) throws(TelexError) {
            self.fd = fd
            self.path = path
            size = try FileIO.size(fd, path: path)
        }

        /// `length` bytes at `position`; nil if they run past `size`.
        mutating func slice(at position: Int, length: Int) throws(TelexError) -> ByteBuffer? {
            guard position + length <= size else { return nil }
            if position < start || position + length > start + buffer.readableBytes {
                buffer.clear()
                start = position
                let wanted = min(max(length, Self.windowBytes), size - position)
                let count = try FileIO.read(fd, at: position, length: wanted, into: &buffer, path: path)
                // The file shrank under us (a truncating recovery): treat the rest as absent.
                guard count >= length else { return nil }
            }
            return buffer.getSlice(at: buffer.readerIndex + position - start, length: length)
        }

        /// The batch header at `position`; nil if fewer than its 64 bytes are left.
        mutating func header(at position: Int) throws(TelexError) -> RecordBatchHeader? {
            guard let bytes = try slice(at: position, length: RecordBatchHeader.size) else { return nil }
            return RecordBatchHeader.peek(bytes, at: bytes.readerIndex)
        }
    }
}
