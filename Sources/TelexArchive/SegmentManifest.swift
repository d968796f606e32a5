import Foundation
import NIOCore
import TelexProtocol
import TelexStorage

/// The JSON manifest of an archived segment (Protocol/STORAGE.md §16.1), written last: the commit point of its
/// upload. Encoded with sorted keys, so equal manifests are equal bytes.
public struct SegmentManifest: Codable, Sendable, Equatable {
    /// The manifest format; only 1 exists.
    public var format: Int
    public var topic: String
    public var baseOffset: Int64
    /// The offset after its last record (for a compacted segment: its marker's end offset).
    public var nextOffset: Int64
    /// Bytes of the `.log` object.
    public var bytes: Int
    /// Hex SHA-256 of the `.log` object.
    public var sha256: String
    /// Hex MD5 of the `.log` object (its single-part ETag).
    public var md5: String
    public var rewrites: UInt32
    /// Append times of its oldest and newest batch (ms since the epoch); absent when it holds none.
    public var firstAppendTime: Int64?
    public var lastAppendTime: Int64?
    /// The `.log` object's key.
    public var logKey: String
    /// The `.compacted` object's key, absent for a segment never rewritten.
    public var compactedKey: String?
    /// When the manifest was written (ms since the epoch).
    public var uploadedAt: Int64

    public static let currentFormat = 1

    public init(
        topic: String, baseOffset: Int64, nextOffset: Int64, bytes: Int, sha256: String, md5: String, rewrites: UInt32,
        firstAppendTime: Int64?, lastAppendTime: Int64?, logKey: String, compactedKey: String?, uploadedAt: Int64
    ) {
        format = Self.currentFormat
        self.topic = topic
        self.baseOffset = baseOffset
        self.nextOffset = nextOffset
        self.bytes = bytes
        self.sha256 = sha256
        self.md5 = md5
        self.rewrites = rewrites
        self.firstAppendTime = firstAppendTime
        self.lastAppendTime = lastAppendTime
        self.logKey = logKey
        self.compactedKey = compactedKey
        self.uploadedAt = uploadedAt
    }

    /// What a log and the cache need of it.
    public var segment: ArchivedSegment {
        ArchivedSegment(baseOffset: baseOffset, nextOffset: nextOffset, bytes: bytes, rewrites: rewrites,
                        lastAppendTime: lastAppendTime)
    }

    /// The JSON bytes, keys sorted.
    public func encoded() -> ByteBuffer {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding plain integers and strings cannot fail.
        return ByteBuffer(bytes: try! encoder.encode(self))
    }

    /// Decodes and validates the manifest stored as `key`: it must name the topic and base offset of its key,
    /// in `layout`'s object names. Throws `DATA_LOSS` naming the key and the field that is wrong.
    public static func decode(_ bytes: ByteBuffer, key: String, layout: ArchiveLayout) throws(TelexError) -> Self {
        let manifest: Self
        do {
            manifest = try JSONDecoder().decode(Self.self, from: Data(bytes.readableBytesView))
        } catch let DecodingError.keyNotFound(field, _) {
            throw invalid(key, field.stringValue, "is missing")
        } catch let DecodingError.typeMismatch(_, context) {
            throw invalid(key, context.codingPath.map(\.stringValue).joined(separator: "."), "has the wrong type")
        } catch let DecodingError.valueNotFound(_, context) {
            throw invalid(key, context.codingPath.map(\.stringValue).joined(separator: "."), "is null")
        } catch {
            throw TelexError(.dataLoss, "archive manifest \(key) is not valid JSON: \(error)")
        }
        try manifest.validate(key: key, layout: layout)
        return manifest
    }

    private static func invalid(_ key: String, _ field: String, _ problem: String) -> TelexError {
        TelexError(.dataLoss, "archive manifest \(key): field '\(field)' \(problem)")
    }

    private func validate(key: String, layout: ArchiveLayout) throws(TelexError) {
        func check(_ ok: Bool, _ field: String, _ problem: @autoclosure () -> String) throws(TelexError) {
            if !ok { throw Self.invalid(key, field, problem()) }
        }
        func isHex(_ text: String, length: Int) -> Bool {
            text.utf8.count == length && text.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
        }
        try check(format == Self.currentFormat, "format",
                  "is \(format); this telexd reads format \(Self.currentFormat)")
        let named = layout.manifestSegment(key)
        try check(named?.topic == topic, "topic", "is '\(topic)', the key names '\(named?.topic ?? "none")'")
        try check(named?.baseOffset == baseOffset, "baseOffset", "is \(baseOffset), the key names another")
        try check(nextOffset >= baseOffset, "nextOffset", "is \(nextOffset), below baseOffset \(baseOffset)")
        try check(bytes >= 0, "bytes", "is negative (\(bytes))")
        try check(isHex(sha256, length: 64), "sha256", "is not 64 lowercase hex digits")
        try check(isHex(md5, length: 32), "md5", "is not 32 lowercase hex digits")
        let expectedLog = layout.segmentLog(topic: topic, baseOffset: baseOffset, rewrites: rewrites)
        try check(logKey == expectedLog, "logKey", "is '\(logKey)', expected '\(expectedLog)'")
        if let compactedKey {
            let expected = layout.compactionMarker(topic: topic, baseOffset: baseOffset, rewrites: rewrites)
            try check(compactedKey == expected, "compactedKey", "is '\(compactedKey)', expected '\(expected)'")
        }
    }
}
