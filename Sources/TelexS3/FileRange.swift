import Crypto
import Foundation
import Glibc
import NIOCore
import NIOPosix

/// An open file descriptor closed when the last reference goes: an upload's body stream and a read still in
/// flight on the thread pool can both hold it, so it is never closed under a `pread`.
final class FileDescriptorBox: Sendable {
    let fd: Int32
    let path: String

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    deinit { close(fd) }

    /// Opens `path` read-only on the thread pool (open can block).
    static func open(_ path: String) async throws -> FileDescriptorBox {
        try await NIOThreadPool.singleton.runIfActive {
            let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw FileRangeError(path: path, detail: "cannot open: \(errnoText())") }
            return FileDescriptorBox(fd: fd, path: path)
        }
    }

    /// Reads exactly `count` bytes at `offset` (blocking: call it on the thread pool).
    func readExactly(offset: Int, count: Int, into buffer: inout ByteBuffer) throws {
        var done = 0
        while done < count {
            // pread's -1 must not reach writeWithUnsafeMutableBytes (a negative count traps): keep it aside.
            var n = 0
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count - done) { pointer in
                n = pread(fd, pointer.baseAddress, count - done, off_t(offset + done))
                return max(n, 0)
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw FileRangeError(path: path, detail: "read at offset \(offset + done) failed: \(errnoText())")
            }
            if n == 0 {
                throw FileRangeError(
                    path: path,
                    detail: "ends at offset \(offset + done), before the \(count) bytes at offset \(offset) were read"
                        + " (did the file shrink?)"
                )
            }
            done += n
        }
    }
}

/// A local file could not be read as asked (missing, unreadable, shorter than the range).
struct FileRangeError: Error, CustomStringConvertible {
    var path: String
    var detail: String
    var description: String { "file \(path) \(detail)" }
}

func errnoText() -> String { String(cString: strerror(errno)) }

/// The SHA-256 and MD5 of a file range, read in chunks on the thread pool (never the whole range in memory).
func hashFileRange(_ file: FileDescriptorBox, offset: Int, length: Int, chunkSize: Int) async throws -> (
    sha256: String, md5: Data
) {
    try await NIOThreadPool.singleton.runIfActive {
        var sha = SHA256()
        var md5 = Insecure.MD5()
        var buffer = ByteBuffer()
        buffer.reserveCapacity(min(chunkSize, max(length, 1)))
        var position = 0
        while position < length {
            let count = min(chunkSize, length - position)
            buffer.clear()
            try file.readExactly(offset: offset + position, count: count, into: &buffer)
            buffer.withUnsafeReadableBytes { bytes in
                sha.update(bufferPointer: bytes)
                md5.update(bufferPointer: bytes)
            }
            position += count
        }
        return (SigV4Signer.hex(sha.finalize()), Data(md5.finalize()))
    }
}

/// A file range as an async sequence of chunks, each read on the thread pool when asked for: an upload body.
struct FileRangeChunks: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let file: FileDescriptorBox
    let offset: Int
    let length: Int
    let chunkSize: Int

    struct AsyncIterator: AsyncIteratorProtocol {
        let chunks: FileRangeChunks
        var position = 0

        mutating func next() async throws -> ByteBuffer? {
            guard position < chunks.length else { return nil }
            let count = Swift.min(chunks.chunkSize, chunks.length - position)
            let start = chunks.offset + position
            let file = chunks.file
            let chunk = try await NIOThreadPool.singleton.runIfActive {
                var buffer = ByteBuffer()
                try file.readExactly(offset: start, count: count, into: &buffer)
                return buffer
            }
            position += count
            return chunk
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(chunks: self) }
}

/// Digests of in-memory bytes, as the client sends them.
enum Digest {
    static func sha256Hex(_ bytes: ByteBuffer) -> String {
        bytes.withUnsafeReadableBytes { SigV4Signer.hex(SHA256.hash(data: $0)) }
    }

    static func md5(_ bytes: ByteBuffer) -> Data {
        Data(bytes.withUnsafeReadableBytes { Insecure.MD5.hash(data: $0) })
    }
}
