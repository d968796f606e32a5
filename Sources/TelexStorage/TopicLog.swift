#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Logging
import NIOCore
import Synchronization
import TelexProtocol

/// What an append did: the offsets the batch got (or, for a retried duplicate, had already got).
public struct AppendResult: Sendable, Equatable {
    public var baseOffset: Int64
    public var recordCount: UInt32
    /// True when the batch was a retry of one already stored; nothing was written.
    public var duplicate: Bool
    public var nextOffset: Int64 { baseOffset + Int64(recordCount) }
}

/// A run of whole stored batches in one segment file, ready to send as they are.
///
/// A slice holds its segment file open (a lease on the store's file descriptor cache) until the last copy of it
/// is dropped, so it stays readable even after retention deleted the file: keep slices only while sending them.
public struct LogSlice: Sendable {
    let log: FileLease
    /// Byte position in the segment file.
    public let position: Int
    public let length: Int
    /// Base offset of the first batch; it may be below the offset asked for.
    public let firstOffset: Int64
    /// The offset after the last record in the slice.
    public let nextOffset: Int64
    public let batchCount: Int

    /// Reads the slice's bytes into memory.
    public func readBytes() throws(TelexError) -> ByteBuffer {
        var buffer = ByteBuffer()
        let path = log.file.path
        let count = try log.withDescriptor { fd throws(TelexError) in
            try FileIO.read(fd, at: position, length: length, into: &buffer, path: path)
        }
        guard count == length else {
            throw TelexError(.storageFailure, "\(path): short read at \(position) (\(count) of \(length) bytes)")
        }
        return buffer
    }

    /// A new handle on the segment file, owned by the caller (close it once the slice is sent), for a `FileRegion`.
    ///
    /// The handle is a `dup` of the slice's descriptor: it stays valid after the slice is dropped and the cache
    /// closes its own descriptor, and it is not counted in the store's open-file budget (Protocol/STORAGE.md §11.3).
    public func makeFileHandle() throws(TelexError) -> NIOFileHandle {
        let duplicate = log.withDescriptor { dup($0) }
        guard duplicate >= 0 else { throw FileIO.failure("dup", log.file.path) }
        return NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: duplicate)
    }
}

/// Per-producer memory of recent batches, so a retried batch is answered with its original offsets.
///
/// Keyed by sequence, not ordered by it: concurrent publishers sharing one producer id may send batches
/// out of sequence order, and each is still stored once.
struct ProducerState {
    static let remembered = 4096
    var lastAppendTime: Int64
    private var offsets: [Int32: (baseOffset: Int64, recordCount: UInt32)] = [:]
    private var order: [Int32] = []
    private var orderHead = 0

    init(lastAppendTime: Int64) {
        self.lastAppendTime = lastAppendTime
    }

    mutating func remember(_ sequence: Int32, baseOffset: Int64, recordCount: UInt32, appendTime: Int64) {
        lastAppendTime = appendTime
        offsets[sequence] = (baseOffset, recordCount)
        order.append(sequence)
        if order.count - orderHead > Self.remembered {
            offsets[order[orderHead]] = nil
            orderHead += 1
            if orderHead >= Self.remembered {
                order.removeFirst(orderHead)
                orderHead = 0
            }
        }
    }

    func lookup(_ sequence: Int32) -> (baseOffset: Int64, recordCount: UInt32)? {
        offsets[sequence]
    }

    /// True when the memory is full and `sequence` is older than everything in it: it cannot be told apart
    /// from a forgotten batch, so it must not be stored blindly.
    func isTooOld(_ sequence: Int32) -> Bool {
        guard order.count - orderHead >= Self.remembered else { return false }
        return sequence < order[orderHead]
    }

    /// The sequence remembered longest.
    var oldestRemembered: Int32? { orderHead < order.count ? order[orderHead] : nil }
}

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
    private let logger: Logger
    /// Metric handles: this topic's (`metrics.topic`) and the store's fsync ones.
    public let metrics: TopicMetrics
    private let storeMetrics: TelexMetrics
    private let files: FileDescriptorCache
    private let syncQueue: DispatchQueue
    private let state: Mutex<State>

    /// Everything that changes after opening, behind `state`. The `var`s of its segments are guarded by the
    /// same lock (see `Segment`).
    private struct State {
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
    private struct SyncWork {
        /// Every segment rolled away from and not yet sealed; the directory is fsynced after them.
        var unsealed: [Segment]
        /// Those of `unsealed` still in the log, whose files to fsync (retention may have deleted the others).
        var sealing: [Segment]
        var active: Segment
        var target: Int64
        var syncActive: Bool
        /// Leases on the `.log` files to fsync, taken under the lock while their segments are in the log, so
        /// retention cannot unlink a file between the snapshot and its fsync (a lease keeps it readable).
        var leases: Result<[FileLease], TelexError>
    }

    /// How a sync round ended.
    private enum SyncOutcome {
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
    /// CRC-checked to its end and cut at the first torn or corrupt batch; damaged indexes are rebuilt.
    ///
    /// Blocking: reads, fsyncs and possibly rewrites files. Call it off event loops.
    public convenience init(
        topic: String, directory: String, configuration: LogConfiguration, logger: Logger,
        metrics: TelexMetrics = .disabled
    ) throws(TelexError) {
        try self.init(topic: topic, directory: directory, configuration: configuration, logger: logger,
                      files: FileDescriptorCache(budget: configuration.maxOpenFiles), metrics: metrics)
    }

    /// Opens the log with its files in `files`, the cache shared by a store's logs. Each file is released to
    /// the cache once recovered, so opening many logs holds no more than the cache's budget open.
    init(
        topic: String, directory: String, configuration: LogConfiguration, logger: Logger, files: FileDescriptorCache,
        metrics: TelexMetrics = .disabled
    ) throws(TelexError) {
        self.topic = topic
        self.metrics = metrics.topic(topic)
        storeMetrics = metrics
        self.directory = directory
        self.configuration = configuration
        self.files = files
        var logger = logger
        logger[metadataKey: "topic"] = "\(topic)"
        self.logger = logger
        syncQueue = DispatchQueue(label: "telex.fsync.\(topic)")
        try FileIO.makeDirectory(directory)
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
        for (index, segment) in segments.enumerated() {
            let isActive = index == segments.count - 1
            if index > 0, segment.baseOffset < segments[index - 1].nextOffset {
                throw TelexError(.storageFailure,
                    "\(segment.logPath) starts at offset \(segment.baseOffset) but the previous segment ends at \(segments[index - 1].nextOffset); move one aside")
            }
            if !isActive, try segment.loadIndexes(), try segment.loadTail(indexInterval: configuration.indexIntervalBytes) {
                continue
            }
            if !isActive {
                logger.warning("rebuilding index", metadata: ["segment": "\(segment.logPath)"])
            }
            let scan = try segment.recover(indexInterval: configuration.indexIntervalBytes, limits: configuration.batchLimits)
            if let reason = scan.reason {
                logger.warning("cut damaged log tail", metadata: [
                    "segment": "\(segment.logPath)", "position": "\(scan.validBytes)",
                    "droppedBytes": "\(segment.size - scan.validBytes)", "keptBatches": "\(scan.batches)",
                    "reason": "\(reason)",
                ])
                try segment.truncate(to: scan.validBytes)
                try segment.syncLog()
            }
            try segment.rewriteIndexes()
        }
        // After a process crash the tail may still be only in the page cache — the active segment's, and, since
        // rolled segments are sealed later on the sync queue, a just-rolled one's and its successor's directory
        // entry: make them durable before counting them as durable, so `.always` readers never see a batch a
        // machine crash could still take away. On clean files these syncs return at once.
        if configuration.fsync == .always {
            for segment in segments { try segment.syncLog() }
            try FileIO.syncDirectory(directory)
        }
        var initial = State(segments: segments)
        try Self.rebuildProducerState(&initial)
        state = Mutex(initial)
        if case .interval(let milliseconds) = configuration.fsync { scheduleIntervalSync(milliseconds) }
    }

    /// The first offset still in the log.
    public var startOffset: Int64 { state.withLock { $0.segments.first!.baseOffset } }
    /// The offset the next appended record gets.
    public var endOffset: Int64 { state.withLock { $0.nextOffset } }
    /// The offset after the last record readers may see (durable records only under `.always`).
    public var readableEndOffset: Int64 { state.withLock { readableEnd($0) } }
    /// Bytes of batches across all segments.
    public var sizeInBytes: Int { state.withLock { $0.segments.reduce(0) { $0 + $1.size } } }
    public var segmentCount: Int { state.withLock { $0.segments.count } }
    /// When the last batch was appended, in milliseconds since the epoch (recovered from the newest segment).
    public var lastAppendTime: Int64 { state.withLock { $0.lastAppendTime } }

    /// Rolled segments still waiting for their sealing fsyncs.
    var unsealedSegmentCount: Int { state.withLock { $0.unsealed.count } }
    /// Interval fsync rounds run so far; they stop once the log is closed.
    var intervalSyncRounds: Int { state.withLock { $0.intervalRounds } }

    private func readableEnd(_ state: borrowing State) -> Int64 {
        configuration.fsync == .always ? state.durableOffset : state.nextOffset
    }

    /// Validates `batch` (one whole record batch, as published), stamps its base offset and append time,
    /// and writes it. Durability is separate: see `whenDurable`. A retried idempotent batch is not written again.
    ///
    /// Writes to the page cache; when the active segment is full it opens a new one, and leaves the fsyncs that
    /// seal the old one to the log's queue.
    public func append(_ batch: ByteBuffer) throws(TelexError) -> AppendResult {
        let header = try RecordBatch.validate(batch, limits: configuration.batchLimits, context: "batch for \(topic)")
        let (result, rolled) = try state.withLock { state throws(TelexError) -> (AppendResult, Bool) in
            try append(batch, header: header, to: &state)
        }
        if rolled { scheduleSync() }
        return result
    }

    /// The locked part of `append`; also returns whether it rolled and so queued a segment to seal.
    private func append(
        _ batch: ByteBuffer, header: RecordBatchHeader, to state: inout State
    ) throws(TelexError) -> (AppendResult, Bool) {
        if state.closed { throw TelexError(.shuttingDown, "log \(topic) is closed", topic: topic) }
        if let failure = state.failure {
            throw TelexError(.storageFailure, "log \(topic) is failed: \(failure.message)", topic: topic)
        }
        if header.producerID != 0, let producer = state.producers[header.producerID] {
            if let original = producer.lookup(header.producerSequence) {
                let result = AppendResult(
                    baseOffset: original.baseOffset, recordCount: original.recordCount, duplicate: true)
                return (result, false)
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
        var rolled = false
        // Index entries hold offsets relative to the segment base as u32, so a segment also rolls before that overflows.
        if active.size > 0,
            active.size + batch.readableBytes > configuration.segmentBytes
                || now - (active.firstAppendTime ?? now) >= configuration.segmentAgeMilliseconds
                || baseOffset + Int64(header.recordCount) - active.baseOffset > Int64(UInt32.max)
        {
            active = try roll(&state)
            rolled = true
        }
        // The broker-assigned fields sit in the first 20 bytes; the rest is written as received.
        var stamped = ByteBuffer()
        stamped.writeMultipleIntegers(baseOffset, header.batchLength, appendTime)
        let rest = batch.getSlice(at: batch.readerIndex + 20, length: batch.readableBytes - 20)!
        var stampedHeader = header
        stampedHeader.baseOffset = baseOffset
        stampedHeader.appendTime = appendTime
        try active.append([stamped, rest], header: stampedHeader, indexInterval: configuration.indexIntervalBytes)
        state.nextOffset = stampedHeader.nextOffset
        state.lastAppendTime = appendTime
        if header.producerID != 0 {
            state.rememberProducer(header.producerID, sequence: header.producerSequence, baseOffset: baseOffset,
                                   recordCount: header.recordCount, appendTime: appendTime)
        }
        return (AppendResult(baseOffset: baseOffset, recordCount: header.recordCount, duplicate: false), rolled)
    }

    /// Starts a new active segment and queues the old one for sealing (its fsyncs, then the directory fsync)
    /// on the sync queue; the durable offset does not move until that is done. Caller holds the lock.
    private func roll(_ state: inout State) throws(TelexError) -> Segment {
        let old = state.segments.last!
        let segment = try Segment(directory: directory, baseOffset: state.nextOffset, files: files)
        old.sealTimeIndex()
        state.segments.append(segment)
        state.unsealed.append(old)
        logger.info("rolled segment", metadata: ["baseOffset": "\(state.nextOffset)"])
        return segment
    }

    /// Calls `callback` once the append that produced `result` is durable under this log's policy
    /// (at once for `.never` and `.interval`). Called on the fsync queue or the caller's thread.
    public func whenDurable(_ result: AppendResult, _ callback: @escaping @Sendable (Result<Void, TelexError>) -> Void) {
        guard configuration.fsync == .always else { return callback(.success(())) }
        enum Outcome { case now(Result<Void, TelexError>), wait(schedule: Bool) }
        let outcome = state.withLock { state -> Outcome in
            if let failure = state.failure { return .now(.failure(failure)) }
            if state.durableOffset >= result.nextOffset { return .now(.success(())) }
            state.waiters.append((result.nextOffset, callback))
            let schedule = !state.syncScheduled
            state.syncScheduled = true
            return .wait(schedule: schedule)
        }
        switch outcome {
        case .now(let result): callback(result)
        case .wait(let schedule): if schedule { syncQueue.async { self.syncRound() } }
        }
    }

    /// Appends and waits until the batch is durable under this log's policy.
    public func appendDurably(_ batch: ByteBuffer) async throws -> AppendResult {
        let result = try append(batch)
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            whenDurable(result) { continuation.resume(with: $0) }
        }
        return result
    }

    /// Queues a sync round unless one is already queued.
    private func scheduleSync() {
        let schedule = state.withLock { state in
            defer { state.syncScheduled = true }
            return !state.syncScheduled
        }
        if schedule { syncQueue.async { self.syncRound() } }
    }

    /// One round on the sync queue: seals rolled segments, fsyncs the directory after them, fsyncs the active
    /// segment's `.log` (not under `.never`), then completes the waiters covered by everything appended before
    /// the round started.
    ///
    /// A round that cannot open a file (the process is out of descriptors) keeps its waiters and is retried
    /// after a backoff from 50 ms doubling to 1 s; only a failed fsync fails the log.
    private func syncRound() {
        // Rounds of all the store's logs share a few slots: each holds leases on its files for the length of its
        // fsyncs, so this bounds how far the store can go over its open-file budget (STORAGE.md §11).
        files.syncSlots.wait()
        let (unsealed, target, outcome) = { () -> ([Segment], Int64, SyncOutcome) in
            defer { files.syncSlots.signal() }
            let work = state.withLock { state in
                state.syncScheduled = false
                return syncWork(&state, syncActive: configuration.fsync != .never)
            }
            // The work (and its leases) ends with this closure, before the slot is given back.
            let started = DispatchTime.now().uptimeNanoseconds
            defer { storeMetrics.fsyncDuration.recordNanoseconds(DispatchTime.now().uptimeNanoseconds - started) }
            return (work.unsealed, work.target, perform(work))
        }()
        if case .unavailable(let error) = outcome { return retryLater(error) }
        let (ready, more, retries, madeDurable) = state.withLock { state in
            let durableBefore = state.durableOffset
            let ready = finish(unsealed: unsealed, target: target, outcome, &state)
            let more = !state.waiters.isEmpty && !state.syncScheduled
            if more { state.syncScheduled = true }
            let retries = state.unavailableRounds
            state.unavailableRounds = 0
            return (ready, more, retries, state.durableOffset - durableBefore)
        }
        if madeDurable > 0 { storeMetrics.groupCommitRecords.record(madeDurable) }
        if retries > 0, case .synced = outcome {
            logger.info("sync round succeeded again after failing to open files", metadata: ["retries": "\(retries)"])
        }
        let result: Result<Void, TelexError> =
            if case .failed(let error) = outcome { .failure(error) } else { .success(()) }
        for callback in ready { callback(result) }
        if more { syncQueue.async { self.syncRound() } }
    }

    /// After a round that could not open a file: keeps the waiters and the durable offset, logs (at most one
    /// warning per 10 s) and queues the round again after the backoff if anything waits for it.
    private func retryLater(_ error: TelexError) {
        let now = FileIO.nowMilliseconds()
        let (delay, warn, retry) = state.withLock { state -> (Int, Bool, Bool) in
            state.unavailableRounds += 1
            let doublings = min(state.unavailableRounds - 1, 10)
            let delay = min(Self.syncRetryInitialMilliseconds << doublings, Self.syncRetryMaximumMilliseconds)
            let warn = now - state.lastUnavailableWarning >= 10_000
            if warn { state.lastUnavailableWarning = now }
            // A round is already queued when an appender asked for one since the snapshot.
            let retry = (!state.waiters.isEmpty || !state.unsealed.isEmpty) && !state.syncScheduled
            if retry { state.syncScheduled = true }
            return (delay, warn, retry)
        }
        if warn {
            logger.warning(
                "sync round could not open a file; acknowledgements wait and the round is retried",
                metadata: ["error": "\(error)", "retryInMilliseconds": "\(delay)"])
        }
        guard retry else { return }
        syncQueue.asyncAfter(deadline: .now() + .milliseconds(delay)) { self.syncRound() }
    }

    /// What a sync must do to cover everything appended so far. Caller holds the lock.
    /// `fullActiveSync` (for `sync()`) fsyncs the active segment even when nothing was appended since the last
    /// round.
    private func syncWork(_ state: inout State, syncActive: Bool, fullActiveSync: Bool = false) -> SyncWork {
        let active = state.segments.last!
        let syncActive = syncActive && state.nextOffset > state.durableOffset
        let start = state.segments.first!.baseOffset
        let sealing = state.unsealed.filter { $0.baseOffset >= start }
        let syncing = sealing + (syncActive || fullActiveSync ? [active] : [])
        let leases = Result { () throws(TelexError) -> [FileLease] in
            try syncing.map { segment throws(TelexError) in try segment.logFile.lease() }
        }
        return SyncWork(unsealed: state.unsealed, sealing: sealing, active: active, target: state.nextOffset, syncActive: syncActive,
                        leases: leases)
    }

    /// Does the fsyncs of `work`, without the lock: sealed segments first (log and indexes), then the directory
    /// (their successors' entries), then the active segment. Then checks that no close of an evicted descriptor
    /// of those `.log` files reported an error the fsyncs could not see (NFS, STORAGE.md §11.2).
    ///
    /// Every file is opened (leased) before the first fsync, so a failed open leaves nothing half done.
    private func perform(_ work: SyncWork, fullActiveSync: Bool = false) -> SyncOutcome {
        let directory: CInt?
        do throws(TelexError) {
            _ = try work.leases.get()
            directory = work.unsealed.isEmpty ? nil : try FileIO.openDirectory(self.directory)
        } catch {
            return .unavailable(error)
        }
        defer { if let directory { Glibc.close(directory) } }
        do throws(TelexError) {
            for segment in work.sealing { try segment.sync() }
            if let directory { try FileIO.syncDirectory(directory, path: self.directory) }
            if fullActiveSync {
                try work.active.sync()
            } else if work.syncActive {
                try work.active.syncLog()
            }
            for segment in work.sealing + [work.active] {
                if let failure = segment.logFile.closeFailure { throw failure }
            }
        } catch {
            return .failed(error)
        }
        return .synced
    }

    /// Records the outcome of `work` (synced or failed), returning the callbacks to call once the lock is
    /// released. Caller holds the lock.
    private func finish(
        unsealed: [Segment], target: Int64, _ outcome: SyncOutcome, _ state: inout State
    ) -> [@Sendable (Result<Void, TelexError>) -> Void] {
        switch outcome {
        case .synced:
            state.unsealed.removeAll { segment in unsealed.contains { $0 === segment } }
            return state.markDurable(upTo: target)
        case .failed(let error):
            // After a failed fsync the page cache can no longer be trusted: refuse further appends.
            state.failure = error
            let ready = state.waiters.map(\.callback)
            state.waiters = []
            logger.error("fsync failed; log refuses further appends", metadata: ["error": "\(error)"])
            return ready
        case .unavailable:
            return []
        }
    }

    /// Runs a sync round on the sync queue every `milliseconds` until the log is closed.
    private func scheduleIntervalSync(_ milliseconds: Int) {
        syncQueue.asyncAfter(deadline: .now() + .milliseconds(milliseconds)) { [weak self] in
            guard let self else { return }
            let running = state.withLock { state in
                guard !state.closed else { return false }
                state.intervalRounds += 1
                return true
            }
            guard running else { return }
            syncRound()
            scheduleIntervalSync(milliseconds)
        }
    }

    /// Whole stored batches starting with the one that holds `offset`, up to `maxBytes` (at least one batch)
    /// and `maxBatches`; nil when `offset` is at or past the readable end. Offsets below the log start throw.
    ///
    /// Reads batch headers from the page cache (a 64 KiB window at a time), not the batches themselves.
    public func read(from offset: Int64, maxBytes: Int, maxBatches: Int = .max) throws(TelexError) -> LogSlice? {
        var offset = offset
        while true {
            // The lease is taken under the lock, while the segment is still in the log: retention may unlink its
            // files as soon as the lock is released, and the lease keeps them readable.
            let located = try state.withLock { state throws(TelexError) -> (FileLease, Int, Int, Int64, Int64?)? in
                let start = state.segments.first!.baseOffset
                guard offset >= start else {
                    throw TelexError(.offsetOutOfRange,
                                     "offset \(offset) is out of range for \(topic) (log starts at \(start))",
                                     topic: topic, offset: offset)
                }
                let end = readableEnd(state)
                guard offset < end else { return nil }
                let index = state.segmentIndex(containing: offset)
                let segment = state.segments[index]
                let following = index + 1 < state.segments.count ? state.segments[index + 1].baseOffset : nil
                let lease = try segment.logFile.lease()
                return (lease, segment.indexedPosition(atOrBefore: offset).position, segment.size, end, following)
            }
            guard let (lease, position, limit, end, following) = located else { return nil }
            var headers = HeaderWindow(lease, limit: limit)
            if let slice = try collect(&headers, from: position, offset: offset, end: end,
                                       maxBytes: maxBytes, maxBatches: maxBatches) {
                return slice
            }
            // The offset fell in a gap left by a cut segment: continue at the next one.
            guard let following, following > offset else { return nil }
            offset = following
        }
    }

    private func collect(
        _ headers: inout HeaderWindow, from position: Int, offset: Int64, end: Int64, maxBytes: Int, maxBatches: Int
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
            count == 0 || (bytes + current.totalSize <= maxBytes && count < maxBatches)
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

    /// The first offset appended at or after `timestamp` (ms since the epoch), or the readable end if none.
    public func offset(atOrAfter timestamp: Int64) throws(TelexError) -> Int64 {
        let (snapshot, end) = state.withLock { state in
            (state.segments.map { ($0, $0.lastAppendTime, $0.size) }, readableEnd(state))
        }
        for (segment, last, size) in snapshot {
            guard let last, last >= timestamp else { continue }
            // Leased under the lock while the segment is still in the log (segments leave from the front); one
            // that retention took away since the snapshot is skipped.
            let located = try state.withLock { state throws(TelexError) -> (FileLease, Int)? in
                guard segment.baseOffset >= state.segments.first!.baseOffset else { return nil }
                let position = segment.indexedPosition(atOrBefore: segment.indexedOffset(before: timestamp)).position
                return (try segment.logFile.lease(), position)
            }
            guard let (lease, indexed) = located else { continue }
            var position = indexed
            var headers = HeaderWindow(lease, limit: size)
            while let header = try headers.header(at: position) {
                if header.appendTime >= timestamp { return min(header.baseOffset, end) }
                position += header.totalSize
            }
        }
        return end
    }

    /// Deletes whole old segments past the retention age or size; the active segment is never deleted.
    ///
    /// Segments leave the log under its lock; their files are unlinked and the directory fsynced after it is
    /// released. Readers holding a slice of a deleted segment can still read it. Blocking: call it off event loops.
    @discardableResult
    public func applyRetention(now: Int64? = nil) throws(TelexError) -> Int {
        let now = now ?? FileIO.nowMilliseconds()
        let removed = state.withLock { state -> [(segment: Segment, byAge: Bool)] in
            var total = state.segments.reduce(0) { $0 + $1.size }
            var removed: [(Segment, Bool)] = []
            while state.segments.count > 1 {
                let oldest = state.segments[0]
                let tooOld = configuration.retentionMilliseconds.map { (oldest.lastAppendTime ?? now) < now - $0 } ?? false
                let tooBig = configuration.retentionBytes.map { total > $0 } ?? false
                guard tooOld || tooBig else { break }
                state.segments.removeFirst()
                total -= oldest.size
                removed.append((oldest, tooOld))
            }
            return removed
        }
        guard !removed.isEmpty else { return 0 }
        let logStartOffset = startOffset
        for (segment, byAge) in removed {
            try segment.deleteFiles()
            logger.info("retention deleted segment", metadata: [
                "segment": "\(segment.logPath)", "reason": "\(byAge ? "age" : "size")",
                "logStartOffset": "\(logStartOffset)",
            ])
        }
        try FileIO.syncDirectory(directory)
        metrics.retentionDeletedSegments.increment(by: removed.count)
        return removed.count
    }

    /// Rebuilds producer memory from the batch headers of the newest two segments.
    private static func rebuildProducerState(_ state: inout State) throws(TelexError) {
        for segment in state.segments.suffix(2) {
            var headers = HeaderWindow(try segment.logFile.lease(), limit: segment.size)
            var position = 0
            while let header = try headers.header(at: position) {
                if header.producerID != 0 {
                    state.rememberProducer(header.producerID, sequence: header.producerSequence,
                                           baseOffset: header.baseOffset, recordCount: header.recordCount,
                                           appendTime: header.appendTime)
                }
                position += header.totalSize
            }
        }
    }

    /// Fsyncs everything written so far (sealing rolled segments, the directory, the active segment's log and
    /// indexes) and completes durability waiters. Blocking: call it off event loops.
    ///
    /// When a file cannot be opened (the process is out of descriptors) it throws without failing the log:
    /// nothing was fsynced, waiters keep waiting. A failed fsync fails the log.
    public func sync() throws(TelexError) {
        let work = state.withLock { syncWork(&$0, syncActive: true, fullActiveSync: true) }
        let outcome = perform(work, fullActiveSync: true)
        let ready = state.withLock { finish(unsealed: work.unsealed, target: work.target, outcome, &$0) }
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
        defer { for segment in state.withLock({ $0.segments }) { segment.closeFiles() } }
        try sync()
    }
}
