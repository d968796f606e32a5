#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// The system calls by which storage changes files, one method each: the seam tests replace to inject faults
/// (EIO, ENOSPC, short writes, EINTR) or to record writes and syncs for the power-loss harness
/// (Protocol/STORAGE.md §13).
///
/// `FileIO` sends every call through the file system installed for the path (`FileSystemSeam`), the real one
/// unless a test installed another for a directory tree. Each method gets the path the call is about (for a
/// descriptor, the path it was opened with) and returns what the system call returns, or `-errno` when it fails:
/// `errno` itself would not survive the code of a replacement.
protocol FileSystem: Sendable {
    /// `open(2)`: a descriptor, or `-errno`.
    func open(_ path: String, flags: Int32, mode: mode_t) -> Int
    /// `close(2)`: 0, or `-errno` (the descriptor is released either way).
    func close(_ fd: CInt, path: String) -> Int
    /// `pread(2)`: bytes read (0 at end of file), or `-errno`.
    func read(_ fd: CInt, into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int, path: String) -> Int
    /// `pwrite(2)`: bytes written (possibly fewer than `count`), or `-errno`.
    func write(_ fd: CInt, from buffer: UnsafeRawPointer, count: Int, at offset: Int, path: String) -> Int
    /// `ftruncate(2)`: 0, or `-errno`.
    func truncate(_ fd: CInt, to length: Int, path: String) -> Int
    /// `fdatasync(2)` of a file: 0, or `-errno`.
    func sync(_ fd: CInt, path: String) -> Int
    /// `fsync(2)` of a directory (makes creations, renames and deletions in it durable): 0, or `-errno`.
    func syncDirectory(_ fd: CInt, path: String) -> Int
    /// `rename(2)`: 0, or `-errno`.
    func rename(_ from: String, to: String) -> Int
    /// `unlink(2)`: 0, or `-errno`.
    func unlink(_ path: String) -> Int
    /// `mkdir(2)`: 0, or `-errno`.
    func makeDirectory(_ path: String, mode: mode_t) -> Int
    /// `rmdir(2)`: 0, or `-errno`.
    func removeDirectory(_ path: String) -> Int
}

/// The kernel's file system: each method is the system call.
struct SystemFileSystem: FileSystem {
    private static func result(_ value: Int) -> Int { value >= 0 ? value : -Int(errno) }

    func open(_ path: String, flags: Int32, mode: mode_t) -> Int { Self.result(Int(Glibc.open(path, flags, mode))) }
    func close(_ fd: CInt, path: String) -> Int { Self.result(Int(Glibc.close(fd))) }
    func read(_ fd: CInt, into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int, path: String) -> Int {
        Self.result(pread(fd, buffer, count, off_t(offset)))
    }
    func write(_ fd: CInt, from buffer: UnsafeRawPointer, count: Int, at offset: Int, path: String) -> Int {
        Self.result(pwrite(fd, buffer, count, off_t(offset)))
    }
    func truncate(_ fd: CInt, to length: Int, path: String) -> Int { Self.result(Int(ftruncate(fd, off_t(length)))) }
    func sync(_ fd: CInt, path: String) -> Int { Self.result(Int(fdatasync(fd))) }
    func syncDirectory(_ fd: CInt, path: String) -> Int { Self.result(Int(fsync(fd))) }
    func rename(_ from: String, to: String) -> Int { Self.result(Int(Glibc.rename(from, to))) }
    func unlink(_ path: String) -> Int { Self.result(Int(Glibc.unlink(path))) }
    func makeDirectory(_ path: String, mode: mode_t) -> Int { Self.result(Int(mkdir(path, mode))) }
    func removeDirectory(_ path: String) -> Int { Self.result(Int(rmdir(path))) }
}

/// Which `FileSystem` serves a path: the one installed for the nearest enclosing directory, else the system's.
///
/// Like a LazyFS mount, a replacement covers one directory tree, so tests running in parallel, each in its own
/// temporary directory, do not see each other's. With none installed (production) a lookup is one atomic load.
enum FileSystemSeam {
    static let system = SystemFileSystem()
    private static let installedCount = Atomic<Int>(0)
    private static let installed = Mutex<[(root: String, fileSystem: any FileSystem)]>([])

    /// The file system for `path`.
    static func fileSystem(for path: String) -> any FileSystem {
        guard installedCount.load(ordering: .acquiring) > 0 else { return system }
        return installed.withLock { list in
            list.filter { path == $0.root || path.hasPrefix($0.root + "/") }
                .max { $0.root.count < $1.root.count }?.fileSystem
        } ?? system
    }

    /// Serves every path under `root` (an absolute path, as the storage is given it) with `fileSystem` until
    /// `remove(under:)`.
    static func install(_ fileSystem: any FileSystem, under root: String) {
        installed.withLock { list in
            precondition(!list.contains { $0.root == root }, "a file system is already installed under \(root)")
            list.append((root, fileSystem))
            installedCount.store(list.count, ordering: .releasing)
        }
    }

    /// Serves `root` with the system's file system again.
    static func remove(under root: String) {
        installed.withLock { list in
            list.removeAll { $0.root == root }
            installedCount.store(list.count, ordering: .releasing)
        }
    }
}
