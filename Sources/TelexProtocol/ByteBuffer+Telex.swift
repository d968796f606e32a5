import NIOCore

extension ByteBuffer {
    /// Writes a string as a u16 big-endian byte length followed by its UTF-8 bytes.
    @inlinable
    public mutating func writeShortString(_ string: String) {
        let lengthIndex = writerIndex
        writeInteger(UInt16(0))
        let written = writeString(string)
        precondition(written <= Int(UInt16.max), "string longer than 65535 bytes")
        setInteger(UInt16(written), at: lengthIndex)
    }

    /// Writes bytes as a u16 big-endian length followed by the bytes.
    @inlinable
    public mutating func writeShortBytes(_ bytes: ByteBuffer) {
        precondition(bytes.readableBytes <= Int(UInt16.max), "field longer than 65535 bytes")
        writeInteger(UInt16(bytes.readableBytes))
        writeImmutableBuffer(bytes)
    }

    /// Writes bytes as a u32 big-endian length followed by the bytes.
    @inlinable
    public mutating func writeLongBytes(_ bytes: ByteBuffer) {
        writeInteger(UInt32(bytes.readableBytes))
        writeImmutableBuffer(bytes)
    }
}

/// Reads fields out of a frame body, turning every shortfall into a `malformedFrame` error that names the field.
///
/// Field names and the context are built only when an error is thrown: decoding stays free of string work.
public struct FieldReader {
    public var buffer: ByteBuffer
    private let describe: () -> String
    public let code: TelexError.Code

    public init(_ buffer: ByteBuffer, context: @autoclosure @escaping () -> String, code: TelexError.Code = .malformedFrame) {
        self.buffer = buffer
        self.describe = context
        self.code = code
    }

    /// What is being read, for error messages ("PUBLISH (request id 7)").
    public var context: String { describe() }

    public var remaining: Int { buffer.readableBytes }

    @inlinable
    public mutating func integer<T: FixedWidthInteger>(_ field: @autoclosure () -> String, as: T.Type = T.self) throws(TelexError) -> T {
        guard let value = buffer.readInteger(as: T.self) else {
            throw truncated(field(), needed: MemoryLayout<T>.size)
        }
        return value
    }

    /// Reads a `u8` flag that must be 0 or 1.
    public mutating func flag(_ field: String) throws(TelexError) -> Bool {
        let value = try integer(field, as: UInt8.self)
        guard value <= 1 else { throw TelexError(.malformedFrame, "\(context): \(field) flag \(value) is not 0 or 1") }
        return value == 1
    }

    public mutating func shortString(_ field: @autoclosure () -> String) throws(TelexError) -> String {
        let length = Int(try integer(field() + " length", as: UInt16.self))
        guard let bytes = buffer.readSlice(length: length) else { throw truncated(field(), needed: length) }
        guard let string = bytes.validatedUTF8String() else {
            throw TelexError(code, "\(context): field \(field()) is not valid UTF-8")
        }
        return string
    }

    public mutating func shortBytes(_ field: @autoclosure () -> String) throws(TelexError) -> ByteBuffer {
        let length = Int(try integer(field() + " length", as: UInt16.self))
        guard let bytes = buffer.readSlice(length: length) else { throw truncated(field(), needed: length) }
        return bytes
    }

    public mutating func longBytes(_ field: @autoclosure () -> String) throws(TelexError) -> ByteBuffer {
        let length = Int(try integer(field() + " length", as: UInt32.self))
        guard let bytes = buffer.readSlice(length: length) else { throw truncated(field(), needed: length) }
        return bytes
    }

    public mutating func slice(_ field: @autoclosure () -> String, length: Int) throws(TelexError) -> ByteBuffer {
        guard let bytes = buffer.readSlice(length: length) else { throw truncated(field(), needed: length) }
        return bytes
    }

    /// Fails unless every byte was consumed.
    public func expectEnd() throws(TelexError) {
        if buffer.readableBytes != 0 {
            throw TelexError(code, "\(context): \(buffer.readableBytes) unexpected trailing bytes")
        }
    }

    public func truncated(_ field: String, needed: Int) -> TelexError {
        TelexError(code, "\(context): truncated at field \(field) (needs \(needed) bytes, \(buffer.readableBytes) left)")
    }
}

extension ByteBuffer {
    /// The readable bytes as a string, or nil if they are not valid UTF-8.
    @inlinable
    func validatedUTF8String() -> String? {
        withUnsafeReadableBytes { String(validating: $0, as: UTF8.self) }
    }
}
