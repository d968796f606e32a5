import Dispatch
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

/// The power-loss harness (Protocol/STORAGE.md §13.3): record a workload's writes and syncs, build crash states
/// from them, and check every state against what the workload was told.
enum PowerLoss {
    static let topics = ["news.world", "news.sport"]
    static let consumer = "desk"

    /// Small segments and index intervals, so a short workload rolls, indexes and deletes segments.
    static let configuration = testConfiguration(
        segmentBytes: 1200, indexIntervalBytes: 150, retentionBytes: 3000, fsync: .always)

    /// Runs the workload of `seed` on a store in `root` (served by `recorder`), adding acknowledgement markers.
    ///
    /// Deterministic for a seed: every step waits for the fsync round it started, so the recorded sequence does
    /// not depend on thread timing. Appends come in groups from several producers (some idempotent, with a
    /// retried duplicate now and then) and are acknowledged once the last of the group is durable.
    static func runWorkload(seed: UInt64, root: String, recorder: RecordingFileSystem) async throws {
        var random = SeededGenerator(seed: seed)
        let store = try TopicStore(directory: root + "/data", configuration: configuration, logger: makeLogger())
        let logs = try topics.map { try store.createLog($0).log }
        var sequences: [Int64: Int32] = [101: 0, 102: 0]
        var lastIdempotent: (log: TopicLog, batch: ByteBuffer)?
        var committed: [String: Int64] = [:]
        var batchSeed = Int(seed % 1000) * 1000
        for _ in 0..<40 {
            let log = logs[Int.random(in: 0..<logs.count, using: &random)]
            switch Int.random(in: 0..<10, using: &random) {
            case 0..<6:
                var appended: [(AppendResult, ByteBuffer)] = []
                for _ in 0..<Int.random(in: 1...4, using: &random) {
                    let producer = [Int64(0), 101, 102][Int.random(in: 0..<3, using: &random)]
                    let sequence = producer == 0 ? -1 : sequences[producer]!
                    if producer != 0 { sequences[producer]! += 1 }
                    batchSeed += 1
                    let batch = makeBatch(records: Int.random(in: 1...3, using: &random), seed: batchSeed,
                                          producerID: producer, sequence: sequence)
                    if producer != 0 { lastIdempotent = (log, batch) }
                    let segments = log.segmentCount
                    // A new append time for every batch, so the time index entries do not depend on timing.
                    waitForClock(after: FileIO.nowMilliseconds())
                    let result = try log.append(batch)
                    appended.append((result, batch))
                    // A roll queued a sealing round: let it finish before the next change, for a fixed order.
                    if log.segmentCount != segments {
                        #expect(try await eventually { log.unsealedSegmentCount == 0 })
                    }
                }
                try await waitUntilDurable(log, appended.last!.0)
                for (result, batch) in appended {
                    recorder.record(.acknowledged(.batch(
                        topic: log.topic, offset: result.baseOffset, recordCount: result.recordCount,
                        body: Array(bytes(batch).dropFirst(20)))))
                }
            case 6:
                guard let (log, batch) = lastIdempotent else { continue }
                #expect(try log.append(batch).duplicate)
            case 7, 8:
                let behind = Int64.random(in: 0...2, using: &random)
                let offset = max(committed[log.topic] ?? 0, log.readableEndOffset - behind)
                committed[log.topic] = offset
                recorder.record(.acknowledged(.commitRequested(topic: log.topic, offset: offset)))
                try store.consumerOffsets.commit(consumer, topic: log.topic, offset: offset)
                recorder.record(.acknowledged(.commitReturned(topic: log.topic, offset: offset)))
            default:
                recorder.record(.acknowledged(.retentionStarts(topic: log.topic)))
                try log.applyRetention()
                recorder.record(.acknowledged(.retentionEnded(topic: log.topic, startOffset: log.startOffset)))
            }
        }
        try store.close()
    }

    /// What the workload had been told by `crashPoint`.
    struct Promises {
        var batches: [String: [(offset: Int64, recordCount: UInt32, body: [UInt8])]] = [:]
        /// Per topic, the first offset that must still be there (retention may have deleted the ones below).
        var requiredStart: [String: Int64] = [:]
        var commitsRequested: [String: Set<Int64>] = [:]
        var newestCommitReturned: [String: Int64] = [:]

        init(_ events: [DiskEvent], crashPoint: Int) {
            for (index, event) in events.enumerated() {
                guard case .acknowledged(let acknowledgement) = event else { continue }
                switch acknowledgement {
                case .batch(let topic, let offset, let count, let body):
                    if index < crashPoint { batches[topic, default: []].append((offset, count, body)) }
                case .commitRequested(let topic, let offset):
                    if index < crashPoint { commitsRequested[topic, default: []].insert(offset) }
                case .commitReturned(let topic, let offset):
                    if index < crashPoint { newestCommitReturned[topic] = offset }
                case .retentionStarts:
                    break
                case .retentionEnded(let topic, let startOffset):
                    // A retention that started before the crash may have deleted up to where it ended.
                    let started = events[..<index].lastIndex {
                        if case .acknowledged(.retentionStarts(topic)) = $0 { true } else { false }
                    }!
                    if started < crashPoint { requiredStart[topic] = startOffset }
                }
            }
        }
    }

    /// Opens the store in `directory` (a materialized crash state) and returns every broken promise.
    static func check(_ directory: String, _ promises: Promises) -> [String] {
        var problems: [String] = []
        let store: TopicStore
        do {
            store = try TopicStore(directory: directory + "/data", configuration: configuration, logger: makeLogger())
        } catch {
            return ["the store does not open: \(error)"]
        }
        defer { try? store.close() }
        for topic in topics {
            let acknowledged = promises.batches[topic] ?? []
            let required = acknowledged.filter { $0.offset >= promises.requiredStart[topic] ?? 0 }
            guard let log = store.log(topic) else {
                if !required.isEmpty {
                    problems.append("topic \(topic) lost with \(required.count) acknowledged batches")
                }
                continue
            }
            do {
                // A power loss may keep a later unsynced write and lose an earlier one (it reads as zeros):
                // recovery reports that hole as a damaged range (STORAGE.md §6.2). DATA_LOSS may only ever cover
                // offsets that were never acknowledged.
                let damaged = log.state.withLock { state in state.segments.flatMap(\.damaged) }
                for batch in required {
                    if let damage = damaged.first(where: {
                        $0.firstOffset < batch.offset + Int64(batch.recordCount) && $0.nextOffset > batch.offset
                    }) {
                        problems.append("acknowledged offset \(topic) \(batch.offset) lies in damaged range "
                                        + "\(damage.firstOffset)..<\(damage.nextOffset)")
                        continue
                    }
                    guard let slice = try log.read(from: batch.offset, maxBytes: 1),
                        let stored = try RecordBatch.split(try slice.readBytes()).first,
                        header(stored).baseOffset == batch.offset, Array(bytes(stored).dropFirst(20)) == batch.body
                    else {
                        problems.append("acknowledged batch lost: \(topic) offset \(batch.offset)")
                        continue
                    }
                    // The key index answers for every acknowledged record as it did before the crash.
                    for (index, record) in try RecordBatch.decodeRecords(stored).records.enumerated() {
                        let key = String(decoding: record.key.readableBytesView, as: UTF8.self)
                        let offset = batch.offset + Int64(index)
                        if try !log.versions(of: key, below: log.readableEndOffset).contains(where: { $0.offset == offset }) {
                            problems.append("key index lost \(topic) offset \(offset) of key \(key)")
                        }
                    }
                }
                var offset = log.startOffset
                var served: Int64 = offset
                while let slice = try log.read(from: offset, maxBytes: .max, skipDamaged: true) {
                    for stored in try RecordBatch.split(try slice.readBytes()) {
                        let checked = try RecordBatch.validate(stored, limits: configuration.batchLimits,
                                                               context: "\(topic) batch")
                        if checked.baseOffset < served {
                            problems.append("\(topic) served offset \(checked.baseOffset) after \(served)")
                        }
                        served = checked.nextOffset
                    }
                    offset = slice.nextOffset
                }
                let promisedEnd = acknowledged.map { $0.offset + Int64($0.recordCount) }.max() ?? 0
                let next = try log.append(makeBatch(records: 1, seed: 999_999))
                if next.baseOffset < max(promisedEnd, served) {
                    problems.append("\(topic) reused offset \(next.baseOffset): acknowledged up to \(promisedEnd), "
                                    + "served up to \(served)")
                }
            } catch {
                problems.append("\(topic): \(error)")
            }
            let recovered = store.consumerOffsets.committed(consumer)[topic]
            let requested = promises.commitsRequested[topic] ?? []
            let returned = promises.newestCommitReturned[topic]
            if let recovered {
                if !requested.contains(recovered) {
                    problems.append(
                        "\(topic) committed offset \(recovered) was never requested (\(requested.sorted()))")
                }
                if let returned, recovered < returned {
                    problems.append("\(topic) committed offset \(recovered) is older than the acknowledged \(returned)")
                }
            } else if let returned {
                problems.append("\(topic) committed offset \(returned) lost")
            }
        }
        return problems
    }

    /// Records the workload of each seed and checks `statesPerSeed` crash states of it (on every core); returns
    /// the problems found, each naming its seed, state and crash point, and how many states were checked.
    static func run(
        seeds: [UInt64], statesPerSeed: Int, lyingSync: Bool = false
    ) async throws -> (problems: [String], states: Int) {
        var problems: [String] = []
        var states = 0
        for seed in seeds {
            try await withScratchDirectory { root in
                try await withScratchDirectory { scratch in
                    let recorder = RecordingFileSystem(lyingSync: lyingSync)
                    try await withFileSystem(recorder, under: root) {
                        try await runWorkload(seed: seed, root: root, recorder: recorder)
                    }
                    let events = recorder.events
                    try await withFileSystem(NoSyncFileSystem(), under: scratch) {
                        problems += try await checkStates(
                            statesPerSeed, seed: seed, events: events, root: root, scratch: scratch)
                        states += statesPerSeed
                    }
                }
            }
        }
        return (problems.sorted(), states)
    }

    /// Checks states `0..<count` of `seed` on threads of their own, one per core but one. Not on the cooperative pool
    /// (two threads here), whose every other test they would starve, and not on Dispatch's global queues either: the
    /// logs' fsync queues run there, so every other storage test would wait for the checks to end; one core is left
    /// to the rest of the suite.
    private static func checkStates(
        _ count: Int, seed: UInt64, events: [DiskEvent], root: String, scratch: String
    ) async throws -> [String] {
        let workers = max(1, ProcessInfo.processInfo.activeProcessorCount - 1)
        let results = NIOLockedValueBox<(found: [String], error: (any Error)?, running: Int)>(([], nil, workers))
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            for worker in 0..<workers {
                Thread {
                    var found: [String] = []
                    var failure: (any Error)?
                    do {
                        for state in stride(from: worker, to: count, by: workers) {
                            found += try checkState(state, seed: seed, events: events, root: root, scratch: scratch)
                        }
                    } catch {
                        failure = error
                    }
                    let last = results.withLockedValue { results -> Bool in
                        results.found += found
                        results.error = results.error ?? failure
                        results.running -= 1
                        return results.running == 0
                    }
                    if last { continuation.resume() }
                }.start()
            }
        }
        let (found, error, _) = results.withLockedValue { $0 }
        if let error { throw error }
        return found
    }

    /// Builds crash state `state` of `seed`'s recorded `events`, writes it under `scratch` and checks it.
    private static func checkState(
        _ state: Int, seed: UInt64, events: [DiskEvent], root: String, scratch: String
    ) throws -> [String] {
        var random = SeededGenerator(seed: seed &* 1_000_003 &+ UInt64(state))
        let crashPoint = Int.random(in: 0...events.count, using: &random)
        let keepChance = [0, 0.5, 1, Double.random(in: 0..<1, using: &random)][state % 4]
        let image = CrashImage(events, root: root, crashPoint: crashPoint, keepChance: keepChance, tearChance: 0.3,
                               random: &random)
        let directory = scratch + "/state\(state)"
        try image.materialize(in: directory)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let found = check(directory, Promises(events, crashPoint: crashPoint))
        if !found.isEmpty, let keep = ProcessInfo.processInfo.environment["TELEX_POWER_LOSS_KEEP"] {
            // The state as it was before the check opened (and recovered) it.
            try image.materialize(in: "\(keep)/seed\(seed)-state\(state)")
        }
        return found.map { "seed=\(seed) state=\(state) crashPoint=\(crashPoint)/\(events.count): \($0)" }
    }
}

/// Runs `body` with a new empty directory in memory (`/dev/shm`) when there is one, else under the temporary
/// directory: thousands of crash states are written and read back, and a disk shared with builds makes each
/// file creation slow.
func withScratchDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    let memory = "/dev/shm"
    guard FileManager.default.isWritableFile(atPath: memory) else { return try await withTemporaryDirectory(body) }
    let path = memory + "/telex-power-loss-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try await body(path)
}

