import Foundation
import NIOConcurrencyHelpers
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

/// A log in `directory` (the one `openLog` uses) whose files live in `files`, so a test can evict them and
/// inject faults.
func openLog(
    _ directory: String, _ configuration: LogConfiguration, files: FileDescriptorCache,
    handler: RecordingLogHandler = RecordingLogHandler()
) throws -> TopicLog {
    try TopicLog(
        topic: "news.wire", directory: logDirectory(directory), configuration: configuration,
        logger: makeLogger(handler), files: files)
}

/// Closes every idle file of `files` by opening as many others, which stay open while the result is kept.
func evictIdleFiles(_ files: FileDescriptorCache, _ directory: String) throws -> [CachedFile] {
    let spares = (0..<files.budget).map { CachedFile(path: directory + "/spare\($0)", cache: files) }
    for spare in spares { _ = try spare.lease(creating: true) }
    return spares
}

/// Waits until `condition` holds, for at most `seconds`.
func eventually(within seconds: Int = 5, _ condition: () -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while !condition() {
        guard ContinuousClock.now < deadline else { return false }
        try await Task.sleep(for: .milliseconds(10))
    }
    return true
}

func isTooManyOpenFiles(_ error: TelexError?) -> Bool {
    guard let error else { return false }
    return error.code == .storageFailure && error.message.contains("Too many open files")
        && error.message.contains("raise the open-file limit")
}

@Suite("Failing opens, closes and fsyncs", .timeLimit(.minutes(1)))
struct FileFaultTests {
    @Test("closing a log whose final fsync cannot open its files answers every waiting append with an error")
    func closeWithoutDescriptorsAnswersWaiters() async throws {
        try await withTemporaryDirectory { directory in
            let files = FileDescriptorCache(budget: 8)
            let log = try openLog(directory, testConfiguration(fsync: .always), files: files)
            let result = try log.append(makeBatch(records: 2))
            let spares = try evictIdleFiles(files, directory)
            files.failOpens(.max)
            let acks = NIOLockedValueBox<[Result<Void, TelexError>]>([])
            log.whenDurable(result) { outcome in acks.withLockedValue { $0.append(outcome) } }
            #expect(isTooManyOpenFiles(#expect(throws: TelexError.self) { try log.close() }))
            let answered = acks.withLockedValue { $0 }
            #expect(answered.count == 1)
            if case .failure(let error) = answered.first {
                #expect(error.code == .storageFailure)
                #expect(error.message.contains("closed before its batches were fsynced"), "\(error.message)")
            } else {
                Issue.record("the waiting append was not answered with an error: \(answered)")
            }
            files.failOpens(0)
            _ = spares
        }
    }

    @Test("a sync round that cannot open a file keeps the acks waiting and completes them once opens succeed")
    func openFailureDelaysAcks() async throws {
        try await withTemporaryDirectory { directory in
            let files = FileDescriptorCache(budget: 8)
            let handler = RecordingLogHandler()
            let log = try openLog(directory, testConfiguration(fsync: .always), files: files, handler: handler)
            let first = try log.append(makeBatch(records: 2))
            let spares = try evictIdleFiles(files, directory)
            files.failOpens(.max)
            let started = ContinuousClock.now
            let acks = NIOLockedValueBox<[Result<Void, TelexError>]>([])
            log.whenDurable(first) { result in acks.withLockedValue { $0.append(result) } }
            // Several rounds fail (at 0, 50, 150 ms…); the ack waits, nothing becomes readable.
            try await Task.sleep(for: .milliseconds(400))
            #expect(acks.withLockedValue { $0.isEmpty })
            #expect(log.readableEndOffset == 0)
            #expect(isTooManyOpenFiles(#expect(throws: TelexError.self) { try log.sync() }))
            // An append that cannot open the segment fails alone, with what to do about it.
            #expect(isTooManyOpenFiles(#expect(throws: TelexError.self) { try log.append(makeBatch(seed: 1)) }))

            files.failOpens(0)
            let second = try log.append(makeBatch(records: 1, seed: 2))
            #expect(second.baseOffset == 2, "the failed append took no offsets")
            #expect(try await eventually { !acks.withLockedValue { $0.isEmpty } })
            let results = acks.withLockedValue { $0 }
            #expect(results.count == 1)
            #expect((try? results.first?.get()) != nil, "the ack succeeded: \(results)")
            try await waitUntilDurable(log, second)
            #expect(log.readableEndOffset == 3)
            #expect(try storedValues(log) == publishedValues([makeBatch(records: 2), makeBatch(records: 1, seed: 2)]))
            // Rounds failed every 50…400 ms; warnings come at most one per 10 s.
            let warnings = handler.messages.filter { $0.contains("could not open a file") }
            let tenSecondPeriods = Int((ContinuousClock.now - started) / .seconds(10))
            #expect((1...1 + tenSecondPeriods).contains(warnings.count), "\(warnings.count) warnings")
            #expect(handler.messages.contains { $0.contains("succeeded again") })
            #expect(!handler.messages.contains { $0.contains("fsync failed") })
            try log.close()
            withExtendedLifetime(spares) {}
        }
    }

    @Test("an append or read that cannot open a file fails alone; the log goes on once opens succeed")
    func openFailureFailsOneRequest() async throws {
        try await withTemporaryDirectory { directory in
            let batches = (0..<3).map { makeBatch(records: 1, seed: $0) }
            // One batch per segment, so the failing append is one that rolls (its new files cannot be created).
            let configuration = testConfiguration(segmentBytes: batches[0].readableBytes)
            let files = FileDescriptorCache(budget: 8)
            let log = try openLog(directory, configuration, files: files)
            _ = try log.append(batches[0])
            let spares = try evictIdleFiles(files, directory)
            files.failOpens(.max)
            #expect(isTooManyOpenFiles(#expect(throws: TelexError.self) { try log.append(batches[1]) }))
            #expect(isTooManyOpenFiles(#expect(throws: TelexError.self) { try log.read(from: 0, maxBytes: .max) }))
            #expect(log.endOffset == 1)
            #expect(log.segmentCount == 1)

            files.failOpens(0)
            #expect(try log.append(batches[1]).baseOffset == 1)
            #expect(try log.append(batches[2]).baseOffset == 2)
            #expect(try storedValues(log) == publishedValues(batches))
            try log.close()
            #expect(try storedValues(try openLog(directory, configuration)) == publishedValues(batches))
            withExtendedLifetime(spares) {}
        }
    }

    @Test("a failed fsync fails the log: the waiting acks and every later append get the error")
    func fsyncFailureFailsTheLog() async throws {
        try await withTemporaryDirectory { directory in
            let files = FileDescriptorCache(budget: 8)
            let log = try openLog(directory, testConfiguration(fsync: .always), files: files)
            let first = try log.append(makeBatch())
            files.failSyncs(1)
            let error = await #expect(throws: TelexError.self) { try await waitUntilDurable(log, first) }
            #expect(error?.message.contains("fdatasync") == true)
            #expect(log.readableEndOffset == 0)
            let refused = #expect(throws: TelexError.self) { try log.append(makeBatch(seed: 1)) }
            #expect(refused?.code == .storageFailure)
            #expect(refused?.message.contains("is failed: fdatasync") == true)
        }
    }

    @Test("a failed close of an evicted .log (NFS reports writeback errors there) fails the log at the next round")
    func closeFailureFailsTheLog() async throws {
        try await withTemporaryDirectory { directory in
            let files = FileDescriptorCache(budget: 8)
            let log = try openLog(directory, testConfiguration(fsync: .always), files: files)
            let first = try log.append(makeBatch())
            files.failCloses(.max)
            let spares = try evictIdleFiles(files, directory)
            files.failCloses(0)
            // The round's own fdatasync succeeds through a new descriptor; the close's error still counts.
            let error = await #expect(throws: TelexError.self) { try await waitUntilDurable(log, first) }
            #expect(error?.message == "close \(segmentPath(directory, 0, ".log")): Input/output error")
            #expect(log.readableEndOffset == 0)
            let refused = #expect(throws: TelexError.self) { try log.append(makeBatch(seed: 1)) }
            #expect(refused?.message.contains("is failed: close") == true)
            withExtendedLifetime(spares) {}
        }
    }

    @Test("the cache keeps a failed close for its file only, and forgets it with the file")
    func closeFailureBelongsToItsFile() async throws {
        try await withTemporaryDirectory { directory in
            let files = FileDescriptorCache(budget: 1)
            let first = CachedFile(path: directory + "/first", cache: files)
            let second = CachedFile(path: directory + "/second", cache: files)
            _ = try first.lease(creating: true)
            files.failCloses(1)
            _ = try second.lease(creating: true)
            #expect(first.closeFailure?.message == "close \(directory)/first: Input/output error")
            #expect(second.closeFailure == nil)
            // The file works on: it is opened again.
            _ = try first.lease()
            #expect(files.openCount == 1)
            second.closeIfIdle()
            #expect(second.closeFailure == nil, "closing an idle file whose close succeeds records nothing")
        }
    }
}
