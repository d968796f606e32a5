import Glibc
import NIOCore
import Synchronization
import TelexProtocol

/// An exclusive `flock` on `DATA/.lock`, so that only one broker at a time opens a data directory. The file holds
/// the holder's pid. The lock lasts until `release()` or until the holder exits; a crashed holder leaves no lock.
final class DataDirectoryLock: Sendable {
    let path: String
    private let descriptor: Mutex<CInt?>

    /// Takes the lock, or throws naming the process that holds it. Blocking (opens and writes a file).
    init(directory: String) throws(TelexError) {
        path = directory + "/.lock"
        let fd = try FileIO.open(path, flags: O_RDWR | O_CREAT)
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            defer { close(fd) }
            guard code == EWOULDBLOCK else { throw FileIO.failure("flock", path, errno: code) }
            var contents = ByteBuffer()
            let holder = (try? FileIO.read(fd, at: 0, length: 32, into: &contents, path: path)).flatMap { _ in
                Int(String(buffer: contents).filter(\.isNumber))
            }
            throw TelexError(.storageFailure,
                "data directory \(directory) is in use by another telexd (\(holder.map { "pid \($0)" } ?? "pid unknown")); stop it or use another --data-dir")
        }
        descriptor = Mutex(fd)
        do {
            try FileIO.truncate(fd, to: 0, path: path)
            try FileIO.write(fd, parts: [ByteBuffer(string: "\(getpid())\n")], at: 0, path: path)
        } catch {
            release()
            throw error
        }
    }

    /// Gives the lock up; later calls do nothing.
    func release() {
        if let fd = descriptor.withLock({ $0.take() }) { close(fd) }
    }

    deinit { release() }
}
