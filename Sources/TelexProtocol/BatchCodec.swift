import CLibdeflate
import NIOCore

/// Which library writes and reads the zlib (RFC 1950) streams of codec 1. Both produce streams the other reads;
/// the bytes differ, the records do not.
public enum DeflateImplementation: String, Sendable, CaseIterable {
    /// libdeflate: whole-buffer, about twice zlib's compression speed and three times its inflate speed at level 1.
    case libdeflate
    /// libz, the reference implementation of the spec.
    case zlib

    /// Highest level the implementation has; `BatchCompressor` clamps levels into `0...maxLevel`.
    public var maxLevel: Int32 {
        switch self {
        case .libdeflate: 12
        case .zlib: 9
        }
    }
}

/// Compresses record batches into zlib (RFC 1950) streams.
/// Not thread-safe: one per thread or task (pooled like today's ZlibCompressor).
public final class BatchCompressor {
    /// The level in use: the requested one clamped into `0...implementation.maxLevel`.
    public let level: Int32
    public let implementation: DeflateImplementation
    private let engine: Engine

    private enum Engine {
        case libdeflate(OpaquePointer)
        case zlib(ZlibCompressor)
    }

    /// `level` 0 stores, 1 is fastest, 6 is zlib's default, 9 (zlib) or 12 (libdeflate) is smallest; a negative
    /// level means 6 (zlib's `Z_DEFAULT_COMPRESSION` is -1), and levels above `implementation.maxLevel` are clamped
    /// to it.
    public init(level: Int32 = 1, implementation: DeflateImplementation = .libdeflate) {
        let level = level < 0 ? 6 : min(level, implementation.maxLevel)
        self.level = level
        self.implementation = implementation
        switch implementation {
        case .libdeflate:
            // Fails only when out of memory (the level is in range).
            guard let compressor = libdeflate_alloc_compressor(level) else {
                preconditionFailure("libdeflate_alloc_compressor(\(level)) failed")
            }
            engine = .libdeflate(compressor)
        case .zlib:
            engine = .zlib(ZlibCompressor(level: level))
        }
    }

    deinit {
        if case .libdeflate(let compressor) = engine { libdeflate_free_compressor(compressor) }
    }

    /// Compresses the readable bytes of `input`, appending one zlib stream to `output`.
    public func compress(_ input: ByteBuffer, into output: inout ByteBuffer) {
        switch engine {
        case .zlib(let compressor):
            compressor.compress(input, into: &output)
        case .libdeflate(let compressor):
            let bound = libdeflate_zlib_compress_bound(compressor, input.readableBytes)
            _ = input.withUnsafeReadableBytes { inputBytes in
                output.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { outputBytes in
                    let written = libdeflate_zlib_compress(
                        compressor, inputBytes.baseAddress, inputBytes.count, outputBytes.baseAddress, bound)
                    precondition(written > 0, "libdeflate_zlib_compress into its own bound of \(bound) bytes failed")
                    return written
                }
            }
        }
    }
}

/// Inflates record batches, never producing more than the size their header declares.
/// Not thread-safe: one per thread or task.
public final class BatchDecompressor {
    public let implementation: DeflateImplementation
    private let engine: Engine
    /// Gives the verdict when libdeflate fails (see `inflate`); made on the first failure.
    private lazy var referee = ZlibDecompressor()

    private enum Engine {
        case libdeflate(OpaquePointer)
        case zlib(ZlibDecompressor)
    }

    public init(implementation: DeflateImplementation = .libdeflate) {
        self.implementation = implementation
        switch implementation {
        case .libdeflate:
            guard let decompressor = libdeflate_alloc_decompressor() else {
                preconditionFailure("libdeflate_alloc_decompressor failed")
            }
            engine = .libdeflate(decompressor)
        case .zlib:
            engine = .zlib(ZlibDecompressor())
        }
    }

    deinit {
        if case .libdeflate(let decompressor) = engine { libdeflate_free_decompressor(decompressor) }
    }

    /// Inflates `input`, which must be exactly one zlib stream expanding to exactly `expectedLength` bytes;
    /// appends them to `output`. On error `output` is as it was.
    ///
    /// At most `expectedLength + 1` bytes are ever allocated, so a decompression bomb fails (`batchTooLarge`)
    /// before it costs memory. Corrupt, truncated and short streams and bytes after the stream are `invalidBatch`.
    ///
    /// libdeflate is permissive where zlib is strict about symbols RFC 1951 reserves: a stream using literal/length
    /// symbols 286-287, distance codes 30-31 or a dynamic header declaring more than 286 / 30 codes inflates here
    /// and fails under `.zlib`. No compressor writes such streams; PROTOCOL.md §6.5 calls them invalid, lets readers
    /// accept them, and `telexd verify` (which inflates with `.zlib`) reports them.
    public func decompress(
        _ input: ByteBuffer, expectedLength: Int, into output: inout ByteBuffer, context: @autoclosure () -> String
    ) throws(TelexError) {
        // Callers pass a header's u32; a public API must still not hand libdeflate a size_t wrapped from a negative.
        guard expectedLength >= 0, expectedLength < Int(UInt32.max) else {
            throw TelexError(.invalidBatch, "\(context()): cannot inflate to \(expectedLength) bytes")
        }
        switch engine {
        case .zlib(let decompressor):
            try decompressor.decompress(input, expectedLength: expectedLength, into: &output, context: context())
        case .libdeflate(let decompressor):
            try inflate(decompressor, input, expectedLength: expectedLength, into: &output, context: context())
        }
    }

    private func inflate(
        _ decompressor: OpaquePointer, _ input: ByteBuffer, expectedLength: Int, into output: inout ByteBuffer,
        context: @autoclosure () -> String
    ) throws(TelexError) {
        // One spare byte of room detects a stream that expands past its declared length.
        let room = expectedLength + 1
        var result = LIBDEFLATE_SUCCESS
        var consumed = 0
        var produced = 0
        input.withUnsafeReadableBytes { inputBytes in
            _ = output.writeWithUnsafeMutableBytes(minimumWritableBytes: room) { outputBytes in
                result = libdeflate_zlib_decompress_ex(
                    decompressor, inputBytes.baseAddress, inputBytes.count, outputBytes.baseAddress, room,
                    &consumed, &produced)
                return 0  // committed below, once the stream is known to be whole and of the declared size
            }
        }
        guard result == LIBDEFLATE_SUCCESS else {
            // libdeflate reads on after the room is full and pads a cut-off stream with zero bits, so its failure
            // does not tell "inflates past the declared size" from "corrupt" or "ends early" the way zlib does
            // (zlib stops at the first byte past the room). Failures are rare: zlib, the reference, decides them,
            // so both implementations give the same code and message for every stream both reject.
            try referee.decompress(input, expectedLength: expectedLength, into: &output, context: context())
            output.moveWriterIndex(to: output.writerIndex - expectedLength)
            throw TelexError(.invalidBatch,
                "\(context()): libdeflate rejects this zlib stream (\(result == LIBDEFLATE_BAD_DATA ? "bad data" : "no room")) but zlib reads it")
        }
        if produced > expectedLength { throw ZlibDecompressor.inflatesPast(expectedLength, context: context()) }
        let trailing = input.readableBytes - consumed
        guard produced == expectedLength, trailing == 0 else {
            throw ZlibDecompressor.mismatch(
                produced: produced, expected: expectedLength, trailing: trailing, context: context())
        }
        output.moveWriterIndex(forwardBy: produced)
    }
}
