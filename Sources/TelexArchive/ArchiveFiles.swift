#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOPosix
import TelexProtocol

/// The few POSIX file calls the archive makes (TelexStorage's `FileIO` is internal to it), failing with
/// `storageFailure` errors naming the file. Blocking: the archiver and the cache run them through `offload` (NIO's
/// thread pool), restore and tests in their own task; never on an event loop.
enum ArchiveFiles {
    static func failure(_ operation: String, _ path: String, errno code: Int32 = errno) -> TelexError {
        TelexError(.storageFailure, "\(operation) \(path): \(String(cString: strerror(code)))")
    }

    static func open(_ path: String, flags: Int32, mode: mode_t = 0o644) throws(TelexError) -> CInt {
        while true {
            let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
            if fd >= 0 { return fd }
            if errno != EINTR { throw failure("open", path) }
        }
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    static func size(_ fd: CInt, path: String) throws(TelexError) -> Int {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw failure("fstat", path) }
        return Int(info.st_size)
    }

    /// Reads up to `length` bytes at `offset` (fewer only at end of file).
    static func read(_ fd: CInt, at offset: Int, length: Int, path: String) throws(TelexError) -> ByteBuffer {
        var buffer = ByteBuffer()
        var failed: Int32 = 0
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: max(length, 1)) { bytes in
            var total = 0
            while total < length {
                let count = pread(fd, bytes.baseAddress! + total, length - total, off_t(offset + total))
                if count < 0 {
                    if errno == EINTR { continue }
                    failed = errno
                    break
                }
                if count == 0 { break }
                total += count
            }
            return total
        }
        if failed != 0 { throw failure("read", path, errno: failed) }
        return buffer
    }

    /// Writes every byte of `bytes` at `offset`.
    static func write(_ fd: CInt, _ bytes: ByteBuffer, at offset: Int, path: String) throws(TelexError) {
        var failed: Int32 = 0
        bytes.withUnsafeReadableBytes { raw in
            var done = 0
            while done < raw.count {
                let count = pwrite(fd, raw.baseAddress! + done, raw.count - done, off_t(offset + done))
                if count < 0 {
                    if errno == EINTR { continue }
                    failed = errno
                    return
                }
                done += count
            }
        }
        if failed != 0 { throw failure("write", path, errno: failed) }
    }

    static func sync(_ fd: CInt, path: String) throws(TelexError) {
        guard fdatasync(fd) == 0 else { throw failure("fdatasync", path) }
    }

    /// The whole file at `path`.
    static func readFile(_ path: String) throws(TelexError) -> ByteBuffer {
        let fd = try open(path, flags: O_RDONLY)
        defer { close(fd) }
        return try read(fd, at: 0, length: size(fd, path: path), path: path)
    }

    /// Writes `bytes` as the whole file `path`, fdatasynced (not renamed: the caller decides the commit point).
    static func writeFile(_ path: String, _ bytes: ByteBuffer) throws(TelexError) {
        let fd = try open(path, flags: O_WRONLY | O_CREAT | O_TRUNC)
        defer { close(fd) }
        try write(fd, bytes, at: 0, path: path)
        try sync(fd, path: path)
    }

    static func rename(_ from: String, to: String) throws(TelexError) {
        guard Glibc.rename(from, to) == 0 else { throw failure("rename to \(to)", from) }
    }

    /// Removes `path`; no error when it is already gone.
    static func unlink(_ path: String) throws(TelexError) {
        guard Glibc.unlink(path) == 0 || errno == ENOENT else { throw failure("unlink", path) }
    }

    static func syncDirectory(_ path: String) throws(TelexError) {
        let fd = try open(path, flags: O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw failure("fsync directory", path) }
    }

    /// Creates `path` and its missing parents.
    static func makeDirectory(_ path: String) throws(TelexError) {
        var partial = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            partial += "/" + component
            guard mkdir(partial, 0o755) == 0 || errno == EEXIST else { throw failure("mkdir", partial) }
        }
    }

    /// The names in directory `path` (without `.` and `..`); empty when it does not exist.
    static func listDirectory(_ path: String) throws(TelexError) -> [String] {
        guard let directory = opendir(path) else {
            if errno == ENOENT { return [] }
            throw failure("opendir", path)
        }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Removes every file directly in `path` and in its subdirectories (one level deep, as the cache lays them out).
    static func emptyDirectory(_ path: String) throws(TelexError) {
        for name in try listDirectory(path) {
            let child = path + "/" + name
            var info = stat()
            if lstat(child, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR {
                for inner in try listDirectory(child) { try unlink(child + "/" + inner) }
                guard rmdir(child) == 0 || errno == ENOENT else { throw failure("rmdir", child) }
            } else {
                try unlink(child)
            }
        }
    }

    /// Runs blocking file work on NIO's thread pool, so an awaiting task never holds one of the few threads of
    /// Swift's cooperative pool (2 on a 2-core machine) while a disk is slow.
    static func offload<T: Sendable>(_ body: @escaping @Sendable () throws(TelexError) -> T) async throws(TelexError) -> T {
        do {
            return try await NIOThreadPool.singleton.runIfActive { () throws -> T in try body() }
        } catch let error as TelexError {
            throw error
        } catch {
            throw TelexError(.storageFailure, "file I/O thread pool unavailable: \(error)")
        }
    }

    static func nowMilliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }
}
