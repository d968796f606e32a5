import CZlib
import NIOCore

/// CRC-32 as zlib computes it (CRC-32/ISO-HDLC, polynomial 0x04C11DB7 reflected, init and xorout 0xFFFFFFFF).
public enum CRC32 {
    /// The CRC-32 of the readable bytes of `buffer`.
    @inlinable
    public static func checksum(_ buffer: ByteBuffer) -> UInt32 {
        buffer.withUnsafeReadableBytes { bytes in
            guard let base = bytes.baseAddress else { return UInt32(crc32(0, nil, 0)) }
            return UInt32(crc32(0, base.assumingMemoryBound(to: Bytef.self), uInt(bytes.count)))
        }
    }

    /// The CRC-32 of `bytes`.
    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBufferPointer { pointer in
            UInt32(crc32(0, pointer.baseAddress, uInt(pointer.count)))
        }
    }
}

/// A reusable zlib (RFC 1950) compressor. Not thread-safe: use one per thread or task.
public final class ZlibCompressor {
    private var stream = z_stream()
    public let level: Int32

    /// `level` is zlib's 0 (store) to 9 (smallest); 1 is fastest.
    public init(level: Int32 = 1) {
        self.level = level
        let status = deflateInit_(&stream, level, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
        precondition(status == Z_OK, "deflateInit failed: \(status)")
    }

    deinit { deflateEnd(&stream) }

    /// Compresses the readable bytes of `input`, appending the zlib stream to `output`.
    public func compress(_ input: ByteBuffer, into output: inout ByteBuffer) {
        deflateReset(&stream)
        let bound = Int(deflateBound(&stream, uLong(input.readableBytes)))
        output.reserveCapacity(minimumWritableBytes: bound)
        input.withUnsafeReadableBytes { inputBytes in
            let written = output.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { outputBytes in
                stream.next_in = UnsafeMutablePointer(
                    mutating: inputBytes.baseAddress?.assumingMemoryBound(to: Bytef.self))
                stream.avail_in = uInt(inputBytes.count)
                stream.next_out = outputBytes.baseAddress?.assumingMemoryBound(to: Bytef.self)
                stream.avail_out = uInt(outputBytes.count)
                let status = deflate(&stream, Z_FINISH)
                precondition(status == Z_STREAM_END, "deflate with a deflateBound-sized output failed: \(status)")
                return outputBytes.count - Int(stream.avail_out)
            }
            _ = written
        }
    }
}

/// A reusable zlib inflater that never produces more than the caller's declared size.
public final class ZlibDecompressor {
    private var stream = z_stream()

    public init() {
        let status = inflateInit_(&stream, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
        precondition(status == Z_OK, "inflateInit failed: \(status)")
    }

    deinit { inflateEnd(&stream) }

    /// Inflates `input`, which must expand to exactly `expectedLength` bytes; appends them to `output`.
    ///
    /// At most `expectedLength` bytes are ever allocated, so a decompression bomb fails before it costs memory.
    public func decompress(
        _ input: ByteBuffer, expectedLength: Int, into output: inout ByteBuffer, context: @autoclosure () -> String
    ) throws(TelexError) {
        inflateReset(&stream)
        var status: Int32 = Z_OK
        var produced = 0
        var extraByte = false
        input.withUnsafeReadableBytes { inputBytes in
            stream.next_in = UnsafeMutablePointer(mutating: inputBytes.baseAddress?.assumingMemoryBound(to: Bytef.self))
            stream.avail_in = uInt(inputBytes.count)
            produced = output.writeWithUnsafeMutableBytes(minimumWritableBytes: expectedLength + 1) { outputBytes in
                // One spare byte detects a stream that expands past its declared length.
                stream.next_out = outputBytes.baseAddress?.assumingMemoryBound(to: Bytef.self)
                stream.avail_out = uInt(expectedLength + 1)
                status = inflate(&stream, Z_FINISH)
                return expectedLength + 1 - Int(stream.avail_out)
            }
            extraByte = produced > expectedLength
        }
        if extraByte {
            output.moveWriterIndex(to: output.writerIndex - produced)
            throw TelexError(.batchTooLarge, "\(context()): inflates past its declared \(expectedLength) bytes")
        }
        guard status == Z_STREAM_END else {
            output.moveWriterIndex(to: output.writerIndex - produced)
            if status == Z_DATA_ERROR || status == Z_NEED_DICT {
                throw TelexError(.invalidBatch, "\(context()): zlib data is corrupt (\(stream.msg.map { String(cString: $0) } ?? String(cString: zError(status))))")
            }
            throw TelexError(.invalidBatch, "\(context()): zlib stream ended early after \(produced) of \(expectedLength) bytes")
        }
        guard produced == expectedLength, stream.avail_in == 0 else {
            output.moveWriterIndex(to: output.writerIndex - produced)
            throw TelexError(.invalidBatch,
                "\(context()): inflated to \(produced) bytes but the header declares \(expectedLength)"
                + (stream.avail_in == 0 ? "" : " (\(stream.avail_in) bytes after the zlib stream)"))
        }
    }
}
