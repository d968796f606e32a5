#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Logging
import NIOConcurrencyHelpers
import NIOCore
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
public struct LogSlice: Sendable {
    let segment: Segment
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
        let count = try FileIO.read(segment.fd, at: position, length: length, into: &buffer, path: segment.logPath)
        guard count == length else {
            throw TelexError(.storageFailure, "\(segment.logPath): short read at \(position) (\(count) of \(length) bytes)")
        }
        return buffer
    }

    /// A new handle on the segment file, owned by the caller (close it once the slice is sent), for a `FileRegion`.
    public func makeFileHandle() throws(TelexError) -> NIOFileHandle {
        let duplicate = dup(segment.fd)
        guard duplicate >= 0 else { throw FileIO.failure("dup", segment.logPath) }
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
/// Thread-safe. Appends write to the page cache under a lock; fsyncs run on the log's own queue and cover
/// every append made before they start (group commit). Readers see only durable batches under `.always`.
public final class TopicLog: @unchecked Sendable {
    public let topic: String
    public let directory: String
    public let configuration: LogConfiguration
    private let logger: Logger
    private let lock = NIOLock()
    private let syncQueue: DispatchQueue
    private var intervalTimer: DispatchSourceTimer?

    private var segments: [Segment]
    private var producers: [Int64: ProducerState] = [:]
    private var nextOffset: Int64
    private var durableOffset: Int64
    private var lastAppendTime: Int64
    private var waiters: [(offset: Int64, callback: @Sendable (Result<Void, TelexError>) -> Void)] = []
    private var syncScheduled = false
    private var failure: TelexError?
    private var closed = false

    static let maxProducers = 10_000

    /// Opens (creating if needed) the log in `directory`, recovering from a crash: the active segment is
    /// CRC-checked to its end and cut at the first torn or corrupt batch; damaged indexes are rebuilt.
    public init(topic: String, directory: String, configuration: LogConfiguration, logger: Logger) throws(TelexError) {
        self.topic = topic
        self.directory = directory
        self.configuration = configuration
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
        for base in bases { segments.append(try Segment(directory: directory, baseOffset: base)) }
        if segments.isEmpty {
            segments.append(try Segment(directory: directory, baseOffset: 0))
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
                try FileIO.sync(segment.fd, path: segment.logPath)
            }
            try segment.rewriteIndexes()
        }
        // After a process crash the active tail may still be only in the page cache: make it durable before
        // counting it as durable, so `.always` readers never see a batch a machine crash could still take away.
        if configuration.fsync == .always { try segments.last!.syncLog() }
        self.segments = segments
        nextOffset = segments.last!.nextOffset
        durableOffset = nextOffset
        lastAppendTime = segments.compactMap(\.lastAppendTime).max() ?? 0
        try rebuildProducerState()
        if case .interval(let milliseconds) = configuration.fsync { startIntervalTimer(milliseconds) }
    }

    deinit {
        intervalTimer?.cancel()
    }

    /// The first offset still in the log.
    public var startOffset: Int64 { lock.withLock { segments.first!.baseOffset } }
    /// The offset the next appended record gets.
    public var endOffset: Int64 { lock.withLock { nextOffset } }
    /// The offset after the last record readers may see (durable records only under `.always`).
    public var readableEndOffset: Int64 { lock.withLock { readableEnd } }
    /// Bytes of batches across all segments.
    public var sizeInBytes: Int { lock.withLock { segments.reduce(0) { $0 + $1.size } } }
    public var segmentCount: Int { lock.withLock { segments.count } }

    private var readableEnd: Int64 { configuration.fsync == .always ? durableOffset : nextOffset }

    /// Validates `batch` (one whole record batch, as published), stamps its base offset and append time,
    /// and writes it. Durability is separate: see `whenDurable`. A retried idempotent batch is not written again.
    public func append(_ batch: ByteBuffer) throws(TelexError) -> AppendResult {
        let header = try RecordBatch.validate(batch, limits: configuration.batchLimits, context: "batch for \(topic)")
        lock.lock()
        defer { lock.unlock() }
        if closed { throw TelexError(.shuttingDown, "log \(topic) is closed", topic: topic) }
        if let failure { throw TelexError(.storageFailure, "log \(topic) is failed: \(failure.message)", topic: topic) }
        if header.producerID != 0, let state = producers[header.producerID] {
            if let original = state.lookup(header.producerSequence) {
                return AppendResult(baseOffset: original.baseOffset, recordCount: original.recordCount, duplicate: true)
            }
            if state.isTooOld(header.producerSequence) {
                throw TelexError(.sequenceOutOfOrder,
                    "producer \(header.producerID) sequence \(header.producerSequence) is older than the \(ProducerState.remembered) batches remembered (oldest \(state.oldestRemembered ?? 0)); it may be a duplicate, so it was not stored",
                    topic: topic)
            }
        }
        let now = FileIO.nowMilliseconds()
        let appendTime = max(now, lastAppendTime)
        let baseOffset = nextOffset
        var active = segments.last!
        // Index entries hold offsets relative to the segment base as u32, so a segment also rolls before that overflows.
        if active.size > 0,
            active.size + batch.readableBytes > configuration.segmentBytes
                || now - (active.firstAppendTime ?? now) >= configuration.segmentAgeMilliseconds
                || baseOffset + Int64(header.recordCount) - active.baseOffset > Int64(UInt32.max)
        {
            active = try roll()
        }
        // The broker-assigned fields sit in the first 20 bytes; the rest is written as received.
        var stamped = ByteBuffer()
        stamped.writeMultipleIntegers(baseOffset, header.batchLength, appendTime)
        let rest = batch.getSlice(at: batch.readerIndex + 20, length: batch.readableBytes - 20)!
        var stampedHeader = header
        stampedHeader.baseOffset = baseOffset
        stampedHeader.appendTime = appendTime
        try active.append([stamped, rest], header: stampedHeader, indexInterval: configuration.indexIntervalBytes)
        nextOffset = stampedHeader.nextOffset
        lastAppendTime = appendTime
        if header.producerID != 0 {
            rememberProducer(header.producerID, sequence: header.producerSequence, baseOffset: baseOffset,
                             recordCount: header.recordCount, appendTime: appendTime)
        }
        return AppendResult(baseOffset: baseOffset, recordCount: header.recordCount, duplicate: false)
    }

    private func rememberProducer(_ id: Int64, sequence: Int32, baseOffset: Int64, recordCount: UInt32, appendTime: Int64) {
        if producers[id] == nil, producers.count >= Self.maxProducers {
            // Forget the least recently active half; a retry from one of them is then stored again as a new batch.
            let keep = producers.sorted { $0.value.lastAppendTime > $1.value.lastAppendTime }.prefix(Self.maxProducers / 2)
            producers = Dictionary(uniqueKeysWithValues: keep.map { ($0.key, $0.value) })
        }
        producers[id, default: ProducerState(lastAppendTime: appendTime)]
            .remember(sequence, baseOffset: baseOffset, recordCount: recordCount, appendTime: appendTime)
    }

    /// Seals the active segment (fsynced) and starts a new one. Caller holds the lock.
    private func roll() throws(TelexError) -> Segment {
        let old = segments.last!
        if let last = lastBatchOffset(in: old) { old.sealTimeIndex(lastBatchOffset: last) }
        try old.sync()
        let segment = try Segment(directory: directory, baseOffset: nextOffset)
        try FileIO.syncDirectory(directory)
        segments.append(segment)
        if configuration.fsync == .always { durableOffset = max(durableOffset, old.nextOffset) }
        logger.info("rolled segment", metadata: ["baseOffset": "\(nextOffset)"])
        return segment
    }

    private func lastBatchOffset(in segment: Segment) -> Int64? {
        guard segment.size > 0 else { return nil }
        var position = segment.indexedPosition(atOrBefore: segment.nextOffset).position
        var last: Int64?
        while let header = try? segment.header(at: position, limit: segment.size) {
            last = header.baseOffset
            position += header.totalSize
        }
        return last
    }

    /// Calls `callback` once the append that produced `result` is durable under this log's policy
    /// (at once for `.never` and `.interval`). Called on the fsync queue or the caller's thread.
    public func whenDurable(_ result: AppendResult, _ callback: @escaping @Sendable (Result<Void, TelexError>) -> Void) {
        guard configuration.fsync == .always else { return callback(.success(())) }
        lock.lock()
        if let failure {
            lock.unlock()
            return callback(.failure(failure))
        }
        if durableOffset >= result.nextOffset {
            lock.unlock()
            return callback(.success(()))
        }
        waiters.append((result.nextOffset, callback))
        let schedule = !syncScheduled
        syncScheduled = true
        lock.unlock()
        if schedule { syncQueue.async { self.syncNow() } }
    }

    /// Appends and waits until the batch is durable under this log's policy.
    public func appendDurably(_ batch: ByteBuffer) async throws -> AppendResult {
        let result = try append(batch)
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            whenDurable(result) { continuation.resume(with: $0) }
        }
        return result
    }

    /// One fsync covering every append made before it started, then the waiters it covers are completed.
    private func syncNow() {
        lock.lock()
        syncScheduled = false
        let target = nextOffset
        let active = segments.last!
        let needed = target > durableOffset
        lock.unlock()
        var result: Result<Void, TelexError> = .success(())
        if needed {
            do { try active.syncLog() } catch { result = .failure(error) }
        }
        lock.lock()
        var ready: [@Sendable (Result<Void, TelexError>) -> Void] = []
        switch result {
        case .success:
            ready = markDurable(upTo: target)
        case .failure(let error):
            // After a failed fsync the page cache can no longer be trusted: refuse further appends.
            failure = error
            ready = waiters.map(\.callback)
            waiters = []
            logger.error("fsync failed; log refuses further appends", metadata: ["error": "\(error)"])
        }
        let more = !waiters.isEmpty && !syncScheduled
        if more { syncScheduled = true }
        lock.unlock()
        for callback in ready { callback(result) }
        if more { syncQueue.async { self.syncNow() } }
    }

    /// Advances the durable offset and removes the waiters it now covers, returning their callbacks to call
    /// once the lock is released. Caller holds the lock.
    private func markDurable(upTo target: Int64) -> [@Sendable (Result<Void, TelexError>) -> Void] {
        durableOffset = max(durableOffset, target)
        var ready: [@Sendable (Result<Void, TelexError>) -> Void] = []
        waiters.removeAll { waiter in
            guard waiter.offset <= durableOffset else { return false }
            ready.append(waiter.callback)
            return true
        }
        return ready
    }

    private func startIntervalTimer(_ milliseconds: Int) {
        let timer = DispatchSource.makeTimerSource(queue: syncQueue)
        timer.schedule(deadline: .now() + .milliseconds(milliseconds), repeating: .milliseconds(milliseconds))
        timer.setEventHandler { [weak self] in self?.syncNow() }
        timer.resume()
        intervalTimer = timer
    }

    /// Whole stored batches starting with the one that holds `offset`, up to `maxBytes` (at least one batch)
    /// and `maxBatches`; nil when `offset` is at or past the readable end. Offsets below the log start throw.
    public func read(from offset: Int64, maxBytes: Int, maxBatches: Int = .max) throws(TelexError) -> LogSlice? {
        var offset = offset
        while true {
            lock.lock()
            let start = segments.first!.baseOffset
            guard offset >= start else {
                lock.unlock()
                throw TelexError(.offsetOutOfRange, "offset \(offset) is out of range for \(topic) (log starts at \(start))",
                                 topic: topic, offset: offset)
            }
            let end = readableEnd
            guard offset < end else {
                lock.unlock()
                return nil
            }
            let index = segmentIndex(containing: offset)
            let segment = segments[index]
            let following = index + 1 < segments.count ? segments[index + 1].baseOffset : nil
            let position = segment.indexedPosition(atOrBefore: offset).position
            let limit = segment.size
            lock.unlock()
            if let slice = try collect(segment, from: position, limit: limit, offset: offset, end: end,
                                       maxBytes: maxBytes, maxBatches: maxBatches) {
                return slice
            }
            // The offset fell in a gap left by a cut segment: continue at the next one.
            guard let following, following > offset else { return nil }
            offset = following
        }
    }

    private func collect(
        _ segment: Segment, from position: Int, limit: Int, offset: Int64, end: Int64, maxBytes: Int, maxBatches: Int
    ) throws(TelexError) -> LogSlice? {
        var position = position
        var header = try segment.header(at: position, limit: limit)
        while let current = header, current.nextOffset <= offset {
            position += current.totalSize
            header = try segment.header(at: position, limit: limit)
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
            header = try segment.header(at: position, limit: limit)
        }
        return LogSlice(segment: segment, position: startPosition, length: bytes, firstOffset: first.baseOffset,
                        nextOffset: next, batchCount: count)
    }

    /// Index of the last segment whose base offset is at or below `offset`. Caller holds the lock.
    private func segmentIndex(containing offset: Int64) -> Int {
        var low = 0
        var high = segments.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if segments[middle].baseOffset <= offset { low = middle } else { high = middle - 1 }
        }
        return low
    }

    /// The first offset appended at or after `timestamp` (ms since the epoch), or the readable end if none.
    public func offset(atOrAfter timestamp: Int64) throws(TelexError) -> Int64 {
        lock.lock()
        let snapshot = segments.map { ($0, $0.lastAppendTime, $0.size) }
        let end = readableEnd
        lock.unlock()
        for (segment, last, size) in snapshot {
            guard let last, last >= timestamp else { continue }
            lock.lock()
            let from = segment.indexedOffset(before: timestamp)
            var position = segment.indexedPosition(atOrBefore: from).position
            lock.unlock()
            while let header = try segment.header(at: position, limit: size) {
                if header.appendTime >= timestamp { return min(header.baseOffset, end) }
                position += header.totalSize
            }
        }
        return end
    }

    /// Deletes whole old segments past the retention age or size; the active segment is never deleted.
    @discardableResult
    public func applyRetention(now: Int64? = nil) throws(TelexError) -> Int {
        let now = now ?? FileIO.nowMilliseconds()
        lock.lock()
        defer { lock.unlock() }
        var total = segments.reduce(0) { $0 + $1.size }
        var deleted = 0
        while segments.count > 1 {
            let oldest = segments[0]
            let tooOld = configuration.retentionMilliseconds.map { (oldest.lastAppendTime ?? now) < now - $0 } ?? false
            let tooBig = configuration.retentionBytes.map { total > $0 } ?? false
            guard tooOld || tooBig else { break }
            try oldest.deleteFiles()
            segments.removeFirst()
            total -= oldest.size
            deleted += 1
            logger.info("retention deleted segment", metadata: [
                "segment": "\(oldest.logPath)", "reason": "\(tooOld ? "age" : "size")",
                "logStartOffset": "\(segments[0].baseOffset)",
            ])
        }
        if deleted > 0 { try FileIO.syncDirectory(directory) }
        return deleted
    }

    /// Rebuilds producer memory from the batch headers of the newest two segments.
    private func rebuildProducerState() throws(TelexError) {
        for segment in segments.suffix(2) {
            var position = 0
            while let header = try segment.header(at: position, limit: segment.size) {
                if header.producerID != 0 {
                    rememberProducer(header.producerID, sequence: header.producerSequence, baseOffset: header.baseOffset,
                                     recordCount: header.recordCount, appendTime: header.appendTime)
                }
                position += header.totalSize
            }
        }
    }

    /// Fsyncs everything written so far and completes durability waiters.
    public func sync() throws(TelexError) {
        lock.lock()
        let active = segments.last!
        let target = nextOffset
        lock.unlock()
        try active.sync()
        lock.lock()
        let ready = markDurable(upTo: target)
        lock.unlock()
        for callback in ready { callback(.success(())) }
    }

    /// Flushes and fsyncs everything, seals the time index and refuses further appends.
    public func close() throws(TelexError) {
        intervalTimer?.cancel()
        intervalTimer = nil
        try sync()
        lock.withLock {
            closed = true
            let active = segments.last!
            if let last = lastBatchOffset(in: active) { active.sealTimeIndex(lastBatchOffset: last) }
        }
        try segments.last!.sync()
    }
}
