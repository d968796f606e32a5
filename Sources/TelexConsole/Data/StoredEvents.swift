import NIOCore
import TelexEvents
import TelexProtocol
import TelexStorage

/// One stored record as the console read it: where and when the broker stored it, and the record, or why its batch
/// could not be decoded.
struct StoredRecord: Sendable {
    var topic: String
    var offset: Int64
    var brokerTime: Int64
    /// Nil when the batch holding it could not be decoded (`problem` says why).
    var record: Record?
    var problem: String?
    /// The size of a value too large to show (the record then keeps its key and headers, not its value).
    var omittedValueBytes: Int?
    /// Set on a note standing for offsets the log lost (a damaged range it cannot read): `problem` says why.
    var lostOffsets: Range<Int64>?

    /// Bytes of the value an answer carries: none for a value left out.
    var valueBytes: Int { omittedValueBytes == nil ? record?.value.readableBytes ?? 0 : 0 }

    /// This record without its value, which is larger than `limit` bytes: it shows as a note.
    func omittingValue(over limit: Int) -> StoredRecord {
        guard let size = record?.value.readableBytes, size > limit else { return self }
        var omitted = self
        omitted.record?.value = ByteBuffer()
        omitted.omittedValueBytes = size
        return omitted
    }

    /// The stored CloudEvents envelope, or a note naming the offset and what is wrong with the value.
    var envelope: Result<[String: JSONValue], TelexError> {
        if let lost = lostOffsets {
            let offsets = lost.count == 1
                ? "offset \(lost.lowerBound)" : "offsets \(lost.lowerBound)-\(lost.upperBound - 1)"
            return .failure(TelexError(.dataLoss,
                "\(offsets) of \(topic) could not be read (`telexd verify` reports the damage): "
                    + (problem ?? "damaged stored bytes"), topic: topic, offset: lost.lowerBound))
        }
        guard let record else {
            return .failure(TelexError(.invalidBatch,
                "record \(topic)@\(offset) could not be decoded: \(problem ?? "unknown reason")", topic: topic,
                offset: offset))
        }
        if let size = omittedValueBytes {
            return .failure(TelexError(.batchTooLarge,
                "the value of \(topic)@\(offset) is \(size) bytes, more than the console shows in one answer; "
                    + "read it with telex-sub (from offset \(offset))", topic: topic, offset: offset))
        }
        do {
            return .success(try CloudEvent.storedEnvelope(value: record.value, topic: topic, offset: offset))
        } catch {
            return .failure(TelexError(error.code,
                "\(error.message) (\(record.value.readableBytes) bytes); shown as this note instead", topic: topic,
                offset: offset))
        }
    }

    /// The article uri: the record key.
    var uri: String { record.map { String(decoding: $0.key.readableBytesView, as: UTF8.self) } ?? "" }

    /// The event as the topic page shows it; an undecodable value still shows, as a note (type "").
    var eventJSON: EventJSON {
        switch envelope {
        case .success(let envelope):
            let version = ArticleVersion(topic: topic, offset: offset, brokerTime: brokerTime, event: envelope)
            let type = version.type.isEmpty ? record?.header("ce-type") ?? "" : version.type
            return EventJSON(
                topic: topic, offset: offset, brokerTime: brokerTime, type: type,
                id: envelope["id"]?.stringValue ?? record?.header("ce-id") ?? "", uri: uri, headline: version.headline,
                event: .object(envelope))
        case .failure(let error):
            // A value left out for its size still says its type (from the header); an undecodable one has none.
            let type = omittedValueBytes == nil ? "" : record?.header("ce-type") ?? ""
            return EventJSON(
                topic: topic, offset: offset, brokerTime: brokerTime, type: type, id: record?.header("ce-id") ?? "",
                uri: uri, headline: nil, event: .string(error.message))
        }
    }
}

/// Reads of stored records for the console. Log reads use `readForDelivery`, as the server's delivery pump does:
/// the blocking parts (headers, batches, CRC checks of segments sealed before the broker started) run on
/// `NIOThreadPool.singleton`, and an archived segment not open yet is fetched outside it (`fetchArchived`). The
/// blocking `TopicLog.read` would park a pool thread waiting for a download whose file writes need that same pool:
/// a few console reads below the local log would deadlock it.
enum StoredEvents {
    /// Bytes of batches one log read asks for.
    static let readBytes = 256 * 1024
    /// Largest value an answer carries; a larger one shows as a note (also when larger than the answer's budget).
    static let maxShownValueBytes = 1024 * 1024

    /// What one step of `read` found.
    private enum Step<T: Sendable>: Sendable {
        case done(T)
        case fetch(Int64)
    }

    /// `body` applied, on the thread pool, to the slice of whole batches of `log` from `offset` (nil at the readable
    /// end); fetches and CRC checks first what the read needs. `offset` below the log's start throws
    /// OFFSET_OUT_OF_RANGE, one in a damaged range DATA_LOSS (from the log) unless `skipDamaged` reads on after it.
    static func read<T: Sendable>(
        _ log: TopicLog, from offset: Int64, maxBytes: Int, maxBatches: Int = .max, skipDamaged: Bool = false,
        _ body: @escaping @Sendable (LogSlice?) throws(TelexError) -> T
    ) async throws(TelexError) -> T {
        while true {
            let step = try await BrokerConsoleData.offload { () throws(TelexError) -> Step<T> in
                while true {
                    switch try log.readForDelivery(from: offset, maxBytes: maxBytes, maxBatches: maxBatches,
                                                   skipDamaged: skipDamaged) {
                    case .end: return .done(try body(nil))
                    case .slice(let slice): return .done(try body(slice))
                    case .needsCheck(let at): try log.checkSegment(containing: at)
                    case .needsFetch(let at): return .fetch(at)
                    }
                }
            }
            switch step {
            case .done(let value): return value
            case .fetch(let at): try await log.fetchArchived(containing: at)
            }
        }
    }

    /// Up to `limit` records of `log` from `start` below `end`, oldest first, holding at most `maxBytes` of values
    /// (at least one record; a value over `maxShownValueBytes` or `maxBytes` is left out, the record shown as a
    /// note), and the offset to read on from: the first one not returned. A damaged range the read reaches shows as
    /// one note (`damageNote`) and the read goes on after it, so pages and tails are not stopped by it. `start`
    /// below the log's start throws OFFSET_OUT_OF_RANGE (from the log).
    static func records(
        of log: TopicLog, from start: Int64, end: Int64, limit: Int, maxBytes: Int
    ) async throws(TelexError) -> (records: [StoredRecord], next: Int64) {
        var found: [StoredRecord] = []
        var bytes = 0
        // Where the next answer starts when this one stops early: at a record left out, or after the last one sent.
        var stopped: Int64?
        let walked = try await walk(log, from: start, end: end, limit: limit) { stored in
            let shown = stored.omittingValue(over: min(maxBytes, maxShownValueBytes))
            if !found.isEmpty, bytes + shown.valueBytes > maxBytes {
                stopped = shown.offset
                return false
            }
            found.append(shown)
            bytes += shown.valueBytes
            guard found.count < limit else {
                stopped = shown.lostOffsets?.upperBound ?? shown.offset + 1
                return false
            }
            return true
        }
        return (found, stopped ?? walked)
    }

    /// Where the newest records below `end` that fit `maxBytes` of values begin (`records`' accounting: a value
    /// shown as a note counts nothing), looking no further back than `first`; at least the newest record. A pass
    /// over the window's batches that sums value sizes without decoding any JSON, so that the page read from there
    /// ends at `end` rather than dropping the newest records.
    static func newestStart(
        of log: TopicLog, first: Int64, end: Int64, maxBytes: Int
    ) async throws(TelexError) -> Int64 {
        var sizes: [(offset: Int64, bytes: Int)] = []
        _ = try await walk(log, from: first, end: end, limit: .max) { stored in
            sizes.append((stored.offset, stored.omittingValue(over: min(maxBytes, maxShownValueBytes)).valueBytes))
            return true
        }
        var bytes = 0
        var start = end
        for (index, size) in sizes.enumerated().reversed() {
            if index < sizes.count - 1, bytes + size.bytes > maxBytes { break }
            bytes += size.bytes
            start = size.offset
        }
        return start
    }

    /// Calls `body` with the records of `log` from `start` below `end` (at most `limit`), oldest first, and a note
    /// for each damaged range on the way (`damageNote`), until it returns false; returns the offset the walk got to
    /// when `body` did not stop it.
    private static func walk(
        _ log: TopicLog, from start: Int64, end: Int64, limit: Int, _ body: (StoredRecord) -> Bool
    ) async throws(TelexError) -> Int64 {
        var count = 0
        var offset = start
        while count < limit, offset < end {
            let from = offset
            let wanted = limit - count
            let read: (next: Int64, records: [StoredRecord])?
            do throws(TelexError) {
                read = try await Self.read(log, from: from, maxBytes: readBytes) { slice in
                    slice.map {
                        ($0.nextOffset, BatchReader(log: log).records(in: $0, within: from..<end, limit: wanted))
                    }
                }
            } catch where error.code == .dataLoss || error.code == .corruptBatch {
                let note = try await damageNote(log, at: from, end: end, loss: error)
                count += 1
                guard body(note) else { return from }
                offset = note.lostOffsets?.upperBound ?? from + 1
                continue
            }
            guard let (sliceNext, records) = read else { break }
            for stored in records {
                count += 1
                guard body(stored) else { return stored.offset }
            }
            guard sliceNext > offset else { break }
            // A slice may run past `end` (appends after the caller's snapshot): the records there are not returned,
            // so the next read starts at `end`, not after them.
            offset = min(sliceNext, end)
        }
        return offset
    }

    /// A note for the damaged range holding `offset` (the log said `error`): it stands for the offsets from there
    /// up to the next readable batch, which a read that skips damage (as `telex-sub --skip-damaged` does) finds.
    static func damageNote(
        _ log: TopicLog, at offset: Int64, end: Int64, loss: TelexError
    ) async throws(TelexError) -> StoredRecord {
        let next: Int64
        do throws(TelexError) {
            next = try await Self.read(log, from: offset, maxBytes: 1, maxBatches: 1, skipDamaged: true) { slice in
                min(slice?.firstOffset ?? end, end)
            }
        } catch {
            // The log cannot say where the damage ends either: the loss it reported is the better answer.
            throw loss
        }
        return StoredRecord(topic: log.topic, offset: offset, brokerTime: 0, record: nil, problem: loss.message,
                            lostOffsets: offset..<max(next, offset + 1))
    }

    /// The records of `versions` (key versions of their logs, oldest first), newest first, while their values fit
    /// in `maxBytes` (at least one; values over `maxShownValueBytes` or `maxBytes` left out, shown as notes), and how
    /// many older ones did not fit. Versions retention removed meanwhile are left out; one the log cannot read
    /// (damage) comes back as a record with its problem, at the version's append time.
    static func newestRecords(
        of versions: [(log: TopicLog, version: KeyVersion)], maxBytes: Int
    ) async throws(TelexError) -> (records: [StoredRecord], dropped: Int) {
        let valueLimit = min(maxBytes, maxShownValueBytes)
        var found: [StoredRecord] = []
        var bytes = 0
        for (index, (log, version)) in versions.reversed().enumerated() {
            let offset = version.offset
            var stored: StoredRecord?
            do throws(TelexError) {
                stored = try await Self.read(log, from: offset, maxBytes: 1, maxBatches: 1) { slice in
                    slice.flatMap { BatchReader(log: log).records(in: $0, within: offset..<offset + 1, limit: 1).first }
                }
            } catch where error.code == .offsetOutOfRange {
                stored = nil
            } catch where error.code == .dataLoss || error.code == .corruptBatch {
                stored = StoredRecord(topic: log.topic, offset: offset, brokerTime: version.appendTime, record: nil,
                                      problem: error.message)
            }
            // A batch that could not be decoded has no time of its own: the key index knows it.
            if stored?.record == nil { stored?.brokerTime = version.appendTime }
            guard let shown = stored?.omittingValue(over: valueLimit) else { continue }
            if !found.isEmpty, bytes + shown.valueBytes > maxBytes { return (found, versions.count - index) }
            found.append(shown)
            bytes += shown.valueBytes
        }
        return (found, 0)
    }
}

/// Decodes the batches of log slices into records, as subscribers do; a batch that does not decode becomes one
/// `StoredRecord` per offset it names, each carrying the reason.
struct BatchReader {
    let log: TopicLog
    private let decompressor = BatchDecompressor()

    init(log: TopicLog) {
        self.log = log
    }

    /// The records of `slice` whose offsets are in `range`, at most `limit`, oldest first.
    func records(in slice: LogSlice, within range: Range<Int64>, limit: Int) -> [StoredRecord] {
        let topic = log.topic
        let bytes: ByteBuffer
        let batches: [ByteBuffer]
        do throws(TelexError) {
            bytes = try slice.readBytes()
            batches = try RecordBatch.split(bytes, context: "\(topic) at offset \(slice.firstOffset)")
        } catch {
            return Self.undecodable(topic: topic, offsets: (slice.firstOffset..<slice.nextOffset).clamped(to: range),
                                    brokerTime: 0, problem: error.message, limit: limit)
        }
        var found: [StoredRecord] = []
        for batch in batches where found.count < limit {
            guard let header = RecordBatchHeader.peek(batch, at: batch.readerIndex) else { continue }
            do throws(TelexError) {
                let (_, records) = try RecordBatch.decodeRecords(
                    batch, limits: log.configuration.batchLimits, decompressor: decompressor,
                    context: "\(topic) batch at offset \(header.baseOffset)")
                for (index, record) in records.enumerated() where found.count < limit {
                    let offset = header.baseOffset + Int64(index)
                    guard range.contains(offset) else { continue }
                    found.append(StoredRecord(topic: topic, offset: offset, brokerTime: header.appendTime,
                                              record: record, problem: nil))
                }
            } catch {
                found += Self.undecodable(
                    topic: topic, offsets: (header.baseOffset..<header.nextOffset).clamped(to: range),
                    brokerTime: header.appendTime, problem: error.message, limit: limit - found.count)
            }
        }
        return found
    }

    /// Placeholders for the first `limit` offsets of a batch that could not be decoded.
    private static func undecodable(
        topic: String, offsets: Range<Int64>, brokerTime: Int64, problem: String, limit: Int
    ) -> [StoredRecord] {
        offsets.prefix(limit).map {
            StoredRecord(topic: topic, offset: $0, brokerTime: brokerTime, record: nil, problem: problem)
        }
    }
}
