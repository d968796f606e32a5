#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import NIOCore
import TelexProtocol

/// One JSON Lines CloudEvent, validated exactly as `CloudEvent(jsonText:)` validates it, and the record telex-pub
/// stores for it: the event's bytes as written, without the broker attributes `topic`, `offset` and `brokertime`.
///
/// The fast path scans the text once (`JSONScanner`) and builds no tree. Whatever it does not take on (a line it
/// does not accept, a field error, repeated top-level keys) goes through `CloudEvent(jsonText:)`, which gives
/// today's error message or, for a valid event, today's record (its value re-serialized with sorted keys).
public struct EventLine: Sendable {
    /// The CloudEvents `id`.
    public let id: String
    /// The `topic` attribute, if present.
    public let topic: String?
    /// Key `data.uri`; value the event's JSON; headers `ce-type`, `ce-id`; timestamp from `time`, else now.
    public let record: Record

    /// Parses and validates one line (surrounding whitespace allowed). `location` prefixes error messages.
    public init(line: ByteBuffer, location: @autoclosure () -> String) throws(TelexError) {
        let fast: EventLine? = line.withUnsafeReadableBytes { raw in
            let bytes = raw.assumingMemoryBound(to: UInt8.self)
            guard let scan = JSONScanner.scanObject(bytes, nested: "data") else { return nil }
            return Self.fastPath(scan, bytes: bytes, line: line)
        }
        if let fast {
            self = fast
            return
        }
        // Bytes that are not UTF-8 become U+FFFD, as telex-pub always read its lines.
        let text = String(buffer: line)
        let event = try CloudEvent(jsonText: text.utf8, location: location())
        (id, topic, record) = (event.id, event.topic, event.record())
    }

    private init(id: String, topic: String?, record: Record) {
        (self.id, self.topic, self.record) = (id, topic, record)
    }

    /// The event when every check of `CloudEvent.init(json:)` passes; nil sends the line to the slow path.
    private static func fastPath(_ scan: JSONScanner.ObjectScan, bytes: UnsafeBufferPointer<UInt8>, line: ByteBuffer)
        -> EventLine?
    {
        func member(_ name: StaticString, in members: [JSONScanner.Member]) -> JSONScanner.Member? {
            members.first { JSONScanner.key($0, in: bytes, is: name) }
        }
        func text(_ member: JSONScanner.Member) -> String? {
            guard member.kind == UInt8(ascii: "\"") else { return nil }
            let slice = UnsafeBufferPointer(rebasing: bytes[member.value])
            if !member.escaped { return String(decoding: UnsafeBufferPointer(rebasing: slice.dropFirst().dropLast()), as: UTF8.self) }
            return (try? JSONValue(parsing: slice))?.stringValue
        }
        func required(_ name: StaticString) -> String? {
            guard let found = member(name, in: scan.members), let value = text(found), !value.isEmpty else { return nil }
            return value
        }
        /// `.some(nil)` for absent or null, nil for any other non-string.
        func optional(_ name: StaticString) -> String?? {
            guard let found = member(name, in: scan.members), found.kind != UInt8(ascii: "n") else { return .some(nil) }
            return text(found).map { $0 }
        }
        guard required("specversion") == "1.0", let id = required("id"), required("source") != nil,
              let type = required("type"), case .some = optional("subject"),
              case .some(let time) = optional("time"), case .some(let contentType) = optional("datacontenttype"),
              case .some(let topic) = optional("topic")
        else { return nil }
        if let contentType, !contentType.contains("json") { return nil }
        if let topic, (try? TopicName.validate(topic)) == nil { return nil }
        var timestamp: Int64?
        if let time {
            guard let milliseconds = Self.milliseconds(rfc3339: time) else { return nil }
            timestamp = milliseconds
        }
        guard let data = member("data", in: scan.members), data.kind == UInt8(ascii: "{"),
              let uriMember = member("uri", in: scan.nestedMembers), let uri = text(uriMember), !uri.isEmpty,
              uri.utf8.count <= 4096
        else { return nil }
        if CloudEvent.articleTypes.contains(type) {
            for name: StaticString in ["headlines", "bodies"] {
                if let found = member(name, in: scan.nestedMembers), found.kind != UInt8(ascii: "[") { return nil }
            }
            for name: StaticString in ["version", "versioncreated", "versionCreated", "language", "type"] {
                if let found = member(name, in: scan.nestedMembers), found.kind != UInt8(ascii: "\"") { return nil }
            }
        }
        let value = Self.value(scan, bytes: bytes, line: line, dropping: CloudEvent.brokerAttributes)
        let record = Record(
            timestamp: timestamp ?? CloudEvent.milliseconds(Date()), key: ByteBuffer(string: uri),
            headers: [RecordHeader(name: "ce-type", value: type), RecordHeader(name: "ce-id", value: id)],
            value: value)
        return EventLine(id: id, topic: topic, record: record)
    }

    /// The object's text without surrounding whitespace: a slice of `line` (no copy) when no member is dropped,
    /// else the kept members joined by commas.
    static func value(
        _ scan: JSONScanner.ObjectScan, bytes: UnsafeBufferPointer<UInt8>, line: ByteBuffer, dropping names: Set<String>
    ) -> ByteBuffer {
        let dropped = scan.members.map { member in
            names.contains { name in
                name.utf8.count == member.key.count
                    && name.utf8.elementsEqual(UnsafeBufferPointer(rebasing: bytes[member.key]))
            }
        }
        if !dropped.contains(true) {
            return line.getSlice(at: line.readerIndex + scan.open, length: scan.close - scan.open + 1)!
        }
        var value = ByteBuffer()
        value.reserveCapacity(scan.close - scan.open + 1)
        value.writeInteger(UInt8(ascii: "{"))
        var first = true
        for (member, drop) in zip(scan.members, dropped) where !drop {
            if !first { value.writeInteger(UInt8(ascii: ",")) }
            first = false
            value.writeBytes(UnsafeBufferPointer(rebasing: bytes[member.member]))
        }
        value.writeInteger(UInt8(ascii: "}"))
        return value
    }

    /// Milliseconds since 1970 of an RFC 3339 time, as `CloudEvent.parseTime` and `CloudEvent.milliseconds` give
    /// them. The common UTC forms (`2024-03-06T08:00:00Z`, `…:00.123Z`) are read here; others go to Foundation.
    static func milliseconds(rfc3339 text: String) -> Int64? {
        if let fast = fastMilliseconds(text) { return fast }
        return CloudEvent.parseTime(text).map(CloudEvent.milliseconds)
    }

    private static func fastMilliseconds(_ text: String) -> Int64? {
        var text = text
        return text.withUTF8 { bytes -> Int64? in
            guard bytes.count == 20 || bytes.count == 24, bytes[4] == UInt8(ascii: "-"), bytes[7] == UInt8(ascii: "-"),
                  bytes[10] == UInt8(ascii: "T"), bytes[13] == UInt8(ascii: ":"), bytes[16] == UInt8(ascii: ":"),
                  bytes[bytes.count - 1] == UInt8(ascii: "Z")
            else { return nil }
            func number(_ start: Int, _ length: Int) -> Int? {
                var value = 0
                for index in start..<start + length {
                    let digit = bytes[index] &- UInt8(ascii: "0")
                    guard digit < 10 else { return nil }
                    value = value * 10 + Int(digit)
                }
                return value
            }
            guard let year = number(0, 4), let month = number(5, 2), let day = number(8, 2), let hour = number(11, 2),
                  let minute = number(14, 2), let second = number(17, 2)
            else { return nil }
            var millisecond = 0
            if bytes.count == 24 {
                guard bytes[19] == UInt8(ascii: "."), let fraction = number(20, 3) else { return nil }
                millisecond = fraction
            }
            guard year >= 1970, (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year),
                  hour < 24, minute < 60, second < 60
            else { return nil }
            let days = daysSinceEpoch(year: year, month: month, day: day)
            return Int64(((days * 24 + hour) * 60 + minute) * 60 + second) * 1000 + Int64(millisecond)
        }
    }

    private static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    static func daysSinceEpoch(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}
