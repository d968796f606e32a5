import Foundation
import NIOCore
import Synchronization
import TelexProtocol
import Testing

@testable import TelexStorage

#if canImport(Glibc)
    import Glibc
#endif

/// Fails the `failing`-th call (counting from 1) that changes a file or directory (create, write, truncate, sync,
/// directory sync, rename, unlink) with EIO, and counts them all.
final class NthChangeFailingFileSystem: ForwardingFileSystem {
    let failing: Int
    private let calls = Mutex<Int>(0)

    init(failing: Int) { self.failing = failing }

    var count: Int { calls.withLock { $0 } }

    private func fails() -> Bool {
        calls.withLock { calls in
            calls += 1
            return calls == failing
        }
    }

    func open(_ path: String, flags: Int32, mode: mode_t) -> Int {
        if flags & O_CREAT != 0, fails() { return -Int(EIO) }
        return FileSystemSeam.system.open(path, flags: flags, mode: mode)
    }
    func write(_ fd: CInt, from buffer: UnsafeRawPointer, count: Int, at offset: Int, path: String) -> Int {
        fails() ? -Int(EIO) : FileSystemSeam.system.write(fd, from: buffer, count: count, at: offset, path: path)
    }
    func truncate(_ fd: CInt, to length: Int, path: String) -> Int {
        fails() ? -Int(EIO) : FileSystemSeam.system.truncate(fd, to: length, path: path)
    }
    func sync(_ fd: CInt, path: String) -> Int { fails() ? -Int(EIO) : 0 }
    func syncDirectory(_ fd: CInt, path: String) -> Int { fails() ? -Int(EIO) : 0 }
    func rename(_ from: String, to: String) -> Int {
        fails() ? -Int(EIO) : FileSystemSeam.system.rename(from, to: to)
    }
    func unlink(_ path: String) -> Int { fails() ? -Int(EIO) : FileSystemSeam.system.unlink(path) }
}

@Suite("Compaction: the segment swap is crash-safe", .timeLimit(.minutes(1)))
struct CompactionCrashTests {
    static let batches = (0..<12).map { index in
        [ArticleVersion(key: "urn:article:\(index % 3)", tombstone: false, value: "{\"version\":\(index)}"),
         ArticleVersion(key: "", tombstone: false, value: "{\"keyless\":\(index)}")]
    }

    /// Checks a log opened after an interrupted compaction: every record it serves is the one published at its
    /// offset, every record compaction keeps is there, and none of `gone` is.
    static func expectConsistent(
        _ log: TopicLog, _ published: [Int64: ArticleVersion], kept: Set<Int64>, gone: Set<Int64> = [],
        _ context: String
    ) throws {
        let stored = try storedRecords(log)
        for (offset, (record, _)) in stored {
            #expect(published[offset]?.value == String(buffer: record.value), "\(context): offset \(offset)")
        }
        #expect(kept.isSubset(of: Set(stored.keys)), "\(context): kept \(kept.subtracting(stored.keys).sorted()) missing")
        #expect(gone.isDisjoint(with: stored.keys), "\(context): removed \(gone.intersection(stored.keys).sorted()) back")
    }

    @Test("a failure at any file step of a rewrite leaves a log that opens with every record at its offset")
    func failureAtEveryStep() async throws {
        try await withTemporaryDirectory { directory in
            var step = 1
            while true {
                let path = directory + "/step\(step)"
                let log = try openLog(path, testConfiguration(segmentBytes: 600))
                let published = try publish(Self.batches, to: log)
                try log.sync()
                let active = log.state.withLock { $0.segments.last!.baseOffset }
                let kept = modelKept(published, dropTombstones: false).union(published.keys.filter { $0 >= active })
                let faults = NthChangeFailingFileSystem(failing: step)
                let outcome = try await withFileSystem(faults, under: path) {
                    Result { () throws(TelexError) in try log.compact(tombstoneRetentionMilliseconds: 0) }
                }
                let hit = faults.count >= step
                if case .success(let report) = outcome, !hit {
                    #expect(report.rewrites.count > 1)
                    try log.close()
                    break
                }
                // The live log still serves consistently (unless the failure failed it).
                if log.state.withLock({ $0.failure == nil }) {
                    try Self.expectConsistent(log, published, kept: kept, "step \(step), live")
                }
                try? log.close()
                let reopened = try openLog(path, testConfiguration(segmentBytes: 600))
                try Self.expectConsistent(reopened, published, kept: kept, "step \(step), reopened")
                let names = try FileManager.default.contentsOfDirectory(atPath: logDirectory(path))
                #expect(!names.contains { $0.hasSuffix(".cleaning") || $0.hasSuffix(".tmp") }, "\(names)")
                // A later round finishes the job.
                _ = try reopened.compact(tombstoneRetentionMilliseconds: 0)
                try expectHolds(reopened, published, kept: kept)
                try reopened.close()
                try FileManager.default.removeItem(atPath: path)
                step += 1
            }
            print("compaction swap: a failure at each of the \(step - 1) file steps checked")
            #expect(step > 20)
        }
    }

    @Test("after a power cut at any point of a rewrite the log opens consistent, and a durable swap stays")
    func powerCutAtEveryPoint() async throws {
        try await withScratchDirectory { root in
            let recorder = RecordingFileSystem()
            var published: [Int64: ArticleVersion] = [:]
            var kept: Set<Int64> = []
            var start = 0
            try await withFileSystem(recorder, under: root) {
                let log = try openLog(root, testConfiguration(segmentBytes: 600))
                published = try publish(Self.batches, to: log)
                try log.sync()
                let active = log.state.withLock { $0.segments.last!.baseOffset }
                kept = modelKept(published, dropTombstones: false).union(published.keys.filter { $0 >= active })
                start = recorder.events.count
                let report = try log.compact(tombstoneRetentionMilliseconds: 0)
                #expect(report.rewrites.count > 1)
                try log.close()
            }
            let events = recorder.events
            let removed = Set(published.keys).subtracting(kept)
            // Once the directory fsync after a segment's rename is recorded, its removed records must stay gone.
            var durableSwaps: [(event: Int, base: Int64)] = []
            for (index, event) in events.enumerated() {
                guard case .rename(let from, let to) = event, from.hasSuffix(".log.cleaning") else { continue }
                let base = Int64(to.split(separator: "/").last!.dropLast(4))!
                let sync = events[index...].firstIndex { if case .syncDirectory = $0 { true } else { false } }!
                durableSwaps.append((sync, base))
            }
            #expect(durableSwaps.count > 1)
            print("compaction swap: power cuts at \(events.count - start + 1) points of \(durableSwaps.count) rewrites checked")
            try await withScratchDirectory { scratch in
                try await withFileSystem(NoSyncFileSystem(), under: scratch) {
                    var random = SeededGenerator(seed: 5)
                    for crashPoint in start...events.count {
                        for keepChance in [0, 0.5, 1] {
                            let image = CrashImage(events, root: root, crashPoint: crashPoint, keepChance: keepChance,
                                                   tearChance: 0.3, random: &random)
                            let directory = scratch + "/state\(crashPoint)-\(keepChance)"
                            try image.materialize(in: directory)
                            let log = try openLog(directory, testConfiguration(segmentBytes: 600))
                            var gone: Set<Int64> = []
                            for swap in durableSwaps where swap.event < crashPoint {
                                let end = log.state.withLock { state in
                                    state.segments.first { $0.baseOffset > swap.base }?.baseOffset ?? .max
                                }
                                gone.formUnion(removed.filter { $0 >= swap.base && $0 < end })
                            }
                            try Self.expectConsistent(log, published, kept: kept, gone: gone,
                                                      "crash point \(crashPoint)/\(events.count) keep \(keepChance)")
                            try log.close()
                            try FileManager.default.removeItem(atPath: directory)
                        }
                    }
                }
            }
        }
    }
}
