#if !os(Linux)
#error("TelexStorage is Linux-only: it uses fdatasync, O_DIRECTORY and Glibc")
#endif
import Glibc
import NIOCore
import TelexProtocol

/// Thin POSIX wrappers that turn failures into `storageFailure` errors naming the file.
enum FileIO {
    static func failure(_ operation: String, _ path: String, errno code: Int32 = errno) -> TelexError {
        let advice = code == EMFILE || code == ENFILE
            ? " (raise the open-file limit, ulimit -n, or lower --max-open-files/--max-connections)" : ""
        return TelexError(.storageFailure, "\(operation) \(path): \(String(cString: strerror(code)))\(advice)")
    }

    /// Opens a directory for `fsync` or listing.
    static func openDirectory(_ path: String) throws(TelexError) -> CInt {
        try open(path, flags: O_RDONLY | O_DIRECTORY)
    }

    /// fsyncs `fd`, the open directory at `path`.
    static func syncDirectory(_ fd: CInt, path: String) throws(TelexError) {
        guard fsync(fd) == 0 else { throw failure("fsync directory", path) }
    }

    static func open(_ path: String, flags: Int32, mode: mode_t = 0o644) throws(TelexError) -> CInt {
        let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
        guard fd >= 0 else { throw failure("open", path) }
        return fd
    }

    static func size(_ fd: CInt, path: String) throws(TelexError) -> Int {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw failure("fstat", path) }
        return Int(info.st_size)
    }

    /// Reads exactly `length` bytes at `offset`, or fewer only at end of file.
    static func read(_ fd: CInt, at offset: Int, length: Int, into buffer: inout ByteBuffer, path: String) throws(TelexError) -> Int {
        var total = 0
        var failed: Int32 = 0
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { bytes in
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
        return total
    }

    /// Writes every byte of `parts` at `offset`, in order.
    static func write(_ fd: CInt, parts: [ByteBuffer], at offset: Int, path: String) throws(TelexError) {
        var position = offset
        for part in parts {
            let start = position
            try writeFully(part, path: path) { pwrite(fd, $0, $1, off_t(start + $2)) }
            position += part.readableBytes
        }
    }

    /// Writes every byte of `buffer` at the file's current position.
    static func append(_ fd: CInt, _ buffer: ByteBuffer, path: String) throws(TelexError) {
        try writeFully(buffer, path: path) { pointer, count, _ in Glibc.write(fd, pointer, count) }
    }

    /// Calls `write(pointer, count, alreadyWritten)` until every byte is written, retrying on EINTR.
    private static func writeFully(
        _ buffer: ByteBuffer, path: String, _ write: (UnsafeRawPointer, Int, Int) -> Int
    ) throws(TelexError) {
        var failed: Int32 = 0
        buffer.withUnsafeReadableBytes { bytes in
            var done = 0
            while done < bytes.count {
                let count = write(bytes.baseAddress! + done, bytes.count - done, done)
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

    static func truncate(_ fd: CInt, to length: Int, path: String) throws(TelexError) {
        guard ftruncate(fd, off_t(length)) == 0 else { throw failure("truncate", path) }
    }

    static func sync(_ fd: CInt, path: String) throws(TelexError) {
        guard fdatasync(fd) == 0 else { throw failure("fdatasync", path) }
    }

    /// fsyncs a directory so that creations, renames and deletions in it survive a crash.
    static func syncDirectory(_ path: String) throws(TelexError) {
        let fd = try openDirectory(path)
        defer { close(fd) }
        try syncDirectory(fd, path: path)
    }

    static func makeDirectory(_ path: String) throws(TelexError) {
        var partial = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            partial += "/" + component
            if mkdir(partial, 0o755) != 0, errno != EEXIST { throw failure("mkdir", partial) }
        }
    }

    static func listDirectory(_ path: String) throws(TelexError) -> [String] {
        guard let directory = opendir(path) else { throw failure("opendir", path) }
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

    static func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    static func remove(_ path: String) throws(TelexError) {
        guard unlink(path) == 0 || errno == ENOENT else { throw failure("unlink", path) }
    }

    static func removeDirectory(_ path: String) throws(TelexError) {
        guard rmdir(path) == 0 || errno == ENOENT else { throw failure("rmdir", path) }
    }

    /// Bytes of the regular files under `path`, recursively; what cannot be read counts 0.
    static func treeSize(_ path: String) -> Int64 {
        guard isDirectory(path) else {
            var info = stat()
            return lstat(path, &info) == 0 ? Int64(info.st_size) : 0
        }
        guard let names = try? listDirectory(path) else { return 0 }
        return names.reduce(0) { $0 + treeSize(path + "/" + $1) }
    }

    static func rename(_ from: String, _ to: String) throws(TelexError) {
        guard Glibc.rename(from, to) == 0 else { throw failure("rename \(from) to", to) }
    }

    /// Replaces the file at `path` in `directory` with `contents` so that a crash leaves the old or the new
    /// file, never a mix: `PATH.tmp`, fdatasync, rename, fsync of the directory.
    static func replaceAtomically(_ path: String, in directory: String, with contents: ByteBuffer) throws(TelexError) {
        let temporary = path + ".tmp"
        let fd = try open(temporary, flags: O_WRONLY | O_CREAT | O_TRUNC)
        do throws(TelexError) {
            try write(fd, parts: [contents], at: 0, path: temporary)
            try sync(fd, path: temporary)
        } catch {
            close(fd)
            throw error
        }
        close(fd)
        try rename(temporary, path)
        try syncDirectory(directory)
    }

    static func nowMilliseconds() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
    }
}
