#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import TelexProtocol

/// Checks a data directory read-only, as `telexd verify` does: every batch of every segment (header, length,
/// offset chain, CRC, full validation, append times), every index entry, every `.keys` file, `FORMAT` and the
/// consumer offset files.
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

        /// The problem of an index file that is not there (derived data, rebuilt on open; an archive has none).
        static let missingIndex = "missing (the broker rebuilds it on open)"
        /// Whether this is an `.index` or `.timeindex` that is missing: no problem in a copy of an archive.
        public var isMissingIndex: Bool { problem == Self.missingIndex }

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
    struct Run {
        let limits: RecordBatchLimits
        let found: (Finding) -> Void
        var report = Report()
        /// libz, the reference: it refuses streams using symbols RFC 1951 reserves, which libdeflate would decode
        /// (PROTOCOL.md §6.5), so verify reports every batch some reader would refuse.
        let decompressor = BatchDecompressor(implementation: .zlib)
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
            let names: [String]
            do {
                names = try FileIO.listDirectory(directory)
            } catch {
                // Deleted (telex-admin delete-topic) since the listing of topics/: nothing left to check.
                if !FileIO.isDirectory(directory) { return }
                throw error
            }
            report.topics += 1
            // Only `.log` files named by a base offset are segments, as in the store; `damaged/` and others are not.
            let bases = names.compactMap { name -> Int64? in
                guard name.hasSuffix(".log"), !FileIO.isDirectory(directory + "/" + name) else { return nil }
                return Int64(name.dropLast(4))
            }.sorted()
            var chain = TopicChain()
            for base in bases {
                try verifySegment(topic, directory: directory, baseOffset: base, chain: &chain)
            }
        }

        /// Checks one segment's `.log`, its two indexes and its `.keys`. The indexes are read first, so on a live broker
        /// every entry read names a batch already in the log (entries are written after their batch).
        mutating func verifySegment(
            _ topic: String, directory: String, baseOffset: Int64, chain: inout TopicChain
        ) throws(TelexError) {
            let logName = Segment.fileName(baseOffset, ".log")
            let indexName = Segment.fileName(baseOffset, ".index")
            let timeIndexName = Segment.fileName(baseOffset, ".timeindex")
            let index = try readIfPresent(directory + "/" + indexName)
            let timeIndex = try readIfPresent(directory + "/" + timeIndexName)
            let keysName = Segment.fileName(baseOffset, KeyTableFile.suffix)
            let keys = try readIfPresent(directory + "/" + keysName)
            let findingsBefore = report.findings.count
            // Retention may delete a segment between the listing and here: then there is nothing to check.
            guard let walk = try walkLog(topic, path: directory + "/" + logName, baseOffset: baseOffset, chain: &chain)
            else { return }
            let logIntact = report.findings.count == findingsBefore
            report.segments += 1
            report.bytes += Int64(walk.checkedBytes)
            verifyOffsetIndex(topic, indexName, index, baseOffset: baseOffset, walk: walk)
            verifyTimeIndex(topic, timeIndexName, timeIndex, baseOffset: baseOffset, walk: walk)
            verifyKeys(topic, keysName, keys, baseOffset: baseOffset, walk: walk, logIntact: logIntact)
        }

        /// The whole file, or nil if it does not exist.
        func readIfPresent(_ path: String) throws(TelexError) -> ByteBuffer? {
            guard let fd = try StorageVerifier.openIfPresent(path) else { return nil }
            defer { close(fd) }
            var buffer = ByteBuffer()
            _ = try FileIO.read(fd, at: 0, length: try FileIO.size(fd, path: path), into: &buffer, path: path)
            return buffer
        }
    }

    /// Opens `path` read-only; nil if it does not exist (a topic or segment deleted while verify runs).
    static func openIfPresent(_ path: String) throws(TelexError) -> CInt? {
        do {
            return try FileIO.open(path, flags: O_RDONLY)
        } catch {
            if !FileIO.exists(path) { return nil }
            throw error
        }
    }

    /// What carries over from one segment of a topic to the next.
    struct TopicChain {
        /// The offset after the previous segment's last batch.
        var previousEnd: Int64?
        /// The newest append time so far; append times never decrease within a topic.
        var lastAppendTime: Int64?
    }

    /// What the walk of one `.log` found, for checking its indexes.
    struct LogWalk {
        /// The file's size when the walk began (a live broker may append after it).
        var size: Int
        /// Bytes from the start that were walked batch by batch; less than `size` when the walk stopped early.
        var checkedBytes = 0
        var batchAtPosition: [Int: RecordBatchHeader] = [:]
        var batchAtOffset: [Int64: RecordBatchHeader] = [:]
        /// Byte ranges skipped as damaged, and the offsets they held; index entries inside them are not checked.
        var damagedBytes: [Range<Int>] = []
        var damagedOffsets: [Range<Int64>] = []
        /// The key index of the intact batches, as the broker would rebuild it.
        var keys = KeyEntries()
        /// The offset after the last batch walked.
        var nextOffset: Int64 = 0

        init(size: Int) { self.size = size }
    }
}
