#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import TelexProtocol

/// Checks a data directory read-only, as `telexd verify` does: every batch of every segment (header, length,
/// offset chain, CRC, full validation, append times), every index entry, `FORMAT` and the consumer offset files.
///
/// It opens files read-only, takes no lock and writes nothing, so it may run beside a live broker; the active
/// segment's last batch may then be caught mid-write and reported (Protocol/STORAGE.md §10.1). Blocking.
public enum StorageVerifier {
    /// One problem: where it is (topic, file, byte position, offset) and what is wrong.
    public struct Finding: Sendable, Equatable, CustomStringConvertible {
        /// The topic, or nil for `FORMAT` and consumer offset files.
        public var topic: String?
        /// The segment file's name (`….log`, `….index`, `….timeindex`), or the path inside the data directory
        /// (`FORMAT`, `consumers/<name>.offsets`).
        public var file: String
        /// Byte position in `file`, when the problem is at one.
        public var position: Int?
        /// The record offset concerned, when known.
        public var offset: Int64?
        public var problem: String

        public init(topic: String?, file: String, position: Int?, offset: Int64?, problem: String) {
            self.topic = topic
            self.file = file
            self.position = position
            self.offset = offset
            self.problem = problem
        }

        /// One line: `news.world 00000000000000000000.log byte 20480 offset 145: CRC mismatch (…)`.
        public var description: String {
            var text = topic.map { "\($0) \(file)" } ?? file
            if let position { text += " byte \(position)" }
            if let offset { text += " offset \(offset)" }
            return text + ": " + problem
        }
    }

    /// What a run checked, and every problem it found, in the order found.
    public struct Report: Sendable, Equatable {
        public var topics = 0
        public var segments = 0
        public var batches = 0
        /// Bytes of segment files checked.
        public var bytes: Int64 = 0
        public var findings: [Finding] = []

        /// The closing line of `telexd verify`.
        public var summary: String {
            "checked \(topics) topics, \(segments) segments, \(batches) batches, \(bytes) bytes: \(findings.count) problems"
        }
    }

    /// Checks the data directory at `dataDirectory`, calling `found` with each problem as it is found.
    ///
    /// Throws `storageFailure` only when the directory is not a data directory or a file cannot be read;
    /// problems in the data are findings, not errors. `limits` are the broker's batch limits.
    public static func verify(
        dataDirectory: String, limits: RecordBatchLimits = .init(), found: (Finding) -> Void = { _ in }
    ) throws(TelexError) -> Report {
        let topicsDirectory = dataDirectory + "/topics"
        guard FileIO.isDirectory(topicsDirectory) else {
            throw TelexError(.storageFailure, "\(dataDirectory) is not a Telex data directory (no topics/ folder)")
        }
        return try withoutActuallyEscaping(found) { found throws(TelexError) in
            var run = Run(limits: limits, found: found)
            run.verifyFormat(dataDirectory)
            // Like the store, only directories with a valid topic name are topics.
            for topic in try FileIO.listDirectory(topicsDirectory)
            where (try? TopicName.validate(topic)) != nil && FileIO.isDirectory(topicsDirectory + "/" + topic) {
                try run.verifyTopic(topic, directory: topicsDirectory + "/" + topic)
            }
            try run.verifyConsumers(dataDirectory + "/consumers")
            return run.report
        }
    }

    /// The state of one run: the report so far and the reusable inflate buffers.
    private struct Run {
        let limits: RecordBatchLimits
        let found: (Finding) -> Void
        var report = Report()
        let decompressor = ZlibDecompressor()
        var scratch = ByteBuffer()

        init(limits: RecordBatchLimits, found: @escaping (Finding) -> Void) {
            self.limits = limits
            self.found = found
        }

        mutating func add(_ topic: String?, _ file: String, _ position: Int?, _ offset: Int64?, _ problem: String) {
            let finding = Finding(topic: topic, file: file, position: position, offset: offset, problem: problem)
            report.findings.append(finding)
            found(finding)
        }

        mutating func verifyFormat(_ dataDirectory: String) {
            let path = dataDirectory + "/" + StorageFormat.fileName
            // A directory written before FORMAT existed has none; the broker writes it on open.
            guard FileIO.exists(path) else { return }
            do {
                let version = try StorageFormat.read(path)
                if version > StorageFormat.current {
                    add(nil, StorageFormat.fileName, nil, nil,
                        "storage format \(version) is newer than this telexd reads (up to \(StorageFormat.current))")
                }
            } catch {
                add(nil, StorageFormat.fileName, nil, nil, error.message)
            }
        }

        mutating func verifyConsumers(_ directory: String) throws(TelexError) {
            guard FileIO.isDirectory(directory) else { return }
            for name in try FileIO.listDirectory(directory) where name.hasSuffix(".offsets") {
                let file = "consumers/" + name
                do {
                    for (topic, position) in try ConsumerOffsets.load(directory + "/" + name).sorted(by: { $0.key < $1.key })
                    where position.offset < 0 {
                        add(nil, file, nil, position.offset, "negative committed offset for \(topic)")
                    }
                } catch {
                    add(nil, file, nil, nil, error.message)
                }
            }
        }

        mutating func verifyTopic(_ topic: String, directory: String) throws(TelexError) {
            report.topics += 1
            // Only `<20 digits>.log` files define segments, as in the store; `damaged/` and other entries are not.
            let bases = try FileIO.listDirectory(directory).compactMap { name -> Int64? in
                guard name.hasSuffix(".log"), !FileIO.isDirectory(directory + "/" + name) else { return nil }
                return Int64(name.dropLast(4))
            }.sorted()
            var chain = TopicChain()
            for base in bases {
                try verifySegment(topic, directory: directory, baseOffset: base, chain: &chain)
            }
        }

        /// Checks one segment's `.log` and its two indexes. The indexes are read first, so on a live broker
        /// every entry read names a batch already in the log (entries are written after their batch).
        mutating func verifySegment(
            _ topic: String, directory: String, baseOffset: Int64, chain: inout TopicChain
        ) throws(TelexError) {
            let logName = Segment.fileName(baseOffset, ".log")
            let indexName = Segment.fileName(baseOffset, ".index")
            let timeIndexName = Segment.fileName(baseOffset, ".timeindex")
            let index = try readIfPresent(directory + "/" + indexName)
            let timeIndex = try readIfPresent(directory + "/" + timeIndexName)
            // Retention may delete a segment between the listing and here: then there is nothing to check.
            guard let walk = try walkLog(topic, path: directory + "/" + logName, baseOffset: baseOffset, chain: &chain)
            else { return }
            report.segments += 1
            report.bytes += Int64(walk.checkedBytes)
            verifyOffsetIndex(topic, indexName, index, baseOffset: baseOffset, walk: walk)
            verifyTimeIndex(topic, timeIndexName, timeIndex, baseOffset: baseOffset, walk: walk)
        }

        /// Walks every batch of a `.log`; nil if the file is gone.
        mutating func walkLog(
            _ topic: String, path: String, baseOffset: Int64, chain: inout TopicChain
        ) throws(TelexError) -> LogWalk? {
            let file = String(path.split(separator: "/").last!)
            let fd: CInt
            do {
                fd = try FileIO.open(path, flags: O_RDONLY)
            } catch {
                if !FileIO.exists(path) { return nil }
                throw error
            }
            defer { close(fd) }
            var window = try FileWindow(fd: fd, path: path)
            let size = window.size
            if let previousEnd = chain.previousEnd, baseOffset < previousEnd {
                add(topic, file, nil, baseOffset,
                    "segment starts at offset \(baseOffset) but the previous segment ends at \(previousEnd); the broker refuses to open this topic")
            }
            var walk = LogWalk(size: size)
            var position = 0
            var expected = baseOffset
            // After a batch whose base offset was wrong, the next may follow either the chain or that batch.
            var alternative: Int64?
            // After a corrupt batch its record count is not trusted, so the next base offset is taken as found.
            var chainTrusted = true
            while position < size {
                guard let headerBytes = try window.slice(at: position, length: RecordBatchHeader.size),
                    let header = RecordBatchHeader.peek(headerBytes, at: headerBytes.readerIndex)
                else {
                    add(topic, file, position, expected,
                        "truncated: \(size - position) bytes at the end of the file are less than a batch header")
                    break
                }
                guard header.totalSize >= RecordBatchHeader.size else {
                    add(topic, file, position, expected,
                        "batchLength \(header.batchLength) is below the minimum; the \(size - position) bytes from here are not checked")
                    break
                }
                guard let batch = try window.slice(at: position, length: header.totalSize) else {
                    add(topic, file, position, expected,
                        "truncated: the batch declares \(header.totalSize) bytes but \(size - position) remain")
                    break
                }
                report.batches += 1
                var next = header.nextOffset
                if chainTrusted, header.baseOffset != expected, header.baseOffset != alternative {
                    add(topic, file, position, header.baseOffset,
                        "base offset \(header.baseOffset) where \(expected) was expected (offset chain broken)")
                    alternative = next
                    next = expected + Int64(header.recordCount)
                } else {
                    alternative = nil
                }
                chainTrusted = checkBatch(topic, file, batch, header: header, position: position)
                if let last = chain.lastAppendTime, header.appendTime < last {
                    add(topic, file, position, header.baseOffset,
                        "append time \(header.appendTime) is earlier than the previous batch's \(last)")
                }
                chain.lastAppendTime = max(chain.lastAppendTime ?? header.appendTime, header.appendTime)
                walk.batchAtPosition[position] = header
                walk.batchAtOffset[header.baseOffset] = header
                expected = next
                position += header.totalSize
            }
            walk.checkedBytes = position
            chain.previousEnd = expected
            return walk
        }

        /// CRC first (the message names both values), then the broker's validation and, for a compressed
        /// batch, inflating and walking its records. Returns whether the batch is intact.
        mutating func checkBatch(
            _ topic: String, _ file: String, _ batch: ByteBuffer, header: RecordBatchHeader, position: Int
        ) -> Bool {
            let crc = CRC32.checksum(batch.getSlice(at: batch.readerIndex + RecordBatchHeader.crcStart,
                                                    length: header.totalSize - RecordBatchHeader.crcStart)!)
            guard crc == header.crc else {
                add(topic, file, position, header.baseOffset,
                    "CRC mismatch (stored \(RecordBatch.hex(header.crc)), computed \(RecordBatch.hex(crc)))")
                return false
            }
            do {
                _ = try RecordBatch.validate(batch, limits: limits, context: "batch")
                if header.codec != Codec.none {
                    _ = try RecordBatch.decodeRecords(
                        batch, limits: limits, decompressor: decompressor, context: "batch", scratch: &scratch)
                }
                return true
            } catch {
                add(topic, file, position, header.baseOffset, error.message)
                return false
            }
        }

        mutating func verifyOffsetIndex(
            _ topic: String, _ file: String, _ bytes: ByteBuffer?, baseOffset: Int64, walk: LogWalk
        ) {
            guard var bytes else {
                return add(topic, file, nil, nil, "missing (the broker rebuilds it on open)")
            }
            let whole = bytes.readableBytes / OffsetIndexEntry.size * OffsetIndexEntry.size
            if whole != bytes.readableBytes {
                add(topic, file, whole, nil, "a partial entry of \(bytes.readableBytes - whole) bytes at the end")
            }
            if whole == 0, walk.size > 0 { add(topic, file, nil, nil, "empty, but the log holds batches") }
            var previous: (relative: UInt32, position: UInt32)?
            var entryPosition = 0
            while let (relative, position) = bytes.readMultipleIntegers(as: (UInt32, UInt32).self) {
                defer { entryPosition += OffsetIndexEntry.size }
                let offset = baseOffset + Int64(relative)
                let entry = "entry (\(relative), \(position))"
                if previous == nil, relative != 0 || position != 0 {
                    add(topic, file, entryPosition, offset, "the first \(entry) must be (0, 0)")
                }
                if let previous, relative <= previous.relative || position <= previous.position {
                    add(topic, file, entryPosition, offset,
                        "\(entry) does not increase on the previous (\(previous.relative), \(previous.position))")
                }
                previous = (relative, position)
                if let header = walk.batchAtPosition[Int(position)] {
                    if header.baseOffset != offset {
                        add(topic, file, entryPosition, offset,
                            "\(entry) points at byte \(position), which holds the batch at offset \(header.baseOffset)")
                    }
                } else if Int(position) >= walk.size {
                    add(topic, file, entryPosition, offset,
                        "\(entry) points at byte \(position), past the end of the log (\(walk.size) bytes)")
                } else if Int(position) < walk.checkedBytes {
                    add(topic, file, entryPosition, offset, "\(entry) points at byte \(position), where no batch starts")
                }
                // Entries inside a part of the log the walk could not read are not checkable; the log's finding says why.
            }
        }

        mutating func verifyTimeIndex(
            _ topic: String, _ file: String, _ bytes: ByteBuffer?, baseOffset: Int64, walk: LogWalk
        ) {
            guard var bytes else {
                return add(topic, file, nil, nil, "missing (the broker rebuilds it on open)")
            }
            let whole = bytes.readableBytes / TimeIndexEntry.size * TimeIndexEntry.size
            if whole != bytes.readableBytes {
                add(topic, file, whole, nil, "a partial entry of \(bytes.readableBytes - whole) bytes at the end")
            }
            if whole == 0, walk.size > 0 { add(topic, file, nil, nil, "empty, but the log holds batches") }
            var previous: (timestamp: Int64, relative: UInt32)?
            var entryPosition = 0
            while let (timestamp, relative) = bytes.readMultipleIntegers(as: (Int64, UInt32).self) {
                defer { entryPosition += TimeIndexEntry.size }
                let offset = baseOffset + Int64(relative)
                let entry = "entry (\(timestamp), \(relative))"
                if let previous, timestamp <= previous.timestamp || relative < previous.relative {
                    add(topic, file, entryPosition, offset,
                        "\(entry) does not follow the previous (\(previous.timestamp), \(previous.relative)) in order")
                }
                previous = (timestamp, relative)
                if let header = walk.batchAtOffset[offset] {
                    if header.appendTime != timestamp {
                        add(topic, file, entryPosition, offset,
                            "\(entry) names the batch at offset \(offset), appended at \(header.appendTime)")
                    }
                } else if walk.checkedBytes == walk.size {
                    add(topic, file, entryPosition, offset, "\(entry) names offset \(offset), where no batch starts")
                }
            }
        }

        /// The whole file, or nil if it does not exist.
        func readIfPresent(_ path: String) throws(TelexError) -> ByteBuffer? {
            let fd: CInt
            do {
                fd = try FileIO.open(path, flags: O_RDONLY)
            } catch {
                if !FileIO.exists(path) { return nil }
                throw error
            }
            defer { close(fd) }
            var buffer = ByteBuffer()
            _ = try FileIO.read(fd, at: 0, length: try FileIO.size(fd, path: path), into: &buffer, path: path)
            return buffer
        }
    }

    /// What carries over from one segment of a topic to the next.
    private struct TopicChain {
        /// The offset after the previous segment's last batch.
        var previousEnd: Int64?
        /// The newest append time so far; append times never decrease within a topic.
        var lastAppendTime: Int64?
    }

    /// What the walk of one `.log` found, for checking its indexes.
    private struct LogWalk {
        /// The file's size when the walk began (a live broker may append after it).
        var size: Int
        /// Bytes from the start that were walked batch by batch; less than `size` when the walk stopped early.
        var checkedBytes = 0
        var batchAtPosition: [Int: RecordBatchHeader] = [:]
        var batchAtOffset: [Int64: RecordBatchHeader] = [:]

        init(size: Int) { self.size = size }
    }

    /// Reads a file through a 1 MiB window, so a walk over small batches costs one `pread` per window.
    private struct FileWindow {
        static let windowBytes = 1 << 20
        let fd: CInt
        let path: String
        /// The size when opened; nothing past it is read.
        let size: Int
        private var buffer = ByteBuffer()
        /// File position of the buffer's first readable byte.
        private var start = 0

        init(fd: CInt, path: String) throws(TelexError) {
            self.fd = fd
            self.path = path
            size = try FileIO.size(fd, path: path)
        }

        /// `length` bytes at `position`; nil if they run past `size`.
        mutating func slice(at position: Int, length: Int) throws(TelexError) -> ByteBuffer? {
            guard position + length <= size else { return nil }
            if position < start || position + length > start + buffer.readableBytes {
                buffer.clear()
                start = position
                let wanted = min(max(length, Self.windowBytes), size - position)
                let count = try FileIO.read(fd, at: position, length: wanted, into: &buffer, path: path)
                // The file shrank under us (a truncating recovery): treat the rest as absent.
                guard count >= length else { return nil }
            }
            return buffer.getSlice(at: buffer.readerIndex + position - start, length: length)
        }
    }
}
