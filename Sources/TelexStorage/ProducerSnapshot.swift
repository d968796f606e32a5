import NIOCore
import TelexProtocol

#if canImport(Glibc)
    import Glibc
#endif

/// A topic's producer memory as of an offset, kept in `<topic>/producers.snapshot` (Protocol/STORAGE.md §8), so
/// that a retry is still recognised after a restart however many segments ago its producer last wrote.
///
/// Layout (big-endian): magic `TXPS`, u16 version 1, u16 reserved 0, i64 offset (the snapshot covers every batch
/// below it), u32 producer count, then per producer i64 id, i64 last append time, u32 entry count and per entry
/// i32 sequence, i64 base offset, u32 record count (oldest first); last, the CRC-32 of everything before it.
struct ProducerSnapshot {
    static let fileName = "producers.snapshot"
    static let magic: UInt32 = 0x5458_5053
    static let version: UInt16 = 1
    /// Batches kept per producer: its newest, twice the client's default publish window (a retry re-sends only
    /// batches still awaiting their ack).
    static let entriesPerProducer = 128

    /// Every batch below this offset is reflected in `producers`.
    var offset: Int64
    var producers: [Int64: ProducerState]

    func encoded() -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeMultipleIntegers(Self.magic, Self.version, UInt16(0), offset, UInt32(producers.count))
        for (id, producer) in producers.sorted(by: { $0.key < $1.key }) {
            let entries = producer.recent(Self.entriesPerProducer)
            buffer.writeMultipleIntegers(id, producer.lastAppendTime, UInt32(entries.count))
            for entry in entries { buffer.writeMultipleIntegers(entry.sequence, entry.baseOffset, entry.recordCount) }
        }
        buffer.writeInteger(CRC32.checksum(buffer))
        return buffer
    }

    /// Decodes a whole snapshot file; throws naming `path` and what is wrong with it.
    init(decoding bytes: ByteBuffer, path: String) throws(TelexError) {
        func damaged(_ what: String) -> TelexError {
            TelexError(.storageFailure, "\(path) is not a valid producer snapshot: \(what)")
        }
        guard bytes.readableBytes >= 24 else { throw damaged("\(bytes.readableBytes) bytes is too short") }
        let body = bytes.getSlice(at: bytes.readerIndex, length: bytes.readableBytes - 4)!
        let stored = bytes.getInteger(at: bytes.readerIndex + bytes.readableBytes - 4, as: UInt32.self)!
        guard CRC32.checksum(body) == stored else { throw damaged("CRC mismatch") }
        var reader = body
        guard
            let (magic, version, _, offset, count) = reader.readMultipleIntegers(
                as: (UInt32, UInt16, UInt16, Int64, UInt32).self), magic == Self.magic
        else { throw damaged("bad magic") }
        guard version == Self.version else { throw damaged("version \(version), this code reads \(Self.version)") }
        var producers: [Int64: ProducerState] = [:]
        for _ in 0..<count {
            guard let (id, lastAppendTime, entryCount) = reader.readMultipleIntegers(as: (Int64, Int64, UInt32).self)
            else { throw damaged("truncated producer") }
            var producer = ProducerState(lastAppendTime: lastAppendTime)
            for _ in 0..<entryCount {
                guard
                    let (sequence, baseOffset, recordCount) = reader.readMultipleIntegers(
                        as: (Int32, Int64, UInt32).self)
                else { throw damaged("truncated entry of producer \(id)") }
                producer.remember(
                    sequence, baseOffset: baseOffset, recordCount: recordCount, appendTime: lastAppendTime)
            }
            producers[id] = producer
        }
        guard reader.readableBytes == 0 else { throw damaged("\(reader.readableBytes) bytes after the last producer") }
        self.offset = offset
        self.producers = producers
    }

    init(offset: Int64, producers: [Int64: ProducerState]) {
        self.offset = offset
        self.producers = producers
    }

    /// The snapshot in `directory`, nil if there is none; throws if it cannot be read or is damaged. Blocking.
    static func load(directory: String) throws(TelexError) -> ProducerSnapshot? {
        let path = directory + "/" + fileName
        guard FileIO.exists(path) else { return nil }
        let fd = try FileIO.open(path, flags: O_RDONLY)
        defer { close(fd) }
        let size = try FileIO.size(fd, path: path)
        var buffer = ByteBuffer()
        _ = try FileIO.read(fd, at: 0, length: size, into: &buffer, path: path)
        return try ProducerSnapshot(decoding: buffer, path: path)
    }

    /// Replaces the snapshot in `directory` atomically (temporary file, fdatasync, rename, directory fsync). Blocking.
    func write(directory: String) throws(TelexError) {
        try FileIO.replaceAtomically(directory + "/" + Self.fileName, in: directory, with: encoded())
    }
}
