#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Glibc
import NIOCore
import TelexProtocol

/// Walks a data directory offline and describes every stored batch, as `kafka-dump-log` does for Kafka.
public enum StorageInspector {
    /// One stored batch as the inspector saw it; encodes to the JSON object `dump` prints.
    public struct BatchDescription: Codable, Sendable, Equatable {
        public var topic: String
        /// The segment file's name, e.g. `00000000000000000000.log`.
        public var segment: String
        /// Byte position of the batch in the segment file.
        public var position: Int
        public var baseOffset: Int64
        public var lastOffset: Int64
        public var recordCount: UInt32
        public var firstTimestamp: Int64
        public var lastTimestamp: Int64
        public var appendTime: Int64
        /// `none`, `zlib`, or `unknown(N)` for a codec this build does not know.
        public var codec: String
        /// Bytes of the whole stored batch.
        public var size: Int
        public var uncompressedLength: UInt32
        public var producerId: Int64
        public var producerSequence: Int32
        /// The CRC stored in the batch, as `0x` and 8 hex digits.
        public var crc: String
        public var crcValid: Bool
        /// The CRC of the bytes as found, present only when it differs from `crc`.
        public var computedCrc: String?
    }

    /// Why the inspector stopped reading a segment early: a torn or truncated batch at `position`.
    public struct Problem: Codable, Sendable, Equatable {
        public var topic: String
        public var segment: String
        public var position: Int
        public var error: String
    }

    /// A segment's key index file (`.keys`, Protocol/STORAGE.md §14) as the inspector read it.
    public struct KeyIndexDescription: Codable, Sendable, Equatable {
        public var topic: String
        /// The `.keys` file's name, e.g. `00000000000000000000.keys`.
        public var keyIndex: String
        /// Distinct keys, versions (records indexed, tombstones included) and tombstones; nil when damaged.
        public var keys: Int?
        public var versions: Int?
        public var tombstones: Int?
        /// Why the file cannot be used (the broker rebuilds it), present only then.
        public var error: String?
    }

    /// A rewritten segment's compaction marker (`.compacted`, Protocol/STORAGE.md §15.2) as the inspector read it.
    public struct CompactionDescription: Codable, Sendable, Equatable {
        public var topic: String
        /// The marker's name, e.g. `00000000000000000000.compacted`.
        public var compacted: String
        /// The segment's logical end (offsets up to it are in the segment or removed), records left, records
        /// removed by every rewrite, and rewrites so far; nil when the marker is damaged.
        public var endOffset: Int64?
        public var recordsKept: Int64?
        public var recordsRemoved: Int64?
        public var rewrites: UInt32?
        /// Why the marker cannot be read, present only then.
        public var error: String?
    }

    /// What `inspect` reports: a batch, the problem that ended a segment, a segment's key index, or its
    /// compaction marker.
    public enum Finding: Sendable, Equatable {
        case batch(BatchDescription)
        case problem(Problem)
        case keyIndex(KeyIndexDescription)
        case compaction(CompactionDescription)
    }

    /// Calls `emit` with one JSON object (a line of JSON Lines, keys sorted) per batch, and one per problem
    /// found: topic, segment, position, offsets, record count, timestamps, codec, size and whether the CRC holds;
    /// after each segment with a `.keys` file, one with its key, version and tombstone counts; and after each
    /// rewritten segment, one for its compaction marker.
    public static func dump(dataDirectory: String, topic only: String? = nil, emit: (String) -> Void) throws(TelexError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        try inspect(dataDirectory: dataDirectory, topic: only) { finding in
            // Encoding these plain structs of strings, integers and booleans cannot fail.
            let data = switch finding {
            case .batch(let batch): try! encoder.encode(batch)
            case .problem(let problem): try! encoder.encode(problem)
            case .keyIndex(let keys): try! encoder.encode(keys)
            case .compaction(let marker): try! encoder.encode(marker)
            }
            emit(String(decoding: data, as: UTF8.self))
        }
    }

    /// Calls `visit` with every stored batch of every topic (or only `topic`), segment by segment, and with the
    /// problem that ends a damaged segment. Reads files only; run it on a stopped broker's data directory.
    public static func inspect(
        dataDirectory: String, topic only: String? = nil, _ visit: (Finding) -> Void
    ) throws(TelexError) {
        let topicsDirectory = dataDirectory + "/topics"
        guard FileIO.isDirectory(topicsDirectory) else {
            throw TelexError(.storageFailure, "\(dataDirectory) is not a Telex data directory (no topics/ folder)")
        }
        for topic in try FileIO.listDirectory(topicsDirectory)
        where (only == nil || only == topic) && FileIO.isDirectory(topicsDirectory + "/" + topic) {
            let directory = topicsDirectory + "/" + topic
            for name in try FileIO.listDirectory(directory) where name.hasSuffix(".log") {
                try inspectSegment(topic: topic, path: directory + "/" + name, visit)
                let keysName = String(name.dropLast(4)) + KeyTableFile.suffix
                if let bytes = try Segment.readKeysFile(directory + "/" + keysName) {
                    visit(.keyIndex(describeKeys(topic: topic, file: keysName, bytes)))
                }
                // After a rewritten segment's batches (whose offsets then have gaps), its marker.
                if let base = Int64(name.dropLast(4)), let marker = CompactionMarker.load(directory: directory, baseOffset: base) {
                    let file = Segment.fileName(base, CompactionMarker.suffix)
                    visit(.compaction(marker.valid
                        ? CompactionDescription(
                            topic: topic, compacted: file, endOffset: marker.endOffset, recordsKept: marker.recordsKept,
                            recordsRemoved: marker.recordsRemoved, rewrites: marker.rewrites)
                        : CompactionDescription(topic: topic, compacted: file, error: "not a valid compaction marker")))
                }
            }
        }
    }

    /// The counts of a `.keys` file, or why it is damaged. It is not checked against its segment (verify does).
    static func describeKeys(topic: String, file: String, _ bytes: ByteBuffer) -> KeyIndexDescription {
        do throws(TelexError) {
            let keys = try KeyTableFile.decode(bytes, path: file).keys
            return KeyIndexDescription(
                topic: topic, keyIndex: file, keys: keys.distinctKeys, versions: keys.entries.count,
                tombstones: keys.entries.tombstones)
        } catch {
            return KeyIndexDescription(topic: topic, keyIndex: file, error: error.message)
        }
    }

    static func inspectSegment(topic: String, path: String, _ visit: (Finding) -> Void) throws(TelexError) {
        let fd = try FileIO.open(path, flags: O_RDONLY)
        defer { close(fd) }
        let size = try FileIO.size(fd, path: path)
        let segment = String(path.split(separator: "/").last!)
        func problem(_ position: Int, _ message: String) -> Finding {
            .problem(Problem(topic: topic, segment: segment, position: position, error: message))
        }
        var position = 0
        var buffer = ByteBuffer()
        while position < size {
            buffer.clear()
            let got = try FileIO.read(fd, at: position, length: min(RecordBatchHeader.size, size - position),
                                      into: &buffer, path: path)
            guard got == RecordBatchHeader.size, let header = RecordBatchHeader.peek(buffer, at: 0) else {
                return visit(problem(position, "torn batch header: \(size - position) bytes left"))
            }
            guard header.totalSize >= RecordBatchHeader.size, position + header.totalSize <= size else {
                return visit(problem(position, "batch declares \(header.totalSize) bytes but \(size - position) remain"))
            }
            buffer.clear()
            _ = try FileIO.read(fd, at: position, length: header.totalSize, into: &buffer, path: path)
            let crc = CRC32.checksum(buffer.getSlice(at: RecordBatchHeader.crcStart,
                                                     length: header.totalSize - RecordBatchHeader.crcStart)!)
            visit(.batch(BatchDescription(
                topic: topic, segment: segment, position: position, baseOffset: header.baseOffset,
                lastOffset: header.lastOffset, recordCount: header.recordCount,
                firstTimestamp: header.firstTimestamp, lastTimestamp: header.lastTimestamp,
                appendTime: header.appendTime, codec: header.codec?.description ?? "unknown(\(header.codecRaw))",
                size: header.totalSize, uncompressedLength: header.uncompressedLength,
                producerId: header.producerID, producerSequence: header.producerSequence,
                crc: RecordBatch.hex(header.crc), crcValid: crc == header.crc,
                computedCrc: crc == header.crc ? nil : RecordBatch.hex(crc))))
            position += header.totalSize
        }
    }
}
