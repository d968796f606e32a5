import Dispatch
import Foundation
import Synchronization
import TelexProtocol
import Testing

@testable import TelexStorage

#if canImport(Glibc)
    import Glibc
#endif

/// The system's file system, except that directory fsyncs wait while the gate is closed: a sync round that seals
/// rolled segments (its directory fsync) then stays in progress until the test opens the gate.
private final class GatedDirectorySyncs: ForwardingFileSystem {
    private let closed = Atomic<Bool>(false)
    private let opened = DispatchSemaphore(value: 0)

    func close() { closed.store(true, ordering: .sequentiallyConsistent) }
    func open() {
        closed.store(false, ordering: .sequentiallyConsistent)
        for _ in 0..<8 { opened.signal() }
    }

    func syncDirectory(_ fd: CInt, path: String) -> Int {
        if closed.load(ordering: .sequentiallyConsistent) { opened.wait() }
        return FileSystemSeam.system.syncDirectory(fd, path: path)
    }
}

private func recoveryPoint(_ directory: String) throws -> Int64? {
    let path = logDirectory(directory) + "/" + TopicLog.recoveryPointFileName
    guard FileManager.default.fileExists(atPath: path) else { return nil }
    let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    return bytes.prefix(8).reduce(Int64(0)) { $0 << 8 | Int64($1) }
}

@Suite("Sealing rolled segments and the recovery point", .timeLimit(.minutes(1)))
struct SealingTests {
    @Test("a crash with several rolled segments awaiting their seal: recovery scans every one of them")
    func everyUnsealedSegmentIsScanned() async throws {
        try await withTemporaryDirectory { directory in
            let gate = GatedDirectorySyncs()
            try await withFileSystem(gate, under: directory) {
                let batches = (0..<6).map { makeBatch(records: 1, seed: $0) }
                let configuration = testConfiguration(segmentBytes: batches[0].readableBytes)
                let log = try TopicLog(topic: "news.world", directory: logDirectory(directory),
                                       configuration: configuration, logger: makeLogger())
                #expect(try recoveryPoint(directory) == nil, "a log that never rolled has no recovery point")
                for batch in batches.prefix(3) { _ = try log.append(batch) }
                #expect(try await eventually { log.unsealedSegmentCount == 0 })
                #expect(try await eventually { (try? recoveryPoint(directory)) == 2 },
                        "sealing segments 0 and 1 recorded that segments below 2 are sealed")

                // Rounds now stop at their directory fsync: segments 2, 3 and 4 roll without being sealed.
                gate.close()
                for batch in batches.dropFirst(3) { _ = try log.append(batch) }
                #expect(log.segmentCount == 6)
                #expect(log.unsealedSegmentCount >= 2)
                #expect(try recoveryPoint(directory) == 2)

                // A crash now: open a copy of the files as they are.
                let crashed = directory + "-crashed"
                try FileManager.default.copyItem(atPath: directory, toPath: crashed)
                defer { try? FileManager.default.removeItem(atPath: crashed) }
                let recovered = try TopicLog(topic: "news.world", directory: logDirectory(crashed),
                                             configuration: configuration, logger: makeLogger())
                #expect(recovered.segmentsScannedAtOpen == 4, "segments 2 to 5 are scanned, 0 and 1 trusted")
                #expect(try storedValues(recovered) == publishedValues(batches))
                #expect(try recoveryPoint(crashed) == 5, "once checked and synced, the open records them sealed")
                try recovered.close()
                let again = try TopicLog(topic: "news.world", directory: logDirectory(crashed),
                                         configuration: configuration, logger: makeLogger())
                #expect(again.segmentsScannedAtOpen == 1, "only the active segment")
                try again.close()

                gate.open()
                try log.close()
            }
        }
    }
}
