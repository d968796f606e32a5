#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import NIOCore
import TelexProtocol

extension CloudEvent {
    /// Appends telex-sub's line for a stored value, and a newline: `topic`, `offset` and `brokertime` spliced in
    /// after the opening `{`, then the stored members as they are. Members of those names already in the value
    /// are replaced (as `outputLine` does). A value with a line break, repeated or escaped top-level keys, or one
    /// the scanner does not take on, is printed by `outputLine` (keys sorted); a value that is not a JSON object
    /// throws its error.
    public static func appendOutputLine(
        value: ByteBuffer, topic: String, offset: Int64, brokerTime: Int64, to output: inout [UInt8]
    ) throws(TelexError) {
        let spliced: Bool = value.withUnsafeReadableBytes { raw in
            let bytes = raw.assumingMemoryBound(to: UInt8.self)
            guard bytes.count > 0, memchr(bytes.baseAddress!, 0x0A, bytes.count) == nil,
                  memchr(bytes.baseAddress!, 0x0D, bytes.count) == nil,
                  let scan = JSONScanner.scanObject(bytes)
            else { return false }
            output.append(contentsOf: #"{"topic":"#.utf8)
            appendJSONString(topic, to: &output)
            output.append(contentsOf: #","offset":"#.utf8)
            output.append(contentsOf: String(offset).utf8)
            output.append(contentsOf: #","brokertime":""#.utf8)
            output.append(contentsOf: formatTime(milliseconds: brokerTime).utf8)
            output.append(UInt8(ascii: "\""))
            let kept = EventLine.value(scan, bytes: bytes, line: value, dropping: brokerAttributes)
            kept.withUnsafeReadableBytes { object in
                // `{` then members (or nothing) then `}`: the members follow our three after a comma.
                let inner = UnsafeRawBufferPointer(rebasing: object.dropFirst().dropLast())
                if inner.contains(where: { $0 != 0x20 && $0 != 0x09 }) {
                    output.append(UInt8(ascii: ","))
                    output.append(contentsOf: inner)
                }
            }
            output.append(contentsOf: "}\n".utf8)
            return true
        }
        if spliced { return }
        output.append(contentsOf: try outputLine(value: value, topic: topic, offset: offset, brokerTime: brokerTime).utf8)
        output.append(UInt8(ascii: "\n"))
    }

    /// `formatTime` of a time in milliseconds since 1970 (years 1970-9999 formatted here, others by Foundation).
    public static func formatTime(milliseconds: Int64) -> String {
        guard milliseconds >= 0, milliseconds < 253_402_300_800_000 else {
            return formatTime(Date(timeIntervalSince1970: Double(milliseconds) / 1000))
        }
        let totalSeconds = Int(milliseconds / 1000)
        let (days, secondOfDay) = totalSeconds.quotientAndRemainder(dividingBy: 86_400)
        let (year, month, day) = civil(daysSinceEpoch: days)
        var text = [UInt8](repeating: 0, count: 24)
        func put(_ value: Int, at position: Int, digits: Int) {
            var value = value
            for index in stride(from: position + digits - 1, through: position, by: -1) {
                text[index] = UInt8(ascii: "0") + UInt8(value % 10)
                value /= 10
            }
        }
        put(year, at: 0, digits: 4)
        put(month, at: 5, digits: 2)
        put(day, at: 8, digits: 2)
        put(secondOfDay / 3600, at: 11, digits: 2)
        put(secondOfDay / 60 % 60, at: 14, digits: 2)
        put(secondOfDay % 60, at: 17, digits: 2)
        put(Int(milliseconds % 1000), at: 20, digits: 3)
        for (index, byte) in [(4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":"), (19, "."), (23, "Z")] as [(Int, Unicode.Scalar)] {
            text[index] = UInt8(ascii: byte)
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// The date of a day counted from 1970-01-01 (Howard Hinnant's civil_from_days).
    static func civil(daysSinceEpoch days: Int) -> (year: Int, month: Int, day: Int) {
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    /// Appends a JSON string as `JSONValue.serialized()` writes it (escaping only what must be escaped).
    public static func appendJSONString(_ string: String, to output: inout [UInt8]) {
        let plain = string.utf8.allSatisfy { $0 >= 0x20 && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }
        if plain {
            output.append(UInt8(ascii: "\""))
            output.append(contentsOf: string.utf8)
            output.append(UInt8(ascii: "\""))
        } else {
            output.append(contentsOf: JSONValue.string(string).serialized())
        }
    }
}
