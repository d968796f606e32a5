#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import TelexProtocol

/// Recovery on open and damaged ranges: a torn tail is cut, corruption followed by valid batches is kept in place,
/// copied aside, logged, counted, and served around (Protocol/STORAGE.md §6).
extension TopicLog {
    /// The directory, inside the topic's, where damaged bytes are copied.
    static let damagedDirectoryName = "damaged"

    /// Checks and repairs `segments` (oldest first) as the log opens. A sealed segment below `unsealedFrom` (the
    /// recovery point) whose indexes load and agree with its headers is trusted, unless damage was copied aside from
    /// it before: then it is scanned again, so the damaged ranges are known on every open. The active segment is always scanned to its end. A torn tail (bad
    /// bytes with no valid batch after them) is cut; damaged ranges stay. Returns how many segments it scanned.
    static func recoverSegments(
        _ segments: [Segment], directory: String, configuration: LogConfiguration, logger: Logger, metrics: TopicMetrics,
        unsealedFrom: Int64
    ) throws(TelexError) -> Int {
        var scanned = 0
        let asideNames = (try? FileIO.listDirectory(directory + "/" + damagedDirectoryName)) ?? []
        for (index, segment) in segments.enumerated() {
            let isActive = index == segments.count - 1
            if index > 0, segment.baseOffset < segments[index - 1].nextOffset {
                throw TelexError(.storageFailure,
                    "\(segment.logPath) starts at offset \(segment.baseOffset) but the previous segment ends at \(segments[index - 1].nextOffset); move one aside")
            }
            let prefix = Segment.fileName(segment.baseOffset, "-")
            let wasDamaged = asideNames.contains { $0.hasPrefix(prefix) && !$0.hasSuffix("-torn.bin") }
            // A segment at or above the recovery point may have been rolled away from without its sealing fsyncs
            // (a crash before the sync round): even with sound indexes it is scanned and CRC-checked (§6).
            let mayBeUnsealed = segment.baseOffset >= unsealedFrom
            if !isActive, !wasDamaged, try segment.loadIndexes(),
                try segment.loadTail(indexInterval: configuration.indexIntervalBytes)
            {
                if !mayBeUnsealed {
                    guard configuration.indexKeys else { continue }
                    // A sealed segment's key index comes from its `.keys`; one missing, damaged or stale is rebuilt
                    // by scanning the segment (§14.2).
                    switch segment.storedKeys() {
                    case .success(let keys):
                        segment.keySummary = SealedKeySummary(keys)
                        continue
                    case .failure(let error):
                        logger.warning("rebuilding key index", metadata: [
                            "segment": "\(segment.logPath)", "reason": "\(error.message)",
                        ])
                    }
                }
            } else if !isActive, !wasDamaged {
                logger.warning("rebuilding index", metadata: ["segment": "\(segment.logPath)"])
            }
            scanned += 1
            // The active segment has no `.keys` (one is written when it is sealed); a leftover one (its successor
            // lost in a crash) would go stale with the next append.
            if isActive, FileIO.exists(segment.keysPath) { try FileIO.remove(segment.keysPath) }
            let scan = try segment.recover(indexInterval: configuration.indexIntervalBytes,
                                           limits: configuration.batchLimits,
                                           following: isActive ? nil : segments[index + 1].baseOffset,
                                           indexKeys: configuration.indexKeys)
            logAppendTimesGoingBackwards(scan, in: segment, logger: logger)
            for damage in scan.damaged {
                reportDamage(damage, in: segment, directory: directory, logger: logger, metrics: metrics, found: "on open")
            }
            if let reason = scan.tornReason {
                let copy = tornPath(segment, at: scan.end, directory: directory)
                do throws(TelexError) {
                    try copyAside(scan.end, length: segment.size - scan.end, from: segment, to: copy,
                                  directory: directory + "/" + damagedDirectoryName)
                } catch {
                    // The tail is cut anyway: it was never acknowledged, and keeping it would stop the log opening.
                    logger.error("could not copy torn log tail aside", metadata: ["path": "\(copy)", "error": "\(error)"])
                }
                logger.warning("cut torn log tail", metadata: [
                    "segment": "\(segment.logPath)", "position": "\(scan.end)",
                    "droppedBytes": "\(segment.size - scan.end)", "keptBatches": "\(scan.batches)",
                    "reason": "\(reason)", "copy": "\(copy)",
                ])
                try segment.truncate(to: scan.end)
                try segment.syncLog()
            }
            try segment.rewriteIndexes()
            // A scanned sealed segment's `.keys` is rewritten unless it already holds what the scan found.
            guard !isActive, configuration.indexKeys else { continue }
            let stored = try? segment.storedKeys().get()
            let keys = segment.sealKeysAfterScan()
            if stored?.entries != keys.entries {
                let table = KeyTableFile(baseOffset: segment.baseOffset, nextOffset: segment.nextOffset,
                                         logSize: Int64(segment.size), keys: keys)
                do throws(TelexError) {
                    try segment.writeKeys(table)
                } catch {
                    logger.warning("could not write the key index; the next open rebuilds it",
                                   metadata: ["path": "\(segment.keysPath)", "error": "\(error)"])
                }
            }
        }
        return scanned
    }

    /// Logs each valid batch whose append time is before an earlier one's (a warning: the time is outside the CRC).
    static func logAppendTimesGoingBackwards(_ scan: SegmentScan, in segment: Segment, logger: Logger) {
        for (offset, appendTime, newest) in scan.appendTimesGoingBackwards {
            logger.warning("append time going backwards", metadata: [
                "segment": "\(segment.logPath)", "offset": "\(offset)", "appendTime": "\(appendTime)",
                "newestBefore": "\(newest)",
            ])
        }
    }

    /// Where a cut torn tail of `segment` starting at `position` is copied: `damaged/<segment base>-<position>-torn.bin`.
    static func tornPath(_ segment: Segment, at position: Int, directory: String) -> String {
        directory + "/" + damagedDirectoryName + "/" + Segment.fileName(segment.baseOffset, "-\(position)-torn.bin")
    }

    /// Where the bytes of `damage` in `segment` are copied: `damaged/<segment base>-<position>.bin`.
    static func asidePath(_ damage: DamagedRange, in segment: Segment, directory: String) -> String {
        directory + "/" + damagedDirectoryName + "/" + Segment.fileName(segment.baseOffset, "-\(damage.position).bin")
    }

    /// Copies the damaged bytes aside (once: an existing copy is kept; not with `copy` false, for a closed log),
    /// logs at error level and counts the range. A copy that cannot be made is logged; the log still opens and
    /// serves around the damage.
    static func reportDamage(
        _ damage: DamagedRange, in segment: Segment, directory: String, logger: Logger, metrics: TopicMetrics,
        found: String, copy: Bool = true
    ) {
        let path = asidePath(damage, in: segment, directory: directory)
        do throws(TelexError) {
            if copy {
                try copyAside(damage.position, length: damage.length, from: segment, to: path,
                              directory: directory + "/" + damagedDirectoryName)
            }
        } catch {
            logger.error("could not copy damaged bytes aside", metadata: ["path": "\(path)", "error": "\(error)"])
        }
        logger.error("damaged batches in log: serving around them", metadata: [
            "segment": "\(segment.logPath)", "position": "\(damage.position)", "bytes": "\(damage.length)",
            "firstOffset": "\(damage.firstOffset)", "nextOffset": "\(damage.nextOffset)", "copy": "\(path)",
            "found": "\(found)",
        ])
        metrics.damagedRanges.increment()
    }

    private static func copyAside(
        _ position: Int, length: Int, from segment: Segment, to path: String, directory: String
    ) throws(TelexError) {
        guard !FileIO.exists(path) else { return }
        var bytes = ByteBuffer()
        try segment.logFile.withDescriptor { fd throws(TelexError) in
            _ = try FileIO.read(fd, at: position, length: length, into: &bytes, path: segment.logPath)
        }
        try FileIO.makeDirectory(directory)
        try FileIO.replaceAtomically(path, in: directory, with: bytes)
    }

    /// The error for a read that starts in `damage`: the lost offsets, where the bytes were, and what to do.
    func dataLoss(_ damage: DamagedRange, in segment: Segment) -> TelexError {
        let lost = damage.nextOffset - damage.firstOffset == 1
            ? "offset \(damage.firstOffset) of \(topic) is" : "offsets \(damage.firstOffset)-\(damage.nextOffset - 1) of \(topic) are"
        return TelexError(.dataLoss,
            "\(lost) lost: bytes \(damage.position)-\(damage.end - 1) of \(segment.logPath) are damaged (copied to \(Self.asidePath(damage, in: segment, directory: directory))); subscribe with skip-damaged to read on from offset \(damage.nextOffset)",
            topic: topic, offset: damage.firstOffset)
    }

    /// Whether reading `offset` would first CRC-check batches nobody has checked yet (in a segment that was sealed
    /// when the log opened). Cheap: looks at in-memory state only. A caller on an event loop reads with
    /// `readForDelivery`, which answers `needsCheck(offset:)` instead of checking, wherever the read got to.
    public func needsCheck(at offset: Int64) -> Bool {
        state.withLock { state in
            guard offset >= state.segments.first!.baseOffset, offset < readableEnd(state) else { return false }
            let segment = state.segments[state.segmentIndex(containing: offset)]
            return segment.verified.bytes < segment.size
        }
    }

    /// CRC-checks what is left unchecked of the segment holding `offset`, recording any damage (see `verify`).
    /// Blocking: reads up to a whole segment. Call it off event loops.
    public func checkSegment(containing offset: Int64) throws(TelexError) {
        let located = state.withLock { state -> (Segment, Int, Int64?)? in
            guard offset >= state.segments.first!.baseOffset else { return nil }
            let index = state.segmentIndex(containing: offset)
            let following = index + 1 < state.segments.count ? state.segments[index + 1].baseOffset : nil
            return (state.segments[index], state.segments[index].size, following)
        }
        guard let (segment, size, following) = located else { return }
        _ = try verify(segment, through: size, limit: size, following: following)
    }

    /// CRC-checks the batches of `segment` from where earlier checks stopped through file position `target`
    /// (segments loaded from their indexes on open were not checked). Returns true if it found damage not known
    /// before, which it records, copies aside, logs and counts. `following` is the next segment's base offset:
    /// a damaged range at the end of a sealed segment runs to it.
    func verify(_ segment: Segment, through target: Int, limit: Int, following: Int64?) throws(TelexError) -> Bool {
        let (from, tailNextOffset) = state.withLock { _ in (segment.verified, following ?? segment.nextOffset) }
        guard from.bytes < target else { return false }
        let scan = try segment.scan(from: from.bytes, offset: from.nextOffset, lastAppendTime: from.lastAppendTime,
                                    target: target, limit: limit, tailNextOffset: tailNextOffset,
                                    limits: configuration.batchLimits)
        Self.logAppendTimesGoingBackwards(scan, in: segment, logger: logger)
        let found = state.withLock { state -> [DamagedRange] in
            // A rewrite replaced the segment meanwhile: the scan may have read the new file with the old positions.
            guard state.segments.contains(where: { $0 === segment }) else { return [] }
            let new = scan.damaged.filter { damage in !segment.damaged.contains { $0.position == damage.position } }
            segment.damaged = (segment.damaged + new).sorted { $0.position < $1.position }
            if scan.end > segment.verified.bytes {
                segment.verified = Segment.Verified(bytes: scan.end, nextOffset: scan.nextOffset,
                                                    lastAppendTime: scan.lastAppendTime)
            }
            return new
        }
        // The copies aside are written only while the log is open (see `directoryClosed`).
        directoryClosed.withLock { closed in
            for damage in found {
                Self.reportDamage(damage, in: segment, directory: directory, logger: logger, metrics: metrics,
                                  found: "while serving", copy: !closed)
            }
        }
        return !found.isEmpty
    }
}
