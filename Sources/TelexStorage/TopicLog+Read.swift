import TelexProtocol

/// Reading: whole stored batches for delivery, served around damaged ranges (Protocol/STORAGE.md §4).
extension TopicLog {
    /// Whole stored batches starting with the one that holds `offset`, up to `maxBytes` (at least one batch)
    /// and `maxBatches`; nil when `offset` is at or past the readable end. Offsets below the log start throw.
    ///
    /// Never walks through a damaged range: a read reaching one gets the batches before it; one starting in it
    /// throws `DATA_LOSS` naming the lost offsets, or with `skipDamaged` continues after it. A gap between
    /// segments (offsets no segment holds) is handled the same way. Batches of a segment not CRC-checked yet
    /// (sealed before the log opened) are checked when first read, once, on the caller's thread: callers on an
    /// event loop use `readForDelivery` instead.
    ///
    /// Reads batch headers from the page cache (a 64 KiB window at a time), not the batches themselves, except for
    /// that first check.
    ///
    /// With an archive, offsets below the oldest local segment are read from the archived segment holding them
    /// (Protocol/STORAGE.md §4.1); one not open yet is fetched and CRC-checked here, waiting for the tier's fetch
    /// task: do not call this from a thread of the Swift concurrency pool or of Dispatch's global queues.
    public func read(
        from offset: Int64, maxBytes: Int, maxBatches: Int = .max, skipDamaged: Bool = false
    ) throws(TelexError) -> LogSlice? {
        switch try read(from: offset, maxBytes: maxBytes, maxBatches: maxBatches, skipDamaged: skipDamaged,
                        checkHere: true) {
        case .slice(let slice): slice
        case .end, .needsCheck, .needsFetch: nil
        }
    }

    /// What `readForDelivery` found.
    public enum DeliveryRead: Sendable {
        case slice(LogSlice)
        /// `offset` is at or past the readable end.
        case end
        /// The read reached bytes of a sealed segment not CRC-checked yet: run `checkSegment(containing: offset)`
        /// off the event loop, then read again.
        case needsCheck(offset: Int64)
        /// The read reached an archived segment (below the local log) not open yet: run
        /// `fetchArchived(containing: offset)`, then read again.
        case needsFetch(offset: Int64)
    }

    /// `read` for a caller on an event loop: it never CRC-checks on the caller's thread (that is a read of up to a
    /// whole segment, and maybe copies with fsyncs) but says which segment needs checking first, wherever the read
    /// got to (past damage with `skipDamaged`, or across a gap between segments).
    ///
    /// With `continuing`, the slice ends before the first batch after its first for which `continuing` (given the
    /// batch's offsets) is false: a latest or history subscription reads only batches holding offsets it selected.
    public func readForDelivery(
        from offset: Int64, maxBytes: Int, maxBatches: Int = .max, skipDamaged: Bool = false,
        continuing: ((Range<Int64>) -> Bool)? = nil
    ) throws(TelexError) -> DeliveryRead {
        try read(from: offset, maxBytes: maxBytes, maxBatches: maxBatches, skipDamaged: skipDamaged, checkHere: false,
                 continuing: continuing)
    }

    private func read(
        from offset: Int64, maxBytes: Int, maxBatches: Int, skipDamaged: Bool, checkHere: Bool,
        continuing: ((Range<Int64>) -> Bool)? = nil
    ) throws(TelexError) -> DeliveryRead {
        var offset = offset
        while true {
            // The lease is taken under the lock, while the segment is still in the log: retention may unlink its
            // files as soon as the lock is released, and the lease keeps them readable.
            let location = try state.withLock { state throws(TelexError) -> Location in
                let start = state.segments.first!.baseOffset
                if offset < start, archive != nil { return .archived(localStart: start, end: readableEnd(state)) }
                guard offset >= start else {
                    throw TelexError(.offsetOutOfRange,
                                     "offset \(offset) is out of range for \(topic) (log starts at \(start))",
                                     topic: topic, offset: offset)
                }
                let end = readableEnd(state)
                guard offset < end else { return .end }
                let index = state.segmentIndex(containing: offset)
                let segment = state.segments[index]
                return .local(Located(
                    segment: segment, lease: try segment.logFile.lease(),
                    position: segment.indexedPosition(atOrBefore: offset).position, limit: segment.size, end: end,
                    following: index + 1 < state.segments.count ? state.segments[index + 1].baseOffset : nil,
                    segmentEnd: segment.nextOffset, damaged: segment.damaged, verifiedBytes: segment.verified.bytes))
            }
            let located: Located
            switch location {
            case .end: return .end
            case .local(let found): located = found
            case .archived(let localStart, let end):
                switch try readArchived(from: offset, localStart: localStart, end: end, maxBytes: maxBytes,
                                        maxBatches: maxBatches, fetching: checkHere, skipDamaged: skipDamaged,
                                        continuing: continuing) {
                case .slice(let slice): return .slice(slice)
                case .needsFetch(let at): return .needsFetch(offset: at)
                case .continueAt(let next): offset = next
                }
                continue
            }
            if let damage = located.damaged.first(where: { $0.contains(offset) }) {
                guard skipDamaged else { throw dataLoss(damage, in: located.segment) }
                offset = damage.nextOffset
                continue
            }
            // Start after any damage between the indexed batch and `offset`, and stop before the next damage.
            var position = located.position
            for damage in located.damaged where damage.nextOffset <= offset && damage.end > position {
                position = damage.end
            }
            let walkLimit = located.damaged.first { $0.position >= position }?.position ?? located.limit
            var headers = HeaderWindow(located.lease, limit: walkLimit)
            if let slice = try collect(&headers, from: position, offset: offset, end: located.end,
                                       maxBytes: maxBytes, maxBatches: maxBatches, continuing: continuing) {
                let sliceEnd = slice.position + slice.length
                if sliceEnd > located.verifiedBytes {
                    guard checkHere else { return .needsCheck(offset: offset) }
                    // Then read again from a new snapshot: this check, or one that finished meanwhile on another
                    // thread, may have found damage that the slice from the old snapshot runs across.
                    _ = try verify(located.segment, through: sliceEnd, limit: located.limit,
                                   following: located.following)
                    continue
                }
                return .slice(slice)
            }
            // No batch found: before calling it a gap, the walk must have been over CRC-checked bytes only (a
            // flipped `batchLength` in a segment trusted at open makes it jump into garbage). Check, then read again.
            if located.verifiedBytes < located.limit {
                guard checkHere else { return .needsCheck(offset: offset) }
                _ = try verify(located.segment, through: located.limit, limit: located.limit,
                               following: located.following)
                continue
            }
            // The offset fell in a gap between segments (bytes lost from a segment's end): the offsets are lost.
            guard let following = located.following, following > offset else { return .end }
            // Offsets a compaction or purge removed (Protocol/STORAGE.md §15): not lost, just gone.
            if located.segment.compaction != nil {
                offset = following
                continue
            }
            guard skipDamaged else { throw gapLoss(from: located.segmentEnd, to: following, at: offset) }
            offset = following
        }
    }

    /// The error for a read that starts in a gap between segments: offsets `first` up to `next` are in no file.
    func gapLoss(from first: Int64, to next: Int64, at offset: Int64) -> TelexError {
        let first = min(first, offset)
        let lost = next - first == 1
            ? "offset \(first) of \(topic) is" : "offsets \(first)-\(next - 1) of \(topic) are"
        return TelexError(.dataLoss,
            "\(lost) lost: no segment holds them (the next segment starts at offset \(next)); subscribe with skip-damaged to read on from offset \(next)",
            topic: topic, offset: offset)
    }

    /// Where a read goes, decided under the lock.
    private enum Location {
        case local(Located)
        /// Below the oldest local segment, which starts at `localStart`; `end` is the readable end.
        case archived(localStart: Int64, end: Int64)
        case end
    }

    /// Where a read found `offset`, taken under the lock.
    private struct Located {
        var segment: Segment
        var lease: FileLease
        /// Position of the indexed batch at or before the offset.
        var position: Int
        /// The segment's size.
        var limit: Int
        /// The readable end of the log.
        var end: Int64
        /// The next segment's base offset, if any.
        var following: Int64?
        /// The segment's next offset: where a gap before `following` starts.
        var segmentEnd: Int64
        var damaged: [DamagedRange]
        var verifiedBytes: Int
    }

    func collect(
        _ headers: inout HeaderWindow, from position: Int, offset: Int64, end: Int64, maxBytes: Int, maxBatches: Int,
        continuing: ((Range<Int64>) -> Bool)?
    ) throws(TelexError) -> LogSlice? {
        var position = position
        var header = try headers.header(at: position)
        while let current = header, current.nextOffset <= offset {
            position += current.totalSize
            header = try headers.header(at: position)
        }
        guard let first = header, first.baseOffset < end else { return nil }
        let startPosition = position
        var bytes = 0
        var count = 0
        var next = first.baseOffset
        while let current = header, current.baseOffset < end,
            count == 0 || (bytes + current.totalSize <= maxBytes && count < maxBatches
                && continuing?(current.baseOffset..<current.nextOffset) != false)
        {
            bytes += current.totalSize
            count += 1
            next = current.nextOffset
            position += current.totalSize
            header = try headers.header(at: position)
        }
        return LogSlice(log: headers.log, position: startPosition, length: bytes,
                        firstOffset: first.baseOffset, nextOffset: next, batchCount: count)
    }
}
