#if !os(Linux)
#error("TelexStorage is Linux-only: it uses fdatasync, O_DIRECTORY and Glibc")
#endif
import Glibc
import NIOCore
import TelexProtocol

/// Thin POSIX wrappers that turn failures into `storageFailure` errors naming the file.
///
/// Every call that touches a file goes to the `FileSystem` installed for its path (`FileSystemSeam`: the
/// kernel's, unless a test replaced it for a directory tree), so tests can inject faults or record writes.
/// EINTR is retried and short reads and writes are continued here, at every call site. Public for TelexArchive, whose
/// archive state, cache and restore files go through the same calls (and the same seam).
public enum FileIO {
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
        let result = retryingInterrupts { FileSystemSeam.fileSystem(for: path).syncDirectory(fd, path: path) }
        guard result >= 0 else { throw failure("fsync directory", path, errno: Int32(-result)) }
    }

    public static func open(_ path: String, flags: Int32, mode: mode_t = 0o644) throws(TelexError) -> CInt {
        let result = retryingInterrupts {
            FileSystemSeam.fileSystem(for: path).open(path, flags: flags | O_CLOEXEC, mode: mode)
        }
        guard result >= 0 else { throw failure("open", path, errno: Int32(-result)) }
        return CInt(result)
    }

    /// Closes `fd`, opened on `path`; returns the errno of a failed close (0 when it succeeded). Never retried
    /// on EINTR: Linux has released the descriptor whatever the result, and a retry could close another file's.
    @discardableResult
    public static func close(_ fd: CInt, path: String) -> Int32 {
        let result = FileSystemSeam.fileSystem(for: path).close(fd, path: path)
        return result >= 0 ? 0 : Int32(-result)
    }

    /// Calls `call` again while it fails with EINTR (interrupted by a signal before doing anything: not an I/O
    /// error, so even an interrupted fsync reports no lost writeback and is simply made again).
    private static func retryingInterrupts(_ call: () -> Int) -> Int {
        while true {
            let result = call()
            if result != -Int(EINTR) { return result }
        }
    }

    public static func size(_ fd: CInt, path: String) throws(TelexError) -> Int {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw failure("fstat", path) }
        return Int(info.st_size)
    }

    /// Reads exactly `length` bytes at `offset`, or fewer only at end of file.
    public static func read(_ fd: CInt, at offset: Int, length: Int, into buffer: inout ByteBuffer, path: String) throws(TelexError) -> Int {
        let fileSystem = FileSystemSeam.fileSystem(for: path)
        var total = 0
        var failed: Int32 = 0
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { bytes in
            while total < length {
                let count = fileSystem.read(fd, into: bytes.baseAddress! + total, count: length - total,
                                            at: offset + total, path: path)
                if count < 0 {
                    if count == -Int(EINTR) { continue }
                    failed = Int32(-count)
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

    /// Writes every byte of `parts` at `offset`, in order, whatever the number of short writes and EINTRs.
    public static func write(_ fd: CInt, parts: [ByteBuffer], at offset: Int, path: String) throws(TelexError) {
        let fileSystem = FileSystemSeam.fileSystem(for: path)
        var position = offset
        var failed: Int32 = 0
        for part in parts {
            part.withUnsafeReadableBytes { bytes in
                var done = 0
                while done < bytes.count {
                    let count = fileSystem.write(fd, from: bytes.baseAddress! + done, count: bytes.count - done,
                                                 at: position + done, path: path)
                    if count < 0 {
                        if count == -Int(EINTR) { continue }
                        failed = Int32(-count)
                        return
                    }
                    done += count
                }
            }
            if failed != 0 { throw failure("write", path, errno: failed) }
            position += part.readableBytes
        }
    }

    static func truncate(_ fd: CInt, to length: Int, path: String) throws(TelexError) {
        let result = retryingInterrupts { FileSystemSeam.fileSystem(for: path).truncate(fd, to: length, path: path) }
        guard result >= 0 else { throw failure("truncate", path, errno: Int32(-result)) }
    }

    /// fdatasyncs `fd`, the file at `path`. A failure is final: the caller must not retry it and trust the
    /// retry (the kernel may have dropped the dirty pages it could not write, STORAGE.md §13).
    public static func sync(_ fd: CInt, path: String) throws(TelexError) {
        let result = retryingInterrupts { FileSystemSeam.fileSystem(for: path).sync(fd, path: path) }
        guard result >= 0 else { throw failure("fdatasync", path, errno: Int32(-result)) }
    }

    /// fsyncs a directory so that creations, renames and deletions in it survive a crash.
    public static func syncDirectory(_ path: String) throws(TelexError) {
        let fd = try openDirectory(path)
        defer { close(fd, path: path) }
        try syncDirectory(fd, path: path)
    }

    /// Creates `path` and its missing parents; each directory it creates is made durable in its parent (the
    /// parent is fsynced), so a crash cannot take away a directory whose files were fsynced.
    public static func makeDirectory(_ path: String) throws(TelexError) {
        var partial = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            let parent = partial.isEmpty ? "/" : partial
            partial += "/" + component
            let fileSystem = FileSystemSeam.fileSystem(for: partial)
            let result = retryingInterrupts { fileSystem.makeDirectory(partial, mode: 0o755) }
            if result == -Int(EEXIST) { continue }
            guard result >= 0 else { throw failure("mkdir", partial, errno: Int32(-result)) }
            try syncDirectory(parent)
        }
    }

    public static func listDirectory(_ path: String) throws(TelexError) -> [String] {
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

    public static func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    public static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    public static func remove(_ path: String) throws(TelexError) {
        let result = retryingInterrupts { FileSystemSeam.fileSystem(for: path).unlink(path) }
        guard result >= 0 || result == -Int(ENOENT) else { throw failure("unlink", path, errno: Int32(-result)) }
    }

    public static func removeDirectory(_ path: String) throws(TelexError) {
        let result = retryingInterrupts { FileSystemSeam.fileSystem(for: path).removeDirectory(path) }
        guard result >= 0 || result == -Int(ENOENT) else { throw failure("rmdir", path, errno: Int32(-result)) }
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

    public static func rename(_ from: String, _ to: String) throws(TelexError) {
        let result = retryingInterrupts { FileSystemSeam.fileSystem(for: to).rename(from, to: to) }
        guard result >= 0 else { throw failure("rename \(from) to", to, errno: Int32(-result)) }
    }

    /// Whether `error` reports a full file system (ENOSPC), from a write, truncate, open or fsync.
    static func isOutOfSpace(_ error: TelexError) -> Bool {
        error.message.hasSuffix(": " + String(cString: strerror(ENOSPC)))
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
            close(fd, path: temporary)
            // Give back the space (the disk may be full); the old file is untouched.
            try? remove(temporary)
            throw error
        }
        close(fd, path: temporary)
        do throws(TelexError) {
            try rename(temporary, path)
        } catch {
            try? remove(temporary)
            throw error
        }
        try syncDirectory(directory)
    }

    public static func nowMilliseconds() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
    }
}
