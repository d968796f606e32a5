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

    /// The stored CloudEvents envelope, or a note naming the offset and what is wrong with the value.
    var envelope: Result<[String: JSONValue], TelexError> {
        guard let record else {
            return .failure(TelexError(.invalidBatch,
                "record \(topic)@\(offset) could not be decoded: \(problem ?? "unknown reason")", topic: topic,
                offset: offset))
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
            return EventJSON(
                topic: topic, offset: offset, brokerTime: brokerTime, type: "", id: record?.header("ce-id") ?? "",
                uri: uri, headline: nil, event: .string(error.message))
        }
    }
}

/// Blocking reads of stored records for the console (`TopicLog.read` and file reads): run them on
/// `NIOThreadPool.singleton`, never on an event loop or the Swift concurrency pool.
enum StoredEvents {
    /// Bytes of batches one log read asks for.
    static let readBytes = 256 * 1024

    /// Up to `limit` records of `log` from `start` below `end`, oldest first, and the offset to read on from.
    /// `start` below the log's start throws OFFSET_OUT_OF_RANGE (from the log).
    static func records(
        of log: TopicLog, from start: Int64, end: Int64, limit: Int
    ) throws(TelexError) -> (records: [StoredRecord], next: Int64) {
        let reader = BatchReader(log: log)
        var found: [StoredRecord] = []
        var offset = start
        while found.count < limit, offset < end, let slice = try log.read(from: offset, maxBytes: readBytes) {
            for stored in reader.records(in: slice, within: offset..<end, limit: limit - found.count) {
                found.append(stored)
                if found.count == limit { return (found, stored.offset + 1) }
            }
            guard slice.nextOffset > offset else { break }
            offset = slice.nextOffset
        }
        return (found, offset)
    }

    /// The records at `offsets` (ascending) of `log`; a batch holding several is read once. Offsets retention
    /// removed meanwhile are left out; one the log cannot read (damage) comes back as a record with its problem.
    static func records(of log: TopicLog, at offsets: [Int64]) throws(TelexError) -> [StoredRecord] {
        let reader = BatchReader(log: log)
        var found: [StoredRecord] = []
        var batch: [StoredRecord] = []
        guard let last = offsets.last else { return [] }
        for offset in offsets {
            if batch.first.map({ offset < $0.offset }) ?? true || batch.last.map({ offset > $0.offset }) ?? true {
                do throws(TelexError) {
                    batch = try log.read(from: offset, maxBytes: 1, maxBatches: 1).map {
                        reader.records(in: $0, within: offset..<last + 1, limit: .max)
                    } ?? []
                } catch where error.code == .offsetOutOfRange {
                    batch = []
                } catch where error.code == .dataLoss || error.code == .corruptBatch {
                    found.append(StoredRecord(topic: log.topic, offset: offset, brokerTime: 0, record: nil,
                                              problem: error.message))
                    batch = []
                    continue
                }
            }
            if let stored = batch.first(where: { $0.offset == offset }) { found.append(stored) }
        }
        return found
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
