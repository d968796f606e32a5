#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Logging
import NIOCore
import Synchronization
import TelexProtocol

/// What an append did: the offsets the batch got (or, for a retried duplicate, had already got).
public struct AppendResult: Sendable, Equatable {
    public var baseOffset: Int64
    public var recordCount: UInt32
    /// True when the batch was a retry of one already stored; nothing was written.
    public var duplicate: Bool
    public var nextOffset: Int64 { baseOffset + Int64(recordCount) }
}

/// A run of whole stored batches in one segment file, ready to send as they are.
///
/// A slice holds its segment file open (a lease on the store's file descriptor cache) until the last copy of it
/// is dropped, so it stays readable even after retention deleted the file: keep slices only while sending them.
public struct LogSlice: Sendable {
    let log: FileLease
    /// Byte position in the segment file.
    public let position: Int
    public let length: Int
    /// Base offset of the first batch; it may be below the offset asked for.
    public let firstOffset: Int64
    /// The offset after the last record in the slice.
    public let nextOffset: Int64
    public let batchCount: Int

    /// Reads the slice's bytes into memory.
    public func readBytes() throws(TelexError) -> ByteBuffer {
        var buffer = ByteBuffer()
        let path = log.file.path
        let count = try log.withDescriptor { fd throws(TelexError) in
            try FileIO.read(fd, at: position, length: length, into: &buffer, path: path)
        }
        guard count == length else {
            throw TelexError(.storageFailure, "\(path): short read at \(position) (\(count) of \(length) bytes)")
        }
        return buffer
    }

    /// A new handle on the segment file, owned by the caller (close it once the slice is sent), for a `FileRegion`.
    ///
    /// The handle is a `dup` of the slice's descriptor: it stays valid after the slice is dropped and the cache
    /// closes its own descriptor, and it is not counted in the store's open-file budget (Protocol/STORAGE.md §11.3).
    public func makeFileHandle() throws(TelexError) -> NIOFileHandle {
        let duplicate = log.withDescriptor { dup($0) }
        guard duplicate >= 0 else { throw FileIO.failure("dup", log.file.path) }
        return NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: duplicate)
    }
}
