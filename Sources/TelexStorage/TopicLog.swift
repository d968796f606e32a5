#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Logging
import NIOCore
import Synchronization
import TelexProtocol

/// One topic's append-only log: segments of whole batches, offsets dense from 0, durable by its fsync policy.
///
/// Thread-safe. Appends write to the page cache under the log's lock; every fsync (group commit, interval,
/// sealing a rolled segment, the directory fsync after a roll) runs on the log's own serial queue and covers
/// every append made before it started. Readers see only durable batches under `.always`.
///
/// Opening a log (recovery) and `sync()`, `close()` and `applyRetention()` block on file I/O: call them off
/// event loops (on an `NIOThreadPool` or a dedicated thread). `append` writes to the page cache and, on a roll,
/// opens the new segment's three files; it never waits for an fsync.
///
/// Segment files are opened through a `FileDescriptorCache` (the store's, or one of `maxOpenFiles` for a log
/// opened on its own): `append` and `read` re-open (under the log's lock) a file the cache closed, one `open(2)`
/// each, and may close other idle files to stay within the budget.
public final class TopicLog: Sendable {
    public let topic: String
    public let directory: String
    public let configuration: LogConfiguration
    let logger: Logger
    /// Metric handles: this topic's (`metrics.topic`) and the store's fsync ones.
    public let metrics: TopicMetrics
    let storeMetrics: TelexMetrics
    let files: FileDescriptorCache
    /// Sealed segments' key tables loaded for queries (Protocol/STORAGE.md §14.1).
    let keyTables: KeyTableCache
    let syncQueue: DispatchQueue
    let state: Mutex<State>
    /// True once `close()` has finished with the directory. Held (outside `state`) by whatever changes the
    /// directory's files after the log opened apart from appends and sync rounds — retention's unlinks, copies of
    /// damaged bytes — and taken by `close()`, so none of them runs after it: `deleteLog` then removes the
    /// directory, and a topic of the same name may be created in it.
    let directoryClosed = Mutex<Bool>(false)
    /// Segments recovery scanned batch by batch when the log opened (the others were trusted by their indexes).
    let segmentsScannedAtOpen: Int
    /// The object-storage tier below the local segments (Protocol/STORAGE.md §4.1), nil without one.
    public let archive: (any ArchiveTier)?
    /// Archived segments open for reads below the local log (`TopicLog+Archive.swift`).
    let archivedOpen = Mutex(ArchivedSegmentCache())

    /// Everything that changes after opening, behind `state`. The `var`s of its segments are guarded by the
    /// same lock (see `Segment`).
    struct State {
        var segments: [Segment]
        var producers: [Int64: ProducerState] = [:]
        var nextOffset: Int64
        /// Everything below is covered by a completed fsync (with the seals and directory fsync it depends on).
        var durableOffset: Int64
        var lastAppendTime: Int64
        var waiters: [(offset: Int64, callback: @Sendable (Result<Void, TelexError>) -> Void)] = []
        /// A sync round is queued on `syncQueue` and has not yet taken its snapshot.
        var syncScheduled = false
        /// Segments rolled away from whose `.log` and indexes are not yet fsynced, oldest first; the topic
        /// directory is fsynced after them, which also makes the new segments' directory entries durable.
        var unsealed: [Segment] = []
        var failure: TelexError?
        /// Producer memory as of the last roll, written once the sync round has sealed the segments below it.
        var pendingProducerSnapshot: ProducerSnapshot?
        /// Set as `close()` returns: a round still queued (a retry) writes no snapshot or recovery point.
        var closedFiles = false
        /// Set by `close()`: appends are refused and the interval fsync stops.
        var closed = false
        /// Interval fsync rounds run so far.
        var intervalRounds = 0
        /// Sync rounds in a row that could not open a file they had to fsync; each retry waits twice as long.
        var unavailableRounds = 0
        /// When a round that could not open a file was last logged (ms since the epoch), to log one per 10 s.
        var lastUnavailableWarning: Int64 = 0

        init(segments: [Segment]) {
            self.segments = segments
            nextOffset = segments.last!.nextOffset
            durableOffset = nextOffset
            lastAppendTime = segments.compactMap(\.lastAppendTime).max() ?? 0
        }

        /// Index of the last segment whose base offset is at or below `offset`.
        func segmentIndex(containing offset: Int64) -> Int {
            var low = 0
            var high = segments.count - 1
            while low < high {
                let middle = (low + high + 1) / 2
                if segments[middle].baseOffset <= offset { low = middle } else { high = middle - 1 }
            }
            return low
        }

        /// Advances the durable offset and removes the waiters it now covers, returning their callbacks to call
        /// once the lock is released.
        mutating func markDurable(upTo target: Int64) -> [@Sendable (Result<Void, TelexError>) -> Void] {
            durableOffset = max(durableOffset, target)
            var ready: [@Sendable (Result<Void, TelexError>) -> Void] = []
            waiters.removeAll { waiter in
                guard waiter.offset <= durableOffset else { return false }
                ready.append(waiter.callback)
                return true
            }
            return ready
        }

        mutating func rememberProducer(
            _ id: Int64, sequence: Int32, baseOffset: Int64, recordCount: UInt32, appendTime: Int64
        ) {
            if producers[id] == nil, producers.count >= TopicLog.maxProducers {
                // Forget the least recently active half; a retry from one of them is then stored again as a new batch.
                let keep = producers.sorted { $0.value.lastAppendTime > $1.value.lastAppendTime }
                    .prefix(TopicLog.maxProducers / 2)
                producers = Dictionary(uniqueKeysWithValues: keep.map { ($0.key, $0.value) })
            }
            producers[id, default: ProducerState(lastAppendTime: appendTime)]
                .remember(sequence, baseOffset: baseOffset, recordCount: recordCount, appendTime: appendTime)
        }
    }

    /// What one sync round found to do, taken under the lock and done outside it.
    struct SyncWork {
        /// Every segment rolled away from and not yet sealed; the directory is fsynced after them.
        var unsealed: [Segment]
        /// Those of `unsealed` still in the log, whose files to fsync (retention may have deleted the others).
        var sealing: [Segment]
        /// The key index of each of `sealing`, taken under the lock (empty when keys are not indexed): its chunks,
        /// or whether an earlier round that failed afterwards sealed it already. The round builds and writes the
        /// tables off the lock.
        var sealingKeys: [(chunks: KeyChunks, sealed: Bool)]
        var active: Segment
        var target: Int64
        var syncActive: Bool
        /// For `sync()`: fsync the active segment's `.log` and indexes even when nothing was appended since.
        var fullActiveSync: Bool
        /// Leases on the `.log` files to fsync, taken under the lock while their segments are in the log, so
        /// retention cannot unlink a file between the snapshot and its fsync (a lease keeps it readable).
        var leases: Result<[FileLease], TelexError>
    }

    /// How a sync round ended.
    enum SyncOutcome {
        /// Every fsync succeeded and every close of an evicted descriptor of the files did.
        case synced
        /// A file could not be opened (EMFILE, …): nothing was fsynced and nothing lost; retry the round.
        case unavailable(TelexError)
        /// An fsync failed, or closing an evicted descriptor reported a writeback error: the log is failed.
        case failed(TelexError)
    }

    static let maxProducers = 10_000
    /// The first retry of a sync round that could not open a file waits this long (ms); each next one twice as
    /// long, up to `syncRetryMaximumMilliseconds`.
    static let syncRetryInitialMilliseconds = 50
    static let syncRetryMaximumMilliseconds = 1000

    /// Opens (creating if needed) the log in `directory`, recovering from a crash: the active segment is
    /// CRC-checked to its end; a torn tail is cut, damaged ranges followed by valid batches are kept and served
    /// around (`recoverSegments`); damaged indexes are rebuilt.
    ///
    /// Blocking: reads, fsyncs and possibly rewrites files. Call it off event loops.
    ///
    /// With an `archive`, offsets below the oldest local segment are read from it, and retention deletes only
    /// segments it holds (§4.1, §7).
    public convenience init(
        topic: String, directory: String, configuration: LogConfiguration, logger: Logger,
        metrics: TelexMetrics = .disabled, archive: (any ArchiveTier)? = nil
    ) throws(TelexError) {
        try self.init(topic: topic, directory: directory, configuration: configuration, logger: logger,
                      files: FileDescriptorCache(budget: configuration.maxOpenFiles), metrics: metrics,
                      archive: archive)
    }

    /// Opens the log with its files in `files`, the cache shared by a store's logs. Each file is released to
    /// the cache once recovered, so opening many logs holds no more than the cache's budget open.
    init(
        topic: String, directory: String, configuration: LogConfiguration, logger: Logger, files: FileDescriptorCache,
        metrics: TelexMetrics = .disabled, archive: (any ArchiveTier)? = nil
    ) throws(TelexError) {
        self.topic = topic
        self.archive = archive
        self.metrics = metrics.topic(topic)
        storeMetrics = metrics
        self.directory = directory
        self.configuration = configuration
        self.files = files
        keyTables = KeyTableCache(capacity: configuration.keyTableCacheBytes)
        var logger = logger
        logger[metadataKey: "topic"] = "\(topic)"
        self.logger = logger
        syncQueue = DispatchQueue(label: "telex.fsync.\(topic)")
        try FileIO.makeDirectory(directory)
        try Self.removeRewriteLeftovers(directory: directory)
        let bases = try FileIO.listDirectory(directory).compactMap { name -> Int64? in
            guard name.hasSuffix(".log") else { return nil }
            return Int64(name.dropLast(4))
        }.sorted()
        var segments: [Segment] = []
        for base in bases { segments.append(try Segment(directory: directory, baseOffset: base, files: files)) }
        if segments.isEmpty {
            segments.append(try Segment(directory: directory, baseOffset: 0, files: files))
            try FileIO.syncDirectory(directory)
        }
        let recoveryPoint = Self.readRecoveryPoint(directory: directory, logger: logger)
        segmentsScannedAtOpen = try Self.recoverSegments(segments, directory: directory, configuration: configuration, logger: logger,
                                 metrics: self.metrics, unsealedFrom: recoveryPoint ?? 0)
        // After a process crash, segments at or above the recovery point may still be only in the page cache — the
        // active one, and rolled ones the sync queue had not sealed yet, with their successors' directory entries.
        // Under `.always` they are made durable before counting as durable, so readers never see a batch a machine
        // crash could still take away; and before the recovery point moves past them (every segment below the
        // active one is checked now) they are made durable under every policy. Segments below the recovery point
        // were sealed already. On clean files these syncs return at once.
        let active = segments.last!
        let movesRecoveryPoint = segments.count > 1 && (recoveryPoint ?? -1) < active.baseOffset
        if configuration.fsync == .always || movesRecoveryPoint {
            for segment in segments where segment.baseOffset >= (recoveryPoint ?? 0) {
                if segment !== active || configuration.fsync == .always { try segment.syncLog() }
            }
            try FileIO.syncDirectory(directory)
        }
        var initial = State(segments: segments)
        for segment in segments {
            segment.keyRecords = segment.keySummary?.records ?? segment.keyChunks.count
            segment.keyTombstones = segment.keySummary?.tombstones ?? segment.keyChunks.tombstones
        }
        try Self.restoreProducerState(&initial, directory: directory, logger: logger)
        state = Mutex(initial)
        if movesRecoveryPoint { writeRecoveryPoint(active.baseOffset) }
        if case .interval(let milliseconds) = configuration.fsync { scheduleIntervalSync(milliseconds) }
    }

    /// The first offset still in the log: with an archive, its first archived segment's base when that is below the
    /// oldest local segment (`localStartOffset`).
    public var startOffset: Int64 {
        let local = localStartOffset
        guard let archived = archive?.archivedSegments(of: topic).first?.baseOffset else { return local }
        return min(archived, local)
    }
    /// The offset the next appended record gets.
    public var endOffset: Int64 { state.withLock { $0.nextOffset } }
    /// The offset after the last record readers may see (durable records only under `.always`).
    public var readableEndOffset: Int64 { state.withLock { readableEnd($0) } }
    /// Bytes of batches across all segments.
    public var sizeInBytes: Int { state.withLock { $0.segments.reduce(0) { $0 + $1.size } } }
    public var segmentCount: Int { state.withLock { $0.segments.count } }
    /// When the last batch was appended, in milliseconds since the epoch (recovered from the newest segment).
    public var lastAppendTime: Int64 { state.withLock { $0.lastAppendTime } }
    /// How far a consumer whose committed position is `committed` is behind: the records it can read but has not,
    /// `readableEndOffset − committed`, at least 0. The one definition `telex-admin consumers` and
    /// `telex_consumer_lag` share.
    public func lag(ofCommitted committed: Int64) -> Int64 { max(0, readableEndOffset - committed) }

    /// Rolled segments still waiting for their sealing fsyncs.
    var unsealedSegmentCount: Int { state.withLock { $0.unsealed.count } }
    /// Interval fsync rounds run so far; they stop once the log is closed.
    var intervalSyncRounds: Int { state.withLock { $0.intervalRounds } }

    func readableEnd(_ state: borrowing State) -> Int64 {
        configuration.fsync == .always ? state.durableOffset : state.nextOffset
    }

    /// Validates `batch` (one whole record batch, as published), stamps its base offset and append time,
    /// and writes it. Durability is separate: see `whenDurable`. A retried idempotent batch is not written again.
    ///
    /// Writes to the page cache; when the active segment is full it opens a new one, and leaves the fsyncs that
    /// seal the old one to the log's queue.
    public func append(_ batch: ByteBuffer) throws(TelexError) -> AppendResult {
        let header = try RecordBatch.validate(
            batch, limits: configuration.batchLimits, requireKeyTable: true, context: "batch for \(topic)")
        // Set once a roll queued a segment to seal, even if the write into the new segment then fails.
        var rolled = false
        defer { if rolled { scheduleSync() } }
        return try state.withLock { state throws(TelexError) -> AppendResult in
            try append(batch, header: header, to: &state, rolled: &rolled)
        }
    }

    /// The locked part of `append`; sets `rolled` when it rolled and so queued a segment to seal.
    private func append(
        _ batch: ByteBuffer, header: RecordBatchHeader, to state: inout State, rolled: inout Bool
    ) throws(TelexError) -> AppendResult {
        if state.closed { throw TelexError(.shuttingDown, "log \(topic) is closed", topic: topic) }
        if let failure = state.failure {
            throw TelexError(.storageFailure, "log \(topic) is failed: \(failure.message)", topic: topic)
        }
        if header.producerID != 0, let producer = state.producers[header.producerID] {
            if let original = producer.lookup(header.producerSequence) {
                let result = AppendResult(
                    baseOffset: original.baseOffset, recordCount: original.recordCount, duplicate: true)
                return result
            }
            if producer.isTooOld(header.producerSequence) {
                throw TelexError(.sequenceOutOfOrder,
                    "producer \(header.producerID) sequence \(header.producerSequence) is older than the \(ProducerState.remembered) batches remembered (oldest \(producer.oldestRemembered ?? 0)); it may be a duplicate, so it was not stored",
                    topic: topic)
            }
        }
        let now = FileIO.nowMilliseconds()
        let appendTime = max(now, state.lastAppendTime)
        let baseOffset = state.nextOffset
        var active = state.segments.last!
        // Index entries hold offsets relative to the segment base as u32, so a segment also rolls before that overflows.
        let mustRoll = baseOffset + Int64(header.recordCount) - active.baseOffset > Int64(UInt32.max)
        if active.size > 0,
            mustRoll || active.size + batch.readableBytes > configuration.segmentBytes
                || now - (active.firstAppendTime ?? now) >= configuration.segmentAgeMilliseconds
        {
            active = try writingAppend { () throws(TelexError) in try roll(&state) }
            rolled = true
        }
        // The broker-assigned fields sit in the first 20 bytes; the rest is written as received.
        var stamped = ByteBuffer()
        stamped.writeMultipleIntegers(baseOffset, header.batchLength, appendTime)
        let rest = batch.getSlice(at: batch.readerIndex + 20, length: batch.readableBytes - 20)!
        var stampedHeader = header
        stampedHeader.baseOffset = baseOffset
        stampedHeader.appendTime = appendTime
        try writingAppend { () throws(TelexError) in
            try active.append([stamped, rest], header: stampedHeader, indexInterval: configuration.indexIntervalBytes)
        }
        if configuration.indexKeys {
            indexKeys(of: batch, header: header, baseOffset: baseOffset, appendTime: appendTime, in: active)
        }
        state.nextOffset = stampedHeader.nextOffset
        state.lastAppendTime = appendTime
        if header.producerID != 0 {
            state.rememberProducer(header.producerID, sequence: header.producerSequence, baseOffset: baseOffset,
                                   recordCount: header.recordCount, appendTime: appendTime)
        }
        return AppendResult(baseOffset: baseOffset, recordCount: header.recordCount, duplicate: false)
    }

    /// Starts a new active segment and queues the old one for sealing (its fsyncs, then the directory fsync)
    /// on the sync queue; the durable offset does not move until that is done. Caller holds the lock.
    func roll(_ state: inout State) throws(TelexError) -> Segment {
        let old = state.segments.last!
        let segment: Segment
        do throws(TelexError) {
            segment = try Segment(directory: directory, baseOffset: state.nextOffset, files: files)
        } catch {
            // Leave no file of the failed segment behind: the old segment keeps growing past this offset, and a
            // segment named by it would lie inside the old one at the next open ("move one aside").
            for suffix in [".log", ".index", ".timeindex"] {
                try? FileIO.remove(directory + "/" + Segment.fileName(state.nextOffset, suffix))
            }
            throw error
        }
        old.sealTimeIndex()
        state.segments.append(segment)
        state.unsealed.append(old)
        queueProducerSnapshot(&state)
        logger.info("rolled segment", metadata: ["baseOffset": "\(state.nextOffset)"])
        return segment
    }

    /// The first offset appended at or after `timestamp` (ms since the epoch), or the readable end if none.
    ///
    /// Below the local log the answer is coarse: the base offset of the first archived segment whose newest batch
    /// is at or after `timestamp` (archived segments are not opened for a time lookup).
    public func offset(atOrAfter timestamp: Int64) throws(TelexError) -> Int64 {
        if let archive {
            let localStart = localStartOffset
            if let archived = archive.archivedSegments(of: topic).first(where: {
                $0.baseOffset < localStart && ($0.lastAppendTime ?? .min) >= timestamp
            }) {
                return archived.baseOffset
            }
        }
        let (snapshot, end) = state.withLock { state in
            (state.segments.map { ($0, $0.lastAppendTime, $0.size, $0.damaged) }, readableEnd(state))
        }
        for (segment, last, size, damaged) in snapshot {
            guard let last, last >= timestamp else { continue }
            // Leased under the lock while the segment is still in the log (segments leave from the front); one
            // that retention took away since the snapshot is skipped.
            let located = try state.withLock { state throws(TelexError) -> (FileLease, Int64, Int, Int64)? in
                // By identity: a rewrite (compaction, purge) replaces a segment by a new object at the same base.
                guard state.segments.contains(where: { $0 === segment }) else { return nil }
                let indexed = segment.indexedPosition(atOrBefore: segment.indexedOffset(before: timestamp))
                return (try segment.logFile.lease(), indexed.offset, indexed.position, segment.nextOffset)
            }
            guard let (lease, indexedOffset, indexed, segmentEnd) = located else { continue }
            var position = indexed
            var expected = indexedOffset
            var headers = HeaderWindow(lease, limit: size, damaged: damaged, allowsGaps: segment.compaction != nil)
            while let header = try headers.chainedHeader(skippingDamageAt: &position, expected: &expected) {
                if header.appendTime >= timestamp { return min(header.baseOffset, end) }
                position += header.totalSize
            }
            // Bytes that are not a batch continuing the chain (not CRC-checked yet, or damaged): the answer is not
            // before the offset they should hold, and a read from there checks them (§4).
            if position + RecordBatchHeader.size <= size, expected < segmentEnd { return min(expected, end) }
        }
        return end
    }

    /// Fsyncs everything written so far (sealing rolled segments, the directory, the active segment's log and
    /// indexes) and completes durability waiters. Blocking: call it off event loops.
    ///
    /// When a file cannot be opened (the process is out of descriptors) it throws without failing the log:
    /// nothing was fsynced, waiters keep waiting. A failed fsync fails the log.
    public func sync() throws(TelexError) {
        // On the sync queue, never beside a sync round: after a round's fdatasync reported EIO (and so cleared the
        // error), a concurrent fdatasync here would succeed and mark the lost pages durable.
        let (outcome, ready) = syncQueue.sync {
            let work = state.withLock { syncWork(&$0, syncActive: true, fullActiveSync: true) }
            let outcome = perform(work)
            let ready = state.withLock { finish(unsealed: work.unsealed, target: work.target, outcome, &$0) }
            if case .synced = outcome, !work.unsealed.isEmpty { recordSealing(below: work.active.baseOffset) }
            return (outcome, ready)
        }
        switch outcome {
        case .synced:
            for callback in ready { callback(.success(())) }
        case .unavailable(let error):
            throw error
        case .failed(let error):
            for callback in ready { callback(.failure(error)) }
            throw error
        }
    }

    /// Refuses further appends, stops the interval fsync, seals the time index, fsyncs everything and closes the
    /// log's idle files (reads still work: they open them again). Blocking: call it off event loops.
    public func close() throws(TelexError) {
        state.withLock { state in
            state.closed = true
            state.segments.last!.sealTimeIndex()
        }
        defer {
            // No later round, retention pass or damage check may write into the directory (deleteLog removes it
            // once close returns): a retried round still queued stops at `closedFiles`.
            syncQueue.sync { state.withLock { $0.closedFiles = true } }
            directoryClosed.withLock { $0 = true }
            for segment in state.withLock({ $0.segments }) { segment.closeFiles() }
            for segment in archivedOpen.withLock({ $0.removeAll() }) { segment.closeFiles() }
        }
        do throws(TelexError) {
            try sync()
        } catch {
            // The final fsync could not run (no descriptors) or failed: what still waits is not durable and never
            // will be through this log. Answer it now instead of leaving publishers waiting on a closed log.
            let waiting = state.withLock { state in
                defer { state.waiters = [] }
                return state.waiters.map(\.callback)
            }
            let failure = TelexError(.storageFailure,
                "log \(topic) closed before its batches were fsynced: \(error.message)", topic: topic)
            for callback in waiting { callback(.failure(failure)) }
            throw error
        }
        // Only after a successful final fsync: a snapshot must not remember batches a crash could still take away.
        writeProducerSnapshotNow()
    }
}
