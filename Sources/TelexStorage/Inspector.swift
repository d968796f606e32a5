#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import TelexProtocol

/// Walks a data directory offline and describes every stored batch, as `kafka-dump-log` does for Kafka.
public enum StorageInspector {
    /// Calls `emit` with one JSON object (a line of JSON Lines) per batch, and one per problem found:
    /// topic, segment, position, offsets, record count, timestamps, codec, size and whether the CRC holds.
    public static func dump(dataDirectory: String, topic only: String? = nil, emit: (String) -> Void) throws(TelexError) {
        let topicsDirectory = dataDirectory + "/topics"
        guard FileIO.isDirectory(topicsDirectory) else {
            throw TelexError(.storageFailure, "\(dataDirectory) is not a Telex data directory (no topics/ folder)")
        }
        for topic in try FileIO.listDirectory(topicsDirectory)
        where (only == nil || only == topic) && FileIO.isDirectory(topicsDirectory + "/" + topic) {
            let directory = topicsDirectory + "/" + topic
            for name in try FileIO.listDirectory(directory) where name.hasSuffix(".log") {
                try dumpSegment(topic: topic, path: directory + "/" + name, emit: emit)
            }
        }
    }

    static func dumpSegment(topic: String, path: String, emit: (String) -> Void) throws(TelexError) {
        let fd = try FileIO.open(path, flags: O_RDONLY)
        defer { close(fd) }
        let size = try FileIO.size(fd, path: path)
        let segment = String(path.split(separator: "/").last!)
        var position = 0
        var buffer = ByteBuffer()
        while position < size {
            buffer.clear()
            let got = try FileIO.read(fd, at: position, length: min(RecordBatchHeader.size, size - position),
                                      into: &buffer, path: path)
            guard got == RecordBatchHeader.size, let header = RecordBatchHeader.peek(buffer, at: 0) else {
                emit(problem(topic, segment, position, "torn batch header: \(size - position) bytes left"))
                return
            }
            guard header.totalSize >= RecordBatchHeader.size, position + header.totalSize <= size else {
                emit(problem(topic, segment, position,
                             "batch declares \(header.totalSize) bytes but \(size - position) remain"))
                return
            }
            buffer.clear()
            _ = try FileIO.read(fd, at: position, length: header.totalSize, into: &buffer, path: path)
            let crc = CRC32.checksum(buffer.getSlice(at: RecordBatchHeader.crcStart,
                                                     length: header.totalSize - RecordBatchHeader.crcStart)!)
            var fields: [(String, String)] = [
                ("topic", json(topic)), ("segment", json(segment)), ("position", "\(position)"),
                ("baseOffset", "\(header.baseOffset)"), ("lastOffset", "\(header.lastOffset)"),
                ("recordCount", "\(header.recordCount)"), ("firstTimestamp", "\(header.firstTimestamp)"),
                ("lastTimestamp", "\(header.lastTimestamp)"), ("appendTime", "\(header.appendTime)"),
                ("codec", json(header.codec?.description ?? "unknown(\(header.codecRaw))")),
                ("size", "\(header.totalSize)"), ("uncompressedLength", "\(header.uncompressedLength)"),
                ("producerId", "\(header.producerID)"), ("producerSequence", "\(header.producerSequence)"),
                ("crc", json(RecordBatch.hex(header.crc))), ("crcValid", crc == header.crc ? "true" : "false"),
            ]
            if crc != header.crc { fields.append(("computedCrc", json(RecordBatch.hex(crc)))) }
            emit("{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}")
            position += header.totalSize
        }
    }

    static func problem(_ topic: String, _ segment: String, _ position: Int, _ message: String) -> String {
        "{\"topic\":\(json(topic)),\"segment\":\(json(segment)),\"position\":\(position),\"error\":\(json(message))}"
    }

    /// A JSON string literal.
    static func json(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}
