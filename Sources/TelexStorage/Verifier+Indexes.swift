import NIOCore
import TelexProtocol

/// Checks of a segment's `.index` and `.timeindex` against the batches its `.log` walk found.
extension StorageVerifier.Run {
    /// Checks `bytes`, the `.index` (nil if missing): whole entries, increasing, the first `(0, 0)`, each at the
    /// start of the batch with the offset it claims.
    mutating func verifyOffsetIndex(
        _ topic: String, _ file: String, _ bytes: ByteBuffer?, baseOffset: Int64, walk: StorageVerifier.LogWalk
    ) {
        guard var bytes else {
            return add(topic, file, nil, nil, StorageVerifier.Finding.missingIndex)
        }
        let whole = bytes.readableBytes / OffsetIndexEntry.size * OffsetIndexEntry.size
        if whole != bytes.readableBytes {
            add(topic, file, whole, nil, "a partial entry of \(bytes.readableBytes - whole) bytes at the end")
        }
        if whole == 0, walk.size > 0 { add(topic, file, nil, nil, "empty, but the log holds batches") }
        var previous: (relative: UInt32, position: UInt32)?
        var entryPosition = 0
        while let (relative, position) = bytes.readMultipleIntegers(as: (UInt32, UInt32).self) {
            defer { entryPosition += OffsetIndexEntry.size }
            let offset = baseOffset + Int64(relative)
            let entry = "entry (\(relative), \(position))"
            // (0, 0), or in a compacted segment whose first batch starts later, that batch's (STORAGE.md §15.2).
            let first = walk.batchAtPosition[0].map { UInt32(clamping: $0.baseOffset - baseOffset) } ?? 0
            if previous == nil, relative != first || position != 0 {
                add(topic, file, entryPosition, offset, "the first \(entry) must be (\(first), 0)")
            }
            if let previous, relative <= previous.relative || position <= previous.position {
                add(topic, file, entryPosition, offset,
                    "\(entry) does not increase on the previous (\(previous.relative), \(previous.position))")
            }
            previous = (relative, position)
            // An entry into a damaged range names a batch already reported as damaged.
            if walk.damagedBytes.contains(where: { $0.contains(Int(position)) }) { continue }
            if let header = walk.batchAtPosition[Int(position)] {
                if header.baseOffset != offset {
                    add(topic, file, entryPosition, offset,
                        "\(entry) points at byte \(position), which holds the batch at offset \(header.baseOffset)")
                }
            } else if Int(position) >= walk.size {
                add(topic, file, entryPosition, offset,
                    "\(entry) points at byte \(position), past the end of the log (\(walk.size) bytes)")
            } else if Int(position) < walk.checkedBytes {
                add(topic, file, entryPosition, offset, "\(entry) points at byte \(position), where no batch starts")
            }
            // Entries inside a part of the log the walk could not read are not checkable; the log's finding says why.
        }
    }

    /// Checks `bytes`, the `.timeindex` (nil if missing): whole entries, in order, each naming a batch appended
    /// at exactly its time.
    mutating func verifyTimeIndex(
        _ topic: String, _ file: String, _ bytes: ByteBuffer?, baseOffset: Int64, walk: StorageVerifier.LogWalk
    ) {
        guard var bytes else {
            return add(topic, file, nil, nil, StorageVerifier.Finding.missingIndex)
        }
        let whole = bytes.readableBytes / TimeIndexEntry.size * TimeIndexEntry.size
        if whole != bytes.readableBytes {
            add(topic, file, whole, nil, "a partial entry of \(bytes.readableBytes - whole) bytes at the end")
        }
        if whole == 0, walk.size > 0 { add(topic, file, nil, nil, "empty, but the log holds batches") }
        var previous: (timestamp: Int64, relative: UInt32)?
        var entryPosition = 0
        while let (timestamp, relative) = bytes.readMultipleIntegers(as: (Int64, UInt32).self) {
            defer { entryPosition += TimeIndexEntry.size }
            let offset = baseOffset + Int64(relative)
            let entry = "entry (\(timestamp), \(relative))"
            if let previous, timestamp <= previous.timestamp || relative < previous.relative {
                add(topic, file, entryPosition, offset,
                    "\(entry) does not follow the previous (\(previous.timestamp), \(previous.relative)) in order")
            }
            previous = (timestamp, relative)
            if walk.damagedOffsets.contains(where: { $0.contains(offset) }) { continue }
            if let header = walk.batchAtOffset[offset] {
                if header.appendTime != timestamp {
                    add(topic, file, entryPosition, offset,
                        "\(entry) names the batch at offset \(offset), appended at \(header.appendTime)")
                }
            } else if walk.checkedBytes == walk.size {
                add(topic, file, entryPosition, offset, "\(entry) names offset \(offset), where no batch starts")
            }
        }
    }
}
