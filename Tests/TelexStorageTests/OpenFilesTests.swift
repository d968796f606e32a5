import Dispatch
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

#if canImport(Glibc)
    import Glibc
#endif

/// A store configuration with `budget` open files and small segments, so topics roll and files churn.
func budgetConfiguration(_ budget: Int, segmentBytes: Int = 1 << 20, fsync: FsyncPolicy = .never) -> LogConfiguration {
    var configuration = testConfiguration(segmentBytes: segmentBytes, indexIntervalBytes: 64, fsync: fsync)
    configuration.maxOpenFiles = budget
    return configuration
}

/// The stored batches of `log` from its start, by bytes after the stamped fields.
func storedValues(_ log: TopicLog) throws -> [[UInt8]] {
    try readAllBatches(log, maxBytes: .max).map { Array(bytes($0).dropFirst(20)) }
}

func publishedValues(_ batches: [ByteBuffer]) -> [[UInt8]] {
    batches.map { Array(bytes($0).dropFirst(20)) }
}

@Suite("Open files within a budget", .timeLimit(.minutes(1)))
struct OpenFilesTests {
    @Test("the cache closes the least recently used idle file, opens leased files above the budget and trims after")
    func leastRecentlyUsedFirst() async throws {
        try await withTemporaryDirectory { directory in
            let cache = FileDescriptorCache(budget: 2)
            let files = (0..<3).map { CachedFile(path: directory + "/file\($0)", cache: cache) }
            for file in files { _ = try file.lease(creating: true) }
            #expect(cache.openCount == 2)
            #expect(cache.opens == 3)
            // file0 was evicted by file2; touching file1 makes file2 the least recently used.
            _ = try files[1].lease()
            #expect(cache.opens == 3)
            _ = try files[0].lease()
            #expect(cache.opens == 4)
            _ = try files[1].lease()
            #expect(cache.opens == 4, "file1 stays: file2 was the least recently used")
            _ = try files[2].lease()
            #expect(cache.opens == 5)

            // Three leases held at once: the third opens above the budget, and the surplus closes when released.
            var held = try files.map { try $0.lease() }
            #expect(cache.openCount == 3)
            #expect(cache.peakOpenCount == 3)
            held.removeLast()
            #expect(cache.openCount == 2)
            held.removeAll()
            #expect(cache.openCount == 2)
            files[0].closeIfIdle()
            files[1].closeIfIdle()
            files[2].closeIfIdle()
            #expect(cache.openCount == 0)
        }
    }

    @Test("a file dropped while open is closed, and a leased descriptor survives its file's eviction pressure")
    func leaseOutlivesPressure() async throws {
        try await withTemporaryDirectory { directory in
            let cache = FileDescriptorCache(budget: 1)
            let first = CachedFile(path: directory + "/first", cache: cache)
            let lease = try first.lease(creating: true)
            try lease.withDescriptor { fd throws(TelexError) in
                try FileIO.write(fd, parts: [ByteBuffer(string: "kept")], at: 0, path: first.path)
            }
            for index in 0..<20 {
                _ = try CachedFile(path: directory + "/other\(index)", cache: cache).lease(creating: true)
            }
            var buffer = ByteBuffer()
            let count = try lease.withDescriptor { fd throws(TelexError) in
                try FileIO.read(fd, at: 0, length: 4, into: &buffer, path: first.path)
            }
            #expect(count == 4 && buffer.readString(length: 4) == "kept")
            #expect(cache.openCount == 1)
        }
    }

    @Test("150 topics under a budget of 16: append, read, restart, read again; open files stay within the budget")
    func manyTopicsSmallBudget() async throws {
        try await withTemporaryDirectory { directory in
            let budget = 16
            let batchSize = makeBatch(records: 2, seed: 0).readableBytes
            // Three batches per topic over two segments, so sealed segments (loaded from their indexes) are reopened.
            let configuration = budgetConfiguration(budget, segmentBytes: batchSize * 2 + 40)
            let topics = (0..<150).map { "news.desk\($0)" }
            var published: [String: [ByteBuffer]] = [:]
            do {
                let store = try TopicStore(directory: directory, configuration: configuration, logger: makeLogger())
                for (index, topic) in topics.enumerated() {
                    let log = try store.createLog(topic).log
                    published[topic] = (0..<3).map { makeBatch(records: 2, seed: index * 3 + $0) }
                    for batch in published[topic]! { _ = try log.append(batch) }
                }
                for topic in topics {
                    let log = try #require(store.log(topic))
                    #expect(log.segmentCount >= 2)
                    #expect(try storedValues(log) == publishedValues(published[topic]!), "\(topic)")
                }
                // Sealing rounds of rolled segments run on the logs' queues meanwhile, each holding leases.
                #expect(store.files.peakOpenCount <= budget + 8)
                try store.close()
                #expect(store.files.openCount == 0)
            }
            let handler = RecordingLogHandler()
            let reopened = try TopicStore(directory: directory, configuration: configuration, logger: makeLogger(handler))
            #expect(reopened.files.peakOpenCount <= budget)
            #expect(reopened.topics.count == 150)
            for topic in topics.reversed() {
                let log = try #require(reopened.log(topic))
                #expect(try storedValues(log) == publishedValues(published[topic]!), "\(topic)")
            }
            // Index entries written through re-opened descriptors landed where they belong.
            #expect(!handler.messages.contains("rebuilding index"))
            #expect(reopened.files.peakOpenCount <= budget)
            #expect(reopened.files.opens > budget)
            try reopened.close()
        }
    }

    @Test("concurrent appends and reads across 64 topics with a budget of 8 stay correct", arguments: [false, true])
    func concurrentAcrossBudget(rolling: Bool) async throws {
        try await withTemporaryDirectory { directory in
            let budget = 8
            let batchSize = makeBatch(records: 2, seed: 0).readableBytes
            let store = try TopicStore(
                directory: directory,
                configuration: budgetConfiguration(budget, segmentBytes: rolling ? batchSize * 4 : 1 << 20),
                logger: makeLogger())
            let topics = (0..<64).map { "news.wire\($0)" }
            for topic in topics { _ = try store.createLog(topic) }
            let failures = NIOLockedValueBox<[String]>([])
            let rounds = 12
            DispatchQueue.concurrentPerform(iterations: topics.count) { index in
                do {
                    let log = store.log(topics[index])!
                    let neighbour = store.log(topics[(index + 1) % topics.count])!
                    for round in 0..<rounds {
                        let result = try log.append(makeBatch(records: 2, seed: index * 100 + round))
                        guard result.baseOffset == Int64(round * 2) else {
                            throw TelexError(.storageFailure, "\(topics[index]) got offset \(result.baseOffset)")
                        }
                        // Read our own newest batch and whatever the neighbour has so far.
                        let slice = try log.read(from: result.baseOffset, maxBytes: 1)
                        guard let slice, slice.firstOffset == result.baseOffset else {
                            throw TelexError(.storageFailure, "\(topics[index]) lost offset \(result.baseOffset)")
                        }
                        _ = try slice.readBytes()
                        if neighbour.endOffset > 0 { _ = try neighbour.read(from: 0, maxBytes: .max)?.readBytes() }
                    }
                } catch {
                    failures.withLockedValue { $0.append("\(error)") }
                }
            }
            #expect(failures.withLockedValue { $0 } == [])
            for (index, topic) in topics.enumerated() {
                let log = try #require(store.log(topic))
                let expected = (0..<rounds).map { makeBatch(records: 2, seed: index * 100 + $0) }
                #expect(try storedValues(log) == publishedValues(expected), "\(topic)")
            }
            // Above the budget only by leases in use: each appending or reading thread holds at most two at once;
            // with rolls, each log's sealing round also holds up to three while it fsyncs (on its own queue).
            #expect(store.files.peakOpenCount <= budget + 8 + (rolling ? 3 * topics.count : 0))
            try store.close()
        }
    }

    @Test("a slice keeps its file open while other topics churn through a budget of 4, and reads it afterwards")
    func leaseHeldWhileChurning() async throws {
        try await withTemporaryDirectory { directory in
            let store = try TopicStore(directory: directory, configuration: budgetConfiguration(4), logger: makeLogger())
            let held = try store.createLog("news.held").log
            let batches = (0..<3).map { makeBatch(records: 3, seed: $0) }
            for batch in batches { _ = try held.append(batch) }
            let slice = try #require(try held.read(from: 0, maxBytes: .max))
            let opensBefore = store.files.opens

            // Other threads churn 40 topics while this one keeps reading through the held slice.
            let done = NIOLockedValueBox(false)
            let churning = Task.detached {
                defer { done.withLockedValue { $0 = true } }
                for index in 0..<40 {
                    let log = try store.createLog("news.churn\(index)").log
                    _ = try log.append(makeBatch(records: 1, seed: index))
                    _ = try log.read(from: 0, maxBytes: .max)?.readBytes()
                }
            }
            var reads = 0
            while !done.withLockedValue({ $0 }) || reads == 0 {
                let read = try RecordBatch.split(try slice.readBytes())
                #expect(zip(read, batches).allSatisfy(sameExceptStampedFields))
                reads += 1
            }
            try await churning.value
            #expect(store.files.opens > opensBefore + 40)
            // The sendfile path: a dup of the leased descriptor, still the same file.
            let handle = try slice.makeFileHandle()
            defer { try? handle.close() }
            var buffer = ByteBuffer()
            let count = try handle.withUnsafeFileDescriptor { fd in
                try FileIO.read(fd, at: slice.position, length: slice.length, into: &buffer, path: "dup")
            }
            #expect(count == slice.length)
            #expect(zip(try RecordBatch.split(buffer), batches).allSatisfy(sameExceptStampedFields))
            try store.close()
        }
    }

    @Test("durability after eviction: a write through an evicted descriptor is fsynced through a new one")
    func syncThroughNewDescriptor() async throws {
        try await withTemporaryDirectory { directory in
            let configuration = budgetConfiguration(3, fsync: .always)
            let store = try TopicStore(directory: directory, configuration: configuration, logger: makeLogger())
            let log = try store.createLog("news.durable").log
            let batch = makeBatch(records: 4, seed: 7)
            let result = try log.append(batch)
            // Before the group commit runs, other topics take every descriptor of the budget.
            for index in 0..<3 { _ = try store.createLog("news.other\(index)") }
            let opensBefore = store.files.opens
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
                log.whenDurable(result) { continuation.resume(with: $0) }
            }
            #expect(store.files.opens > opensBefore, "the fsync re-opened the evicted segment file")
            #expect(log.readableEndOffset == 4)
            try store.close()

            let reopened = try TopicStore(directory: directory, configuration: configuration, logger: makeLogger())
            let values = try storedValues(try #require(reopened.log("news.durable")))
            #expect(values == publishedValues([batch]))
            try reopened.close()
        }
    }

    @Test("a log opened on its own gets a cache of maxOpenFiles; the default follows the open-file limit")
    func standaloneLogAndDefault() async throws {
        var limit = rlimit()
        #expect(getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0)
        if limit.rlim_cur != rlim_t.max {
            #expect(LogConfiguration().maxOpenFiles == max(8, Int(limit.rlim_cur) / 2))
        }
        try await withTemporaryDirectory { directory in
            let batchSize = makeBatch(records: 1, seed: 0).readableBytes
            var configuration = testConfiguration(segmentBytes: batchSize)
            configuration.maxOpenFiles = 2
            let log = try openLog(directory, configuration)
            let batches = (0..<6).map { makeBatch(records: 1, seed: $0) }
            for batch in batches { _ = try log.append(batch) }
            #expect(log.segmentCount == 6)
            #expect(try storedValues(log) == publishedValues(batches))
            try log.close()
            #expect(try storedValues(try openLog(directory, configuration)) == publishedValues(batches))
        }
    }
}

/// The measurement behind Protocol/STORAGE.md §11.4: `Scripts/many-topics.sh` runs it under `ulimit -n 1024`.
/// Opt-in (it takes minutes): set `TELEX_MANY_TOPICS` to the number of topics.
@Suite(
    "Many topics (opt-in: TELEX_MANY_TOPICS=N)", .timeLimit(.minutes(30)),
    .enabled(if: ProcessInfo.processInfo.environment["TELEX_MANY_TOPICS"] != nil))
struct ManyTopicsMeasurement {
    static func residentKilobytes() -> (current: Int, peak: Int) {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        func field(_ name: String) -> Int {
            let line = status.split(separator: "\n").first { $0.hasPrefix(name + ":") } ?? ""
            return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
        }
        return (field("VmRSS"), field("VmHWM"))
    }

    static func openDescriptors() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
    }

    @Test("create, append to and read N topics, restart and read them all again")
    func manyTopics() async throws {
        let environment = ProcessInfo.processInfo.environment
        let count = Int(environment["TELEX_MANY_TOPICS"] ?? "") ?? 100_000
        let fsync = environment["TELEX_MANY_TOPICS_FSYNC"].flatMap(FsyncPolicy.init(parsing:)) ?? .never
        var limit = rlimit()
        _ = getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        var configuration = LogConfiguration(fsync: fsync)
        configuration.segmentBytes = 4096
        func report(_ line: String) { print("many-topics: " + line) }
        report("topics \(count), fsync \(fsync), RLIMIT_NOFILE \(limit.rlim_cur), maxOpenFiles \(configuration.maxOpenFiles)")
        try await withTemporaryDirectory { directory in
            var peakDescriptors = Self.openDescriptors()
            let baseline = Self.residentKilobytes()
            report("baseline: open fds \(peakDescriptors), RSS \(baseline.current) KiB")
            let clock = ContinuousClock()
            let topics = (0..<count).map { "news.desk\($0 % 100).t\($0)" }
            let batch = makeBatch(records: 2, seed: 1)

            var store: TopicStore? = try TopicStore(directory: directory, configuration: configuration, logger: makeLogger())
            var elapsed = try clock.measure {
                for (index, topic) in topics.enumerated() {
                    _ = try store!.createLog(topic).log.append(batch)
                    if index % 1000 == 0 { peakDescriptors = max(peakDescriptors, Self.openDescriptors()) }
                }
            }
            let created = Self.residentKilobytes()
            report("create + append \(count) topics: \(elapsed), RSS \(created.current) KiB (+\(created.current - baseline.current) KiB, \((created.current - baseline.current) * 1024 / count) bytes per topic)")
            elapsed = try clock.measure {
                for (index, topic) in topics.enumerated() {
                    let slice = try #require(try store!.log(topic)!.read(from: 0, maxBytes: .max))
                    #expect(slice.nextOffset == 2)
                    if index % 1000 == 0 { peakDescriptors = max(peakDescriptors, Self.openDescriptors()) }
                }
            }
            report("read \(count) topics: \(elapsed)")
            elapsed = try clock.measure { try store!.close() }
            report("close: \(elapsed); cache peak \(store!.files.peakOpenCount), opens \(store!.files.opens)")
            store = nil

            elapsed = try clock.measure {
                store = try TopicStore(directory: directory, configuration: configuration, logger: makeLogger())
            }
            report("reopen (recover \(store!.topics.count) topics): \(elapsed), open fds now \(Self.openDescriptors())")
            elapsed = try clock.measure {
                for (index, topic) in topics.enumerated() {
                    let log = try #require(store!.log(topic))
                    let slice = try #require(try log.read(from: 0, maxBytes: .max))
                    #expect(try slice.readBytes().readableBytes == batch.readableBytes)
                    _ = try log.append(batch)
                    if index % 1000 == 0 { peakDescriptors = max(peakDescriptors, Self.openDescriptors()) }
                }
            }
            report("read + append again: \(elapsed)")
            let after = Self.residentKilobytes()
            report("RSS \(after.current) KiB, peak RSS \(after.peak) KiB; cache peak \(store!.files.peakOpenCount) of \(configuration.maxOpenFiles); process fds peak (sampled) \(peakDescriptors)")
            #expect(store!.files.peakOpenCount <= configuration.maxOpenFiles + 8)
            try store!.close()
            store = nil
        }
    }
}
