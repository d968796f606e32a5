import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

#if canImport(Glibc)
    import Glibc
#endif

/// A log named `news.world` in `directory`.
private func openWorldLog(_ directory: String, _ configuration: LogConfiguration) throws -> TopicLog {
    try TopicLog(topic: "news.world", directory: logDirectory(directory), configuration: configuration,
                 logger: makeLogger())
}

@Suite("Injected file system faults", .timeLimit(.minutes(1)))
struct FaultInjectionTests {
    @Test("a failed fsync (EIO or ENOSPC) fails the log closed; durable data stays readable and survives a restart",
          arguments: [EIO, ENOSPC])
    func failedFsyncFailsClosed(code: Int32) async throws {
        try await withTemporaryDirectory { directory in
            let fileSystem = FaultInjectingFileSystem()
            try await withFileSystem(fileSystem, under: directory) {
                let configuration = testConfiguration(fsync: .always)
                let log = try openWorldLog(directory, configuration)
                let durable = [makeBatch(records: 2, seed: 1), makeBatch(records: 1, seed: 2)]
                for batch in durable { try await waitUntilDurable(log, try log.append(batch)) }

                fileSystem.fail(.sync, on: ".log", with: code)
                let covered = try log.append(makeBatch(seed: 3))
                let error = await #expect(throws: TelexError.self) { try await waitUntilDurable(log, covered) }
                let reason = String(cString: strerror(code))
                #expect(error?.message.contains(reason) == true, "\(String(describing: error))")
                #expect(log.readableEndOffset == 3, "nothing the failed fsync covered became readable")

                // Fail closed: the next fsync would succeed, but neither acks nor appends trust it.
                let refused = #expect(throws: TelexError.self) { try log.append(makeBatch(seed: 4)) }
                #expect(refused?.code == .storageFailure)
                #expect(refused?.message.hasPrefix("log news.world is failed: fdatasync ") == true)
                #expect(refused?.message.hasSuffix(String(cString: strerror(code))) == true)
                let late = await #expect(throws: TelexError.self) { try await waitUntilDurable(log, covered) }
                #expect(late?.code == .storageFailure)
                // No fsync is made again and trusted: sync() and close() report the failure.
                #expect(#expect(throws: TelexError.self) { try log.sync() } == error)
                #expect(log.readableEndOffset == 3)
                #expect(try storedValues(log) == publishedValues(durable))
                #expect(#expect(throws: TelexError.self) { try log.close() } == error)

                let reopened = try openWorldLog(directory, configuration)
                #expect(try storedValues(reopened) == publishedValues(durable))
                #expect(reopened.endOffset == 3)
                try reopened.close()
            }
        }
    }

    @Test("ENOSPC on a write: a clear error, no half batch, reads go on, and appends resume at the same offset")
    func fullDiskOnWrite() async throws {
        try await withTemporaryDirectory { directory in
            let fileSystem = FaultInjectingFileSystem()
            try await withFileSystem(fileSystem, under: directory) {
                let configuration = testConfiguration(fsync: .always)
                let log = try openWorldLog(directory, configuration)
                let first = makeBatch(records: 2, seed: 1)
                try await waitUntilDurable(log, try log.append(first))
                let size = try fileSize(segmentPath(directory, 0, ".log"))

                fileSystem.fail(.write, on: ".log", with: ENOSPC, count: 2, writesHalfFirst: true)
                for seed in [2, 3] {
                    let error = #expect(throws: TelexError.self) { try log.append(makeBatch(seed: seed)) }
                    #expect(error?.code == .storageFailure)
                    #expect(error?.message.hasPrefix("no space left on device writing news.world (write ") == true,
                            "\(String(describing: error))")
                    #expect(error?.topic == "news.world")
                    #expect(try fileSize(segmentPath(directory, 0, ".log")) == size, "the half batch was cut off")
                }
                #expect(try storedValues(log) == publishedValues([first]))
                #expect(log.endOffset == 2)

                let second = makeBatch(records: 1, seed: 4)
                let result = try log.append(second)
                #expect(result.baseOffset == 2, "the failed appends took no offsets")
                try await waitUntilDurable(log, result)
                #expect(try storedValues(log) == publishedValues([first, second]))
                try log.close()
                let reopened = try openWorldLog(directory, configuration)
                #expect(try storedValues(reopened) == publishedValues([first, second]))
                try reopened.close()
            }
        }
    }

    @Test("ENOSPC creating a rolled segment's files: the append fails alone and the roll is made again later",
          arguments: [".log", ".index", ".timeindex"])
    func fullDiskOnRoll(file: String) async throws {
        try await withTemporaryDirectory { directory in
            let fileSystem = FaultInjectingFileSystem()
            try await withFileSystem(fileSystem, under: directory) {
                let batches = (0..<3).map { makeBatch(records: 1, seed: $0) }
                let configuration = testConfiguration(segmentBytes: batches[0].readableBytes, fsync: .always)
                let log = try openWorldLog(directory, configuration)
                try await waitUntilDurable(log, try log.append(batches[0]))

                fileSystem.fail(.open, on: Segment.fileName(1, file), with: ENOSPC)
                let error = #expect(throws: TelexError.self) { try log.append(batches[1]) }
                #expect(error?.message.hasPrefix("no space left on device writing news.world (open ") == true,
                        "\(String(describing: error))")
                #expect(log.segmentCount == 1)
                for suffix in [".log", ".index", ".timeindex"] {
                    #expect(!FileManager.default.fileExists(atPath: segmentPath(directory, 1, suffix)),
                            "the failed roll left \(suffix) behind")
                }
                #expect(try storedValues(log) == publishedValues([batches[0]]))

                for (index, batch) in batches.enumerated().dropFirst() {
                    let result = try log.append(batch)
                    #expect(result.baseOffset == Int64(index))
                    try await waitUntilDurable(log, result)
                }
                #expect(try storedValues(log) == publishedValues(batches))
                try log.close()
                let reopened = try openWorldLog(directory, configuration)
                #expect(try storedValues(reopened) == publishedValues(batches))
                #expect(reopened.endOffset == 3)
                try reopened.close()
            }
        }
    }

    @Test("a consumer offset commit failing at any step reports it; the committed offsets survive a reopen",
          arguments: [
            (FileOperation.open, ENOSPC), (.write, ENOSPC), (.sync, EIO), (.rename, EIO), (.syncDirectory, EIO),
          ])
    func failedOffsetCommit(operation: FileOperation, code: Int32) async throws {
        try await withTemporaryDirectory { directory in
            let fileSystem = FaultInjectingFileSystem()
            try await withFileSystem(fileSystem, under: directory) {
                let offsets = try ConsumerOffsets(directory: directory + "/consumers")
                try offsets.commit("desk", offsets: ["news.world": 5, "news.sport": 7])
                fileSystem.fail(operation, on: "consumers", with: code)
                let error = #expect(throws: TelexError.self) {
                    try offsets.commit("desk", offsets: ["news.world": 9])
                }
                #expect(error?.code == .storageFailure)
                #expect(error?.message.hasPrefix("committing the offsets of consumer desk failed: ") == true,
                        "\(String(describing: error))")
                #expect(error?.message.hasSuffix(String(cString: strerror(code))) == true)
                #expect(offsets.committed("desk") == ["news.world": 5, "news.sport": 7])
                let reopened = try ConsumerOffsets(directory: directory + "/consumers").committed("desk")
                if operation == .syncDirectory {
                    // The rename was made and only its durability is unknown: either state is one that was asked for.
                    #expect(reopened["news.world"] == 5 || reopened["news.world"] == 9)
                    #expect(reopened["news.sport"] == 7)
                } else {
                    #expect(reopened == ["news.world": 5, "news.sport": 7])
                }
                #expect(!FileManager.default.fileExists(atPath: directory + "/consumers/desk.offsets.tmp"))

                try offsets.commit("desk", offsets: ["news.world": 11])
                #expect(try ConsumerOffsets(directory: directory + "/consumers").committed("desk")
                        == ["news.world": 11, "news.sport": 7])
            }
        }
    }

    @Test("short reads and writes and EINTR at every call give the same store as a run without faults")
    func shortTransfersAndInterrupts() async throws {
        try await withTemporaryDirectory { plain in
            try await withTemporaryDirectory { faulty in
                let expected = try await runStoreWorkload(plain)
                let fileSystem = FaultInjectingFileSystem()
                fileSystem.shortenTransfers()
                fileSystem.interruptCalls()
                let observed = try await withFileSystem(fileSystem, under: faulty) {
                    try await runStoreWorkload(faulty)
                }
                #expect(observed == expected)
                let interrupted = fileSystem.interrupted
                for operation in FileOperation.allCases {
                    #expect((interrupted[operation] ?? 0) > 0, "no \(operation) was interrupted")
                }
            }
        }
    }
}

/// What `runStoreWorkload` leaves: every file's size, the `.index` files' bytes, every topic's records and the
/// consumer positions.
private struct StoreOutcome: Equatable {
    var files: [String: Int]
    var indexes: [String: [UInt8]]
    var records: [String: [[UInt8]]]
    var offsets: [String: Int64]
}

/// Creates topics, appends enough to roll and index, applies retention, deletes a topic, commits offsets,
/// closes, reopens (recovery truncates and rewrites indexes) and reads everything back.
private func runStoreWorkload(_ directory: String) async throws -> StoreOutcome {
    let configuration = testConfiguration(segmentBytes: 2048, indexIntervalBytes: 256, retentionBytes: 3000,
                                          fsync: .always)
    let data = directory + "/data"
    var store: TopicStore? = try TopicStore(directory: data, configuration: configuration, logger: makeLogger())
    let world = try store!.createLog("news.world").log
    let sport = try store!.createLog("news.sport").log
    for seed in 0..<40 {
        let log = seed % 3 == 0 ? sport : world
        try await waitUntilDurable(log, try log.append(makeBatch(records: 1 + seed % 3, seed: seed)))
    }
    #expect(store!.applyRetention() > 0)
    try store!.consumerOffsets.commit("desk", offsets: ["news.world": world.endOffset, "news.sport": 3])
    try store!.deleteLog("news.sport")
    try store!.close()
    store = nil
    // A torn tail for recovery to cut (a truncate and an index rewrite).
    let active = try FileManager.default.contentsOfDirectory(atPath: data + "/topics/news.world")
        .filter { $0.hasSuffix(".log") }.sorted().last!
    let activePath = data + "/topics/news.world/" + active
    truncateFile(activePath, to: try fileSize(activePath) - 5)

    let reopened = try TopicStore(directory: data, configuration: configuration, logger: makeLogger())
    var outcome = StoreOutcome(files: [:], indexes: [:], records: [:], offsets: [:])
    for topic in reopened.topics { outcome.records[topic] = try storedValues(reopened.log(topic)!) }
    outcome.offsets = reopened.consumerOffsets.committed("desk")
    try reopened.close()
    let enumerator = FileManager.default.enumerator(atPath: data)!
    while let name = enumerator.nextObject() as? String {
        // Time index entries depend on the clock (one per new append time), so those files differ between runs.
        guard !FileManager.default.isDirectory(data + "/" + name), name != ".lock", !name.hasSuffix(".timeindex")
        else { continue }
        outcome.files[name] = try fileSize(data + "/" + name)
        if name.hasSuffix(".index") { outcome.indexes[name] = try readFile(data + "/" + name) }
    }
    return outcome
}

extension FileManager {
    fileprivate func isDirectory(_ path: String) -> Bool {
        var directory: ObjCBool = false
        return fileExists(atPath: path, isDirectory: &directory) && directory.boolValue
    }
}
