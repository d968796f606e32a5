#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Logging
import NIOCore
import Synchronization
import TelexProtocol

/// Durability: the group-commit sync rounds on the log's queue, their retries, and the interval fsync.
extension TopicLog {
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
        // On the sync queue, not here: a round that just made this batch durable may still be calling back the
        // batches before it, and acks of one topic go out in append order.
        case .now(let result): syncQueue.async { callback(result) }
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

    /// Runs `body`, a write of an append (the batch, or a new segment's files), turning a full file system into
    /// the error publishers see: `no space left on device writing TOPIC (write PATH)`. Such a failure does not
    /// fail the log: the batch was cut back, took no offset, and the next append goes where it would have gone.
    func writingAppend<T>(_ body: () throws(TelexError) -> T) throws(TelexError) -> T {
        do throws(TelexError) {
            return try body()
        } catch {
            guard FileIO.isOutOfSpace(error) else { throw error }
            let operation = error.message.dropLast(String(cString: strerror(ENOSPC)).count + 2)
            throw TelexError(.storageFailure, "no space left on device writing \(topic) (\(operation))", topic: topic)
        }
    }

    /// Queues a sync round unless one is already queued.
    func scheduleSync() {
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
    func syncRound() {
        // A retry still queued when the log closed: its files are no longer its own (deleteLog, a new topic).
        guard !state.withLock({ $0.closedFiles }) else { return }
        // Rounds of all the store's logs share a few slots: each holds leases on its files for the length of its
        // fsyncs, so this bounds how far the store can go over its open-file budget (STORAGE.md §11).
        files.syncSlots.wait()
        let (unsealed, activeBase, target, outcome) = { () -> ([Segment], Int64, Int64, SyncOutcome) in
            defer { files.syncSlots.signal() }
            let work = state.withLock { state in
                state.syncScheduled = false
                return syncWork(&state, syncActive: configuration.fsync != .never)
            }
            // The work (and its leases) ends with this closure, before the slot is given back.
            let started = DispatchTime.now().uptimeNanoseconds
            defer { storeMetrics.fsyncDuration.recordNanoseconds(DispatchTime.now().uptimeNanoseconds - started) }
            return (work.unsealed, work.active.baseOffset, work.target, perform(work))
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
        // After the acks: the producer snapshot and the recovery point cost a few fsyncs.
        if case .synced = outcome, !unsealed.isEmpty { recordSealing(below: activeBase) }
        if more { syncQueue.async { self.syncRound() } }
    }

    /// After a round that could not open a file: keeps the waiters and the durable offset, logs (at most one
    /// warning per 10 s) and queues the round again after the backoff if anything waits for it.
    func retryLater(_ error: TelexError) {
        let now = FileIO.nowMilliseconds()
        let (delay, warn, retry) = state.withLock { state -> (Int, Bool, Bool) in
            state.unavailableRounds += 1
            let doublings = min(state.unavailableRounds - 1, 10)
            let delay = min(Self.syncRetryInitialMilliseconds << doublings, Self.syncRetryMaximumMilliseconds)
            let warn = now - state.lastUnavailableWarning >= 10_000
            if warn { state.lastUnavailableWarning = now }
            // A round is already queued when an appender asked for one since the snapshot.
            let retry = (!state.waiters.isEmpty || !state.unsealed.isEmpty) && !state.syncScheduled
                && !state.closedFiles
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
    func syncWork(_ state: inout State, syncActive: Bool, fullActiveSync: Bool = false) -> SyncWork {
        let active = state.segments.last!
        let syncActive = syncActive && state.nextOffset > state.durableOffset
        let start = state.segments.first!.baseOffset
        let sealing = state.unsealed.filter { $0.baseOffset >= start }
        let syncing = sealing + (syncActive || fullActiveSync ? [active] : [])
        let leases = Result { () throws(TelexError) -> [FileLease] in
            try syncing.map { segment throws(TelexError) in try segment.logFile.lease() }
        }
        let sealingKeys = configuration.indexKeys ? sealing.map { ($0.keyChunks, $0.keySummary != nil) } : []
        return SyncWork(unsealed: state.unsealed, sealing: sealing, sealingKeys: sealingKeys, active: active,
                        target: state.nextOffset,
                        syncActive: syncActive, fullActiveSync: fullActiveSync, leases: leases)
    }

    /// Does the fsyncs of `work`, without the lock: sealed segments first (their `.keys` written and fsynced, then
    /// log and indexes), then the directory
    /// (their successors' entries), then the active segment. Then checks that no close of an evicted descriptor
    /// of those `.log` files reported an error the fsyncs could not see (NFS, STORAGE.md §11.2).
    ///
    /// Every file is opened (leased) before the first fsync, so a failed open leaves nothing half done.
    func perform(_ work: SyncWork) -> SyncOutcome {
        // A failed log fsyncs nothing more: one that succeeds now proves nothing about what the failed one lost.
        if let failure = state.withLock({ $0.failure }) { return .failed(failure) }
        let directory: CInt?
        do throws(TelexError) {
            _ = try work.leases.get()
            directory = work.unsealed.isEmpty ? nil : try FileIO.openDirectory(self.directory)
        } catch {
            return .unavailable(error)
        }
        defer { if let directory { FileIO.close(directory, path: self.directory) } }
        // Derived data, like the indexes: a `.keys` that could not be written is rebuilt at the next open. Under
        // `directoryClosed`, which retention holds while it unlinks: a segment it took out of the log since the
        // snapshot gets no `.keys`, which would be left behind without its segment.
        // Each sealed table is built here, off the lock, written, then its summary swapped in under the lock
        // (O(1)): a query that finds the summary finds the file. A segment no longer growing keeps the same base
        // offset, next offset and size. One whose summary an earlier round (failed since) installed has its file.
        let tables = zip(work.sealing, work.sealingKeys).map { segment, keys -> KeyTableFile? in
            guard !keys.sealed else { return nil }
            let (nextOffset, size) = state.withLock { _ in (segment.nextOffset, segment.size) }
            return KeyTableFile(baseOffset: segment.baseOffset, nextOffset: nextOffset, logSize: Int64(size),
                                keys: SealedKeys(keys.chunks.joined()))
        }
        if !tables.isEmpty { directoryClosed.withLock { closed in
            for (segment, table) in zip(work.sealing, tables)
            where !closed && state.withLock({ $0.segments.first!.baseOffset <= segment.baseOffset }) {
                guard let table else { continue }
                do throws(TelexError) {
                    try segment.writeKeys(table)
                } catch {
                    logger.warning("could not write the key index; the next open rebuilds it",
                                   metadata: ["path": "\(segment.keysPath)", "error": "\(error)"])
                }
            }
        } }
        for (segment, table) in zip(work.sealing, tables) {
            if let table { installKeys(table.keys, in: segment) }
        }
        do throws(TelexError) {
            for segment in work.sealing { try segment.sync() }
            if let directory { try FileIO.syncDirectory(directory, path: self.directory) }
            if work.fullActiveSync {
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
    func finish(
        unsealed: [Segment], target: Int64, _ outcome: SyncOutcome, _ state: inout State
    ) -> [@Sendable (Result<Void, TelexError>) -> Void] {
        switch outcome {
        case .synced:
            // Once an fsync failed, a later one that succeeds proves nothing about the pages the failed one
            // dropped: nothing becomes durable any more.
            guard state.failure == nil else { return [] }
            state.unsealed.removeAll { segment in unsealed.contains { $0 === segment } }
            return state.markDurable(upTo: target)
        case .failed(let error):
            // After a failed fsync the page cache can no longer be trusted: refuse further appends.
            let ready = state.waiters.map(\.callback)
            state.waiters = []
            guard state.failure == nil else { return ready }
            state.failure = error
            logger.error("fsync failed; log refuses further appends", metadata: ["error": "\(error)"])
            return ready
        case .unavailable:
            return []
        }
    }

    /// Runs a sync round on the sync queue every `milliseconds` until the log is closed.
    func scheduleIntervalSync(_ milliseconds: Int) {
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
}
