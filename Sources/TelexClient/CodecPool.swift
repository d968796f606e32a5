import NIOConcurrencyHelpers
import NIOCore
import TelexProtocol

/// zlib streams reused across calls: creating one costs a few hundred KB of zeroed memory, so publishing and
/// replay keep a few per client instead of one per batch.
///
/// `@unchecked Sendable` because zlib streams are not thread-safe and so cannot be `Sendable` themselves: the
/// discipline is that a stream is only ever in the pool (guarded by `lock`) or checked out by exactly one task,
/// which uses it synchronously and returns it. `withCompressor` / `withInflater` are the only ways to
/// check one out, so a stream never escapes its borrower.
final class CodecPool: @unchecked Sendable {
    private let lock = NIOLock()
    private var compressors: [ZlibCompressor] = []
    private var inflaters: [Inflater] = []
    private let compressionLevel: Int32
    private let capacity: Int

    init(compressionLevel: Int32, capacity: Int = 2 * System.coreCount) {
        self.compressionLevel = compressionLevel
        self.capacity = capacity
    }

    func withCompressor<T, E: Error>(_ body: (ZlibCompressor) throws(E) -> T) throws(E) -> T {
        let compressor = lock.withLock { compressors.popLast() } ?? ZlibCompressor(level: compressionLevel)
        defer { lock.withLock { if compressors.count < capacity { compressors.append(compressor) } } }
        return try body(compressor)
    }

    func withInflater<T, E: Error>(_ body: (Inflater) throws(E) -> T) throws(E) -> T {
        let inflater = lock.withLock { inflaters.popLast() } ?? Inflater()
        defer { lock.withLock { if inflaters.count < capacity { inflaters.append(inflater) } } }
        return try body(inflater)
    }
}

/// A zlib inflate stream with the buffers it inflates into, reused from one delivery to the next so replay
/// does not fault in fresh pages per batch. Owned by the pool or by one borrower at a time.
final class Inflater {
    let decompressor = ZlibDecompressor()
    var scratch: [ByteBuffer] = []
}
