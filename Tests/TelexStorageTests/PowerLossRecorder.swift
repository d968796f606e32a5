import Synchronization
import TelexProtocol

@testable import TelexStorage

#if canImport(Glibc)
    import Glibc
#endif

/// One step of a recorded workload: a change the file system may keep or lose in a power cut, a sync that
/// decides which it must keep, or a marker the workload adds when the broker acknowledged something.
enum DiskEvent: Sendable {
    /// A new, empty file.
    case create(String)
    case makeDirectory(String)
    case write(String, offset: Int, bytes: [UInt8])
    case truncate(String, length: Int)
    /// fdatasync of a file: its data and size so far survive.
    case sync(String)
    /// fsync of a directory: its entries so far (creations, renames, deletions) survive.
    case syncDirectory(String)
    case rename(String, to: String)
    case unlink(String)
    case removeDirectory(String)
    case acknowledged(Acknowledgement)
}

/// What the workload was told, and when: the facts a crash must not undo.
enum Acknowledgement: Sendable {
    /// A batch of `topic` is durable at `offset`; `body` is its bytes after the broker-stamped 20.
    case batch(topic: String, offset: Int64, recordCount: UInt32, body: [UInt8])
    /// A consumer commit was asked for (before it starts) and returned (after it is durable).
    case commitRequested(topic: String, offset: Int64)
    case commitReturned(topic: String, offset: Int64)
    /// Retention of `topic` is about to run / ran, leaving the log at `startOffset`.
    case retentionStarts(topic: String)
    case retentionEnded(topic: String, startOffset: Int64)
}

/// A file system that does every change for real, skips real fsyncs (nothing here needs to survive a power cut)
/// and records every change and sync in order.
///
/// Writes are recorded once done, fsyncs when they start: a write made while an fsync runs counts as not
/// covered by it, as POSIX promises nothing more. With `lyingSync`, file fsyncs are not recorded (a broker that
/// acknowledges before its data is on disk), which the harness must catch.
final class RecordingFileSystem: FileSystem {
    private let system = SystemFileSystem()
    private let recorded = Mutex<[DiskEvent]>([])
    let lyingSync: Bool

    init(lyingSync: Bool = false) {
        self.lyingSync = lyingSync
    }

    var events: [DiskEvent] { recorded.withLock { $0 } }

    func record(_ event: DiskEvent) {
        recorded.withLock { $0.append(event) }
    }

    func open(_ path: String, flags: Int32, mode: mode_t) -> Int {
        let existed = access(path, F_OK) == 0
        let fd = system.open(path, flags: flags, mode: mode)
        if fd >= 0 {
            if !existed, flags & O_CREAT != 0 { record(.create(path)) }
            if existed, flags & O_TRUNC != 0 { record(.truncate(path, length: 0)) }
        }
        return fd
    }

    func close(_ fd: CInt, path: String) -> Int { system.close(fd, path: path) }

    func read(_ fd: CInt, into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int, path: String) -> Int {
        system.read(fd, into: buffer, count: count, at: offset, path: path)
    }

    func write(_ fd: CInt, from buffer: UnsafeRawPointer, count: Int, at offset: Int, path: String) -> Int {
        let written = system.write(fd, from: buffer, count: count, at: offset, path: path)
        if written > 0 {
            let bytes = [UInt8](UnsafeRawBufferPointer(start: buffer, count: written))
            record(.write(path, offset: offset, bytes: bytes))
        }
        return written
    }

    func truncate(_ fd: CInt, to length: Int, path: String) -> Int {
        let result = system.truncate(fd, to: length, path: path)
        if result == 0 { record(.truncate(path, length: length)) }
        return result
    }

    func sync(_ fd: CInt, path: String) -> Int {
        if !lyingSync { record(.sync(path)) }
        return 0
    }

    func syncDirectory(_ fd: CInt, path: String) -> Int {
        record(.syncDirectory(path))
        return 0
    }

    func rename(_ from: String, to: String) -> Int {
        let result = system.rename(from, to: to)
        if result == 0 { record(.rename(from, to: to)) }
        return result
    }

    func unlink(_ path: String) -> Int {
        let result = system.unlink(path)
        if result == 0 { record(.unlink(path)) }
        return result
    }

    func makeDirectory(_ path: String, mode: mode_t) -> Int {
        let result = system.makeDirectory(path, mode: mode)
        if result == 0 { record(.makeDirectory(path)) }
        return result
    }

    func removeDirectory(_ path: String) -> Int {
        let result = system.removeDirectory(path)
        if result == 0 { record(.removeDirectory(path)) }
        return result
    }
}

/// A file system whose fsyncs do nothing: crash states are checked in throw-away directories, where durability
/// is moot and real fsyncs would only make thousands of checks slow.
struct NoSyncFileSystem: ForwardingFileSystem {
    func sync(_ fd: CInt, path: String) -> Int { 0 }
    func syncDirectory(_ fd: CInt, path: String) -> Int { 0 }
}
