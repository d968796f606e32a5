import NIOConcurrencyHelpers
import NIOCore
import TelexProtocol

/// Compressors and inflaters reused across calls: creating one costs from tens (libdeflate) to hundreds (zlib)
/// of KB, so publishing and replay keep a few per client instead of one per batch.
///
/// `@unchecked Sendable` because codec state is not thread-safe and so cannot be `Sendable` itself: the
/// discipline is that a codec is only ever in the pool (guarded by `lock`) or checked out by exactly one task,
/// which uses it synchronously and returns it. `withCompressor` / `withInflater` are the only ways to
/// check one out, so a codec never escapes its borrower.
final class CodecPool: @unchecked Sendable {
    private let lock = NIOLock()
    private var compressors: [BatchCompressor] = []
    private var inflaters: [Inflater] = []
    private let compressionLevel: Int32
    private let implementation: DeflateImplementation
    private let capacity: Int

    init(
        compressionLevel: Int32, implementation: DeflateImplementation = .libdeflate,
        capacity: Int = 2 * System.coreCount
    ) {
        self.compressionLevel = compressionLevel
        self.implementation = implementation
        self.capacity = capacity
    }

    func withCompressor<T, E: Error>(_ body: (BatchCompressor) throws(E) -> T) throws(E) -> T {
        let compressor = lock.withLock { compressors.popLast() }
            ?? BatchCompressor(level: compressionLevel, implementation: implementation)
        defer { lock.withLock { if compressors.count < capacity { compressors.append(compressor) } } }
        return try body(compressor)
    }

    func withInflater<T, E: Error>(_ body: (Inflater) throws(E) -> T) throws(E) -> T {
        let inflater = lock.withLock { inflaters.popLast() } ?? Inflater(implementation: implementation)
        defer { lock.withLock { if inflaters.count < capacity { inflaters.append(inflater) } } }
        return try body(inflater)
    }
}

/// A decompressor with the buffers it inflates into, reused from one delivery to the next so replay does not
/// fault in fresh pages per batch. Owned by the pool or by one borrower at a time.
final class Inflater {
    let decompressor: BatchDecompressor
    var scratch: [ByteBuffer] = []

    init(implementation: DeflateImplementation) {
        decompressor = BatchDecompressor(implementation: implementation)
    }
}
