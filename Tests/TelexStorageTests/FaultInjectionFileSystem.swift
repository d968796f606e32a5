import Synchronization
import TelexProtocol

@testable import TelexStorage

#if canImport(Glibc)
    import Glibc
#endif

/// The system calls of `FileSystem`, to name which one a fault hits.
enum FileOperation: String, CaseIterable, Sendable {
    case open, close, read, write, truncate, sync, syncDirectory, rename, unlink, makeDirectory, removeDirectory
}

/// A file system that forwards to the real one, except for the faults a test asks for: an errno for some calls
/// of one operation on matching paths, short reads and writes, and EINTR before every other call.
///
/// A failing fsync also cuts the file back to its size at its last successful fsync, as a
/// kernel that drops the dirty pages it could not write leaves it after a restart.
final class FaultInjectingFileSystem: FileSystem {
    struct Fault {
        var operation: FileOperation
        /// Only paths containing this; every path when empty.
        var pathContains: String
        var errno: Int32
        /// How many more calls fail.
        var remaining: Int
        /// A failing write first writes this share of its bytes (as a disk filling up mid-write does).
        var writesHalfFirst: Bool
    }

    private struct State {
        var faults: [Fault] = []
        var shortTransfers = false
        var interrupts = false
        /// Calls made so far per operation, to interrupt every other one.
        var calls: [FileOperation: Int] = [:]
        var interrupted: [FileOperation: Int] = [:]
        var injected: [FileOperation: Int] = [:]
        var syncedSizes: [String: Int] = [:]
    }

    private let state = Mutex(State())
    private let system = SystemFileSystem()

    /// The next `count` calls of `operation` on paths containing `pathContains` fail with `code`.
    func fail(
        _ operation: FileOperation, on pathContains: String = "", with code: Int32, count: Int = 1,
        writesHalfFirst: Bool = false
    ) {
        state.withLock {
            $0.faults.append(Fault(operation: operation, pathContains: pathContains, errno: code, remaining: count,
                                   writesHalfFirst: writesHalfFirst))
        }
    }

    /// Removes every pending fault.
    func heal() { state.withLock { $0.faults = [] } }

    /// Reads and writes move at most half their bytes (at least one) per call.
    func shortenTransfers(_ on: Bool = true) { state.withLock { $0.shortTransfers = on } }

    /// Every other call of every operation fails with EINTR before doing anything (a close does its work first,
    /// as Linux does).
    func interruptCalls(_ on: Bool = true) { state.withLock { $0.interrupts = on } }

    /// Calls answered with EINTR, per operation.
    var interrupted: [FileOperation: Int] { state.withLock { $0.interrupted } }
    /// Faults injected (the errno ones), per operation.
    var injected: [FileOperation: Int] { state.withLock { $0.injected } }

    private enum Decision { case proceed, interrupt, fail(Int32, halfFirst: Bool) }

    private func decide(_ operation: FileOperation, _ path: String) -> Decision {
        state.withLock { state in
            if let index = state.faults.firstIndex(where: {
                $0.operation == operation && $0.remaining > 0
                    && ($0.pathContains.isEmpty || path.contains($0.pathContains))
            }) {
                state.faults[index].remaining -= 1
                state.injected[operation, default: 0] += 1
                return .fail(state.faults[index].errno, halfFirst: state.faults[index].writesHalfFirst)
            }
            guard state.interrupts else { return .proceed }
            state.calls[operation, default: 0] += 1
            guard state.calls[operation]! % 2 == 1 else { return .proceed }
            state.interrupted[operation, default: 0] += 1
            return .interrupt
        }
    }

    private func transferCount(_ count: Int) -> Int {
        state.withLock { $0.shortTransfers } ? max(1, count / 2) : count
    }

    /// The result of a call that does nothing unless the decision is to proceed.
    private func simple(_ operation: FileOperation, _ path: String, _ call: () -> Int) -> Int {
        switch decide(operation, path) {
        case .proceed: call()
        case .interrupt: -Int(EINTR)
        case .fail(let code, _): -Int(code)
        }
    }

    func open(_ path: String, flags: Int32, mode: mode_t) -> Int {
        simple(.open, path) { system.open(path, flags: flags, mode: mode) }
    }

    func close(_ fd: CInt, path: String) -> Int {
        let result = system.close(fd, path: path)
        switch decide(.close, path) {
        case .proceed: return result
        case .interrupt: return -Int(EINTR)
        case .fail(let code, _): return -Int(code)
        }
    }

    func read(_ fd: CInt, into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int, path: String) -> Int {
        simple(.read, path) { system.read(fd, into: buffer, count: transferCount(count), at: offset, path: path) }
    }

    func write(_ fd: CInt, from buffer: UnsafeRawPointer, count: Int, at offset: Int, path: String) -> Int {
        switch decide(.write, path) {
        case .proceed:
            return system.write(fd, from: buffer, count: transferCount(count), at: offset, path: path)
        case .interrupt:
            return -Int(EINTR)
        case .fail(let code, let halfFirst):
            if halfFirst, count > 1 { _ = system.write(fd, from: buffer, count: count / 2, at: offset, path: path) }
            return -Int(code)
        }
    }

    func truncate(_ fd: CInt, to length: Int, path: String) -> Int {
        simple(.truncate, path) { system.truncate(fd, to: length, path: path) }
    }

    func sync(_ fd: CInt, path: String) -> Int {
        switch decide(.sync, path) {
        case .proceed:
            let result = system.sync(fd, path: path)
            if result == 0 {
                var info = stat()
                if fstat(fd, &info) == 0 { state.withLock { $0.syncedSizes[path] = Int(info.st_size) } }
            }
            return result
        case .interrupt:
            return -Int(EINTR)
        case .fail(let code, _):
            // The dirty pages are gone: what a restart finds is what the last good fsync wrote.
            let synced = state.withLock { $0.syncedSizes[path] } ?? 0
            _ = system.truncate(fd, to: synced, path: path)
            return -Int(code)
        }
    }

    func syncDirectory(_ fd: CInt, path: String) -> Int {
        simple(.syncDirectory, path) { system.syncDirectory(fd, path: path) }
    }

    func rename(_ from: String, to: String) -> Int {
        simple(.rename, to) { system.rename(from, to: to) }
    }

    func unlink(_ path: String) -> Int {
        simple(.unlink, path) { system.unlink(path) }
    }

    func makeDirectory(_ path: String, mode: mode_t) -> Int {
        simple(.makeDirectory, path) { system.makeDirectory(path, mode: mode) }
    }

    func removeDirectory(_ path: String) -> Int {
        simple(.removeDirectory, path) { system.removeDirectory(path) }
    }
}

/// Runs `body` with `fileSystem` serving every path under `directory`.
func withFileSystem<T>(
    _ fileSystem: any FileSystem, under directory: String, _ body: () async throws -> T
) async throws -> T {
    FileSystemSeam.install(fileSystem, under: directory)
    defer { FileSystemSeam.remove(under: directory) }
    return try await body()
}

/// A test file system that passes every call on to the system's; conformers replace only the calls they change.
protocol ForwardingFileSystem: FileSystem {}

extension ForwardingFileSystem {
    private var system: SystemFileSystem { FileSystemSeam.system }
    func open(_ path: String, flags: Int32, mode: mode_t) -> Int { system.open(path, flags: flags, mode: mode) }
    func close(_ fd: CInt, path: String) -> Int { system.close(fd, path: path) }
    func read(_ fd: CInt, into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int, path: String) -> Int {
        system.read(fd, into: buffer, count: count, at: offset, path: path)
    }
    func write(_ fd: CInt, from buffer: UnsafeRawPointer, count: Int, at offset: Int, path: String) -> Int {
        system.write(fd, from: buffer, count: count, at: offset, path: path)
    }
    func truncate(_ fd: CInt, to length: Int, path: String) -> Int { system.truncate(fd, to: length, path: path) }
    func sync(_ fd: CInt, path: String) -> Int { system.sync(fd, path: path) }
    func syncDirectory(_ fd: CInt, path: String) -> Int { system.syncDirectory(fd, path: path) }
    func rename(_ from: String, to: String) -> Int { system.rename(from, to: to) }
    func unlink(_ path: String) -> Int { system.unlink(path) }
    func makeDirectory(_ path: String, mode: mode_t) -> Int { system.makeDirectory(path, mode: mode) }
    func removeDirectory(_ path: String) -> Int { system.removeDirectory(path) }
}
