#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOPosix
import TelexProtocol
import TelexStorage

/// The archive's file helpers beyond TelexStorage's `FileIO` (whose calls, failures and seam the archive shares):
/// whole-file reads and writes, a listing where a missing directory is empty, emptying the cache. Blocking: the
/// archiver and the cache run them through `offload` (NIO's thread pool), restore and tests in their own task;
/// never on an event loop.
enum ArchiveFiles {
    /// Up to `length` bytes at `offset` (fewer only at end of file), in a new buffer.
    static func read(_ fd: CInt, at offset: Int, length: Int, path: String) throws(TelexError) -> ByteBuffer {
        var buffer = ByteBuffer()
        _ = try FileIO.read(fd, at: offset, length: length, into: &buffer, path: path)
        return buffer
    }

    /// Writes every byte of `bytes` at `offset`.
    static func write(_ fd: CInt, _ bytes: ByteBuffer, at offset: Int, path: String) throws(TelexError) {
        try FileIO.write(fd, parts: [bytes], at: offset, path: path)
    }

    /// The whole file at `path`.
    static func readFile(_ path: String) throws(TelexError) -> ByteBuffer {
        let fd = try FileIO.open(path, flags: O_RDONLY)
        defer { FileIO.close(fd, path: path) }
        return try read(fd, at: 0, length: FileIO.size(fd, path: path), path: path)
    }

    /// Writes `bytes` as the whole file `path`, fdatasynced (not renamed: the caller decides the commit point).
    static func writeFile(_ path: String, _ bytes: ByteBuffer) throws(TelexError) {
        let fd = try FileIO.open(path, flags: O_WRONLY | O_CREAT | O_TRUNC)
        defer { FileIO.close(fd, path: path) }
        try write(fd, bytes, at: 0, path: path)
        try FileIO.sync(fd, path: path)
    }

    /// The names in directory `path` (without `.` and `..`); empty when it does not exist.
    static func listDirectory(_ path: String) throws(TelexError) -> [String] {
        FileIO.exists(path) ? try FileIO.listDirectory(path) : []
    }

    /// Removes every file directly in `path` and in its subdirectories (one level deep, as the cache lays them out).
    static func emptyDirectory(_ path: String) throws(TelexError) {
        for name in try listDirectory(path) {
            let child = path + "/" + name
            var info = stat()
            if lstat(child, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR {
                for inner in try listDirectory(child) { try FileIO.remove(child + "/" + inner) }
                try FileIO.removeDirectory(child)
            } else {
                try FileIO.remove(child)
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
}
