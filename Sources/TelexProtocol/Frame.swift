import NIOCore

/// The 8-byte header after every frame's length prefix.
public struct FrameHeader: Sendable, Equatable {
    /// Size of the header in bytes (not counting the 4-byte length prefix).
    public static let size = 8
    /// The protocol versions this implementation speaks.
    public static let supportedVersions: ClosedRange<UInt8> = 1...1
    public static let currentVersion: UInt8 = 1

    public var version: UInt8
    public var type: MessageType
    public var flags: UInt16
    /// Ties a reply to its request; 0 for frames that answer nothing (DELIVER, CAUGHT_UP, connection errors).
    public var requestID: UInt32

    public init(version: UInt8 = FrameHeader.currentVersion, type: MessageType, flags: UInt16 = 0, requestID: UInt32) {
        self.version = version
        self.type = type
        self.flags = flags
        self.requestID = requestID
    }
}

/// A complete frame: its header and its undecoded body.
public struct Frame: Sendable, Equatable {
    public var header: FrameHeader
    public var body: ByteBuffer

    public init(header: FrameHeader, body: ByteBuffer) {
        self.header = header
        self.body = body
    }
}

/// Limits a frame decoder enforces.
public struct FrameLimits: Sendable, Equatable {
    /// Largest accepted frame, counted from the first header byte (the length prefix's value). Default 8 MiB.
    public var maxFrameSize: Int

    public init(maxFrameSize: Int = 8 << 20) {
        self.maxFrameSize = maxFrameSize
    }
}

/// Splits a byte stream into frames. Never buffers a body above the limit, never trusts the length.
public struct FrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = Frame

    public let limits: FrameLimits
    /// Frames decoded so far, for error messages.
    private var framesDecoded = 0

    public init(limits: FrameLimits = .init()) {
        self.limits = limits
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> Frame? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        let frameNumber = framesDecoded + 1
        guard Int(length) <= limits.maxFrameSize else {
            throw TelexError(.frameTooLarge,
                "frame \(frameNumber): length \(length) is above the maximum frame size of \(limits.maxFrameSize) bytes")
        }
        guard Int(length) >= FrameHeader.size else {
            throw TelexError(.malformedFrame,
                "frame \(frameNumber): length \(length) is shorter than the \(FrameHeader.size)-byte frame header")
        }
        // Check the header as soon as it is here, before waiting for a possibly large body.
        guard let (version, rawType, flags, requestID) = buffer.getMultipleIntegers(
            at: buffer.readerIndex + 4, as: (UInt8, UInt8, UInt16, UInt32).self)
        else { return nil }
        guard FrameHeader.supportedVersions.contains(version) else {
            throw TelexError(.unsupportedVersion,
                "frame \(frameNumber): protocol version \(version) is not supported (this peer speaks \(FrameHeader.supportedVersions.lowerBound)...\(FrameHeader.supportedVersions.upperBound))",
                requestID: requestID)
        }
        guard let type = MessageType(rawValue: rawType) else {
            throw TelexError(.unknownMessageType,
                "frame \(frameNumber): unknown message type 0x\(String(rawType, radix: 16)) (request id \(requestID))",
                requestID: requestID)
        }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4 + FrameHeader.size)
        let body = buffer.readSlice(length: Int(length) - FrameHeader.size)!
        framesDecoded += 1
        return Frame(header: FrameHeader(version: version, type: type, flags: flags, requestID: requestID), body: body)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> Frame? {
        if let frame = try decode(buffer: &buffer) { return frame }
        if seenEOF, buffer.readableBytes > 0 {
            throw TelexError(.malformedFrame,
                "connection closed inside frame \(framesDecoded + 1): \(buffer.readableBytes) bytes of an incomplete frame")
        }
        return nil
    }
}

extension ByteBuffer {
    /// Writes a frame's length prefix and header for a body of `bodyLength` bytes that the caller sends next
    /// (as further writes, e.g. batches straight from a file), so large bodies need not be copied.
    @inlinable
    public mutating func writeFrameHeader(type: MessageType, requestID: UInt32, bodyLength: Int) {
        writeMultipleIntegers(
            UInt32(FrameHeader.size + bodyLength), FrameHeader.currentVersion, type.rawValue, UInt16(0), requestID)
    }

    /// Writes a frame: length prefix, header, then whatever `body` writes. Returns the frame's total size.
    @inlinable
    @discardableResult
    public mutating func writeFrame(
        type: MessageType, requestID: UInt32, flags: UInt16 = 0, version: UInt8 = FrameHeader.currentVersion,
        body: (inout ByteBuffer) -> Void
    ) -> Int {
        let start = writerIndex
        writeMultipleIntegers(UInt32(0), version, type.rawValue, flags, requestID)
        body(&self)
        setInteger(UInt32(writerIndex - start - 4), at: start)
        return writerIndex - start
    }
}
