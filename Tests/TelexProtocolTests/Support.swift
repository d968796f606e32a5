import Foundation
import NIOCore
import TelexProtocol
import Testing

/// Lowercase hex for test vectors and failure messages.
enum Hex {
    static func encode(_ buffer: ByteBuffer) -> String {
        encode(buffer.readableBytesView)
    }

    static func encode(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes lowercase or uppercase hex without separators; nil on odd length or a non-hex digit.
    static func decode(_ string: String) -> ByteBuffer? {
        let utf8 = Array(string.utf8)
        guard utf8.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var buffer = ByteBuffer()
        buffer.reserveCapacity(utf8.count / 2)
        var index = 0
        while index < utf8.count {
            guard let high = nibble(utf8[index]), let low = nibble(utf8[index + 1]) else { return nil }
            buffer.writeInteger(high << 4 | low)
            index += 2
        }
        return buffer
    }
}

/// Where the wire vectors live: `Protocol/vectors` under the package root, found from this file's path.
enum VectorDirectory {
    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // TelexProtocolTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()

    static let good = packageRoot.appendingPathComponent("Protocol/vectors", isDirectory: true)
    static let bad = good.appendingPathComponent("bad", isDirectory: true)

    /// The `.json` file names in `directory`, sorted.
    static func jsonFiles(in directory: URL) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.filter { $0.hasSuffix(".json") }.sorted()
    }
}

/// A message of either direction, for tests that walk every message type in one list.
enum WireMessage: Sendable, Equatable {
    case client(ClientMessage)
    case broker(BrokerMessage)

    var type: MessageType {
        switch self {
        case .client(let message): message.type
        case .broker(let message): message.type
        }
    }

    func encodeBody(into buffer: inout ByteBuffer) {
        switch self {
        case .client(let message): message.encodeBody(into: &buffer)
        case .broker(let message): message.encodeBody(into: &buffer)
        }
    }

    /// Decodes `frame` with the enum of its type's direction: what a broker or a client would run on it.
    static func decode(_ frame: Frame) throws(TelexError) -> WireMessage {
        if frame.header.type.isSentByClients {
            .client(try ClientMessage.decode(frame))
        } else {
            .broker(try BrokerMessage.decode(frame))
        }
    }
}

extension MessageType {
    /// The types a client sends; the others only a broker sends.
    static let sentByClients: Set<MessageType> = [
        .hello, .publish, .subscribe, .credit, .commit, .unsubscribe, .ping, .admin,
    ]

    var isSentByClients: Bool { Self.sentByClients.contains(self) }
}

extension ByteBuffer {
    /// Writes `message` as one frame with the encoder of its direction.
    @discardableResult
    mutating func writeMessage(_ message: WireMessage, requestID: UInt32) -> Int {
        switch message {
        case .client(let message): writeMessage(message, requestID: requestID)
        case .broker(let message): writeMessage(message, requestID: requestID)
        }
    }
}

/// Encodes `message` as one frame.
func frameBytes(_ message: WireMessage, requestID: UInt32) -> ByteBuffer {
    var buffer = ByteBuffer()
    buffer.writeMessage(message, requestID: requestID)
    return buffer
}

/// Encodes `message` as one frame.
func frameBytes(_ message: ClientMessage, requestID: UInt32) -> ByteBuffer {
    frameBytes(.client(message), requestID: requestID)
}

/// Encodes `message` as one frame.
func frameBytes(_ message: BrokerMessage, requestID: UInt32) -> ByteBuffer {
    frameBytes(.broker(message), requestID: requestID)
}

/// Decodes exactly one frame from `bytes` with a fresh decoder; fails the test if bytes are left over.
func decodeOneFrame(
    _ bytes: ByteBuffer, limits: FrameLimits = .init(), sourceLocation: SourceLocation = #_sourceLocation
) throws -> Frame {
    var decoder = FrameDecoder(limits: limits)
    var input = bytes
    let frame = try #require(try decoder.decode(buffer: &input), "incomplete frame", sourceLocation: sourceLocation)
    #expect(input.readableBytes == 0, "bytes left after the frame", sourceLocation: sourceLocation)
    return frame
}

/// Feeds `bytes` to a fresh decoder as one read followed by end of stream; returns the frames or rethrows.
func decodeStream(_ bytes: ByteBuffer, limits: FrameLimits = .init()) throws -> [Frame] {
    var decoder = FrameDecoder(limits: limits)
    var input = bytes
    var frames: [Frame] = []
    while let frame = try decoder.decode(buffer: &input) { frames.append(frame) }
    while let frame = try decoder.decodeLast(buffer: &input, seenEOF: true) { frames.append(frame) }
    return frames
}

/// Runs `body` and returns the `TelexError` it throws; records an issue if it returns or throws something else.
func expectTelexError(
    _ code: TelexError.Code, mentioning fragments: [String] = [],
    sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
) {
    do {
        try body()
        Issue.record("expected \(code.name), but nothing was thrown", sourceLocation: sourceLocation)
    } catch let error as TelexError {
        #expect(error.code == code, "got \(error)", sourceLocation: sourceLocation)
        for fragment in fragments {
            #expect(
                error.message.contains(fragment), "'\(error.message)' does not mention '\(fragment)'",
                sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("expected TelexError \(code.name), got \(error)", sourceLocation: sourceLocation)
    }
}
