#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A strict RFC 8259 validator over UTF-8 bytes that builds no tree: it walks the text once and, for the top-level
/// object (and one nested object, e.g. `data`), records where each member's key and value are.
///
/// It is the CLIs' fast path, and it is conservative: it accepts only texts `JSONValue(parsing:)` accepts. Anything
/// unusual (a comma before `]` or `}`, which Foundation accepts and RFC 8259 does not, a byte order mark, nesting deeper than `maxDepth`, a number that may be out of the `Double` range, an
/// escaped key where members are recorded, a repeated recorded key) makes it answer nil, and the caller takes the
/// slow path through `JSONValue`, which either accepts the text or says exactly what is wrong.
struct JSONScanner {
    /// Members recorded per object before the scanner leaves the object to the slow path.
    static let maxRecordedMembers = 64

    /// One member of a recorded object: byte positions in the scanned text.
    struct Member {
        /// The key's bytes, without quotes (never escaped: an escaped recorded key makes the scan answer nil).
        var key: Range<Int>
        /// From the key's opening quote to the end of the value.
        var member: Range<Int>
        /// The value's text.
        var value: Range<Int>
        /// The value's first byte: `"`, `{`, `[`, `t`, `f`, `n`, or the first byte of a number.
        var kind: UInt8
        /// For a string value: whether it has escape sequences.
        var escaped: Bool
    }

    /// The members of the top-level object, and of its member named by `nested` when that is an object.
    struct ObjectScan {
        var members: [Member] = []
        var nestedMembers: [Member] = []
        /// Positions of the top-level `{` and `}`.
        var open = 0
        var close = 0
    }

    /// Deeper texts go to the slow path (Foundation's parser has its own limit of 512).
    static let maxDepth = 256

    private let bytes: UnsafeBufferPointer<UInt8>
    private var index = 0
    private var depth = 0
    private var lastStringEscaped = false

    private init(_ bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
    }

    /// Whether `bytes` is one JSON text this scanner accepts (any value at the top level, whitespace around it).
    static func validate(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        var scanner = JSONScanner(bytes)
        scanner.skipWhitespace()
        guard scanner.value() else { return false }
        scanner.skipWhitespace()
        return scanner.index == bytes.count
    }

    /// Validates `bytes` as one JSON text whose top level is an object, recording its members (and those of the
    /// member named `nested`, when that is an object). Nil when not accepted or not an object.
    static func scanObject(_ bytes: UnsafeBufferPointer<UInt8>, nested: StaticString? = nil) -> ObjectScan? {
        var scanner = JSONScanner(bytes)
        var scan = ObjectScan()
        scanner.skipWhitespace()
        guard scanner.index < bytes.count, bytes[scanner.index] == UInt8(ascii: "{") else { return nil }
        scan.open = scanner.index
        guard scanner.recordedObject(into: &scan.members, nested: nested, nestedMembers: &scan.nestedMembers) else {
            return nil
        }
        scan.close = scanner.index - 1
        scanner.skipWhitespace()
        guard scanner.index == bytes.count else { return nil }
        return scan
    }

    /// Whether the key of `member` in `bytes` is `name`.
    static func key(_ member: Member, in bytes: UnsafeBufferPointer<UInt8>, is name: StaticString) -> Bool {
        guard member.key.count == name.utf8CodeUnitCount else { return false }
        return memcmp(bytes.baseAddress! + member.key.lowerBound, name.utf8Start, member.key.count) == 0
    }

    // MARK: Grammar

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    private mutating func value() -> Bool {
        guard index < bytes.count else { return false }
        switch bytes[index] {
        case UInt8(ascii: "\""): return string()
        case UInt8(ascii: "{"): return object()
        case UInt8(ascii: "["): return array()
        case UInt8(ascii: "t"): return literal("true")
        case UInt8(ascii: "f"): return literal("false")
        case UInt8(ascii: "n"): return literal("null")
        default: return number()
        }
    }

    private mutating func literal(_ word: StaticString) -> Bool {
        let count = word.utf8CodeUnitCount
        guard bytes.count - index >= count, memcmp(bytes.baseAddress! + index, word.utf8Start, count) == 0 else {
            return false
        }
        index += count
        return true
    }

    private mutating func object() -> Bool {
        var ignored: [Member] = []
        var ignoredNested: [Member] = []
        return members(record: false, into: &ignored, nested: nil, nestedMembers: &ignoredNested)
    }

    private mutating func recordedObject(
        into members: inout [Member], nested: StaticString?, nestedMembers: inout [Member]
    ) -> Bool {
        self.members(record: true, into: &members, nested: nested, nestedMembers: &nestedMembers)
    }

    /// At `{`: scans the object; when `record`, appends its members and refuses escaped or repeated keys.
    private mutating func members(
        record: Bool, into members: inout [Member], nested: StaticString?, nestedMembers: inout [Member]
    ) -> Bool {
        depth += 1
        guard depth <= Self.maxDepth else { return false }
        defer { depth -= 1 }
        index += 1
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
            return true
        }
        while true {
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { return false }
            let keyStart = index
            guard string() else { return false }
            let key = keyStart + 1..<index - 1
            if record, lastStringEscaped { return false }
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { return false }
            index += 1
            skipWhitespace()
            guard index < bytes.count else { return false }
            let valueStart = index
            let kind = bytes[index]
            if record {
                var member = Member(key: key, member: keyStart..<keyStart, value: valueStart..<valueStart, kind: kind,
                                    escaped: false)
                // Repeats are found by comparing with every recorded member: past 64 (an envelope has about 10, a
                // ninjs article rarely 40) that would grow quadratically, so such an object takes the slow path.
                if members.count >= Self.maxRecordedMembers { return false }
                let base = bytes.baseAddress!
                let repeated = members.contains {
                    $0.key.count == key.count && memcmp(base + $0.key.lowerBound, base + key.lowerBound, key.count) == 0
                }
                if repeated { return false }
                if let nested, kind == UInt8(ascii: "{"), Self.key(member, in: bytes, is: nested) {
                    var none: [Member] = []
                    guard self.members(record: true, into: &nestedMembers, nested: nil, nestedMembers: &none) else {
                        return false
                    }
                } else {
                    guard value() else { return false }
                    member.escaped = kind == UInt8(ascii: "\"") && lastStringEscaped
                }
                member.member = keyStart..<index
                member.value = valueStart..<index
                members.append(member)
            } else {
                guard value() else { return false }
            }
            guard let more = separator(closing: UInt8(ascii: "}")) else { return false }
            if !more { return true }
        }
    }

    /// After a member or an element: true past a `,` (another follows), false past `closing` (the container ends),
    /// nil at anything else.
    private mutating func separator(closing: UInt8) -> Bool? {
        skipWhitespace()
        guard index < bytes.count else { return nil }
        if bytes[index] == UInt8(ascii: ",") {
            index += 1
            skipWhitespace()
            return true
        }
        guard bytes[index] == closing else { return nil }
        index += 1
        return false
    }

    private mutating func array() -> Bool {
        depth += 1
        guard depth <= Self.maxDepth else { return false }
        defer { depth -= 1 }
        index += 1
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
            index += 1
            return true
        }
        while true {
            guard value() else { return false }
            guard let more = separator(closing: UInt8(ascii: "]")) else { return false }
            if !more { return true }
        }
    }

    /// At `"`: a string with valid escapes and valid UTF-8, no control characters. Eight plain ASCII bytes at a
    /// time where it can.
    private mutating func string() -> Bool {
        index += 1
        lastStringEscaped = false
        let base = bytes.baseAddress!
        let count = bytes.count
        while true {
            while count - index >= 8 {
                let word = UnsafeRawPointer(base + index).loadUnaligned(as: UInt64.self)
                if Self.isPlain(word) { index += 8 } else { break }
            }
            guard index < count else { return false }
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                index += 1
                return true
            } else if byte == UInt8(ascii: "\\") {
                lastStringEscaped = true
                guard escape() else { return false }
            } else if byte < 0x20 {
                return false
            } else if byte < 0x80 {
                index += 1
            } else {
                guard utf8Sequence() else { return false }
            }
        }
    }

    /// True when none of the eight bytes is a quote, a backslash, a control character or non-ASCII.
    private static func isPlain(_ word: UInt64) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        let quote = word ^ (ones &* 0x22)
        let backslash = word ^ (ones &* 0x5C)
        let hasQuote = (quote &- ones) & ~quote
        let hasBackslash = (backslash &- ones) & ~backslash
        let hasControl = (word &- ones &* 0x20) & ~word
        return (hasQuote | hasBackslash | hasControl | word) & highs == 0
    }

    /// At `\`: one escape; a `\u` high surrogate must be followed by a `\u` low surrogate.
    private mutating func escape() -> Bool {
        guard count(atLeast: 2) else { return false }
        switch bytes[index + 1] {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
            UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
            index += 2
            return true
        case UInt8(ascii: "u"):
            guard let unit = hex4(at: index + 2) else { return false }
            index += 6
            if unit >= 0xDC00 && unit <= 0xDFFF { return false }
            guard unit >= 0xD800 && unit <= 0xDBFF else { return true }
            guard count(atLeast: 6), bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u"),
                  let low = hex4(at: index + 2), low >= 0xDC00 && low <= 0xDFFF
            else { return false }
            index += 6
            return true
        default:
            return false
        }
    }

    private func count(atLeast needed: Int) -> Bool { bytes.count - index >= needed }

    private func hex4(at position: Int) -> UInt32? {
        guard bytes.count - position >= 4 else { return nil }
        var unit: UInt32 = 0
        for offset in 0..<4 {
            let byte = bytes[position + offset]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: return nil
            }
            unit = unit << 4 | UInt32(digit)
        }
        return unit
    }

    /// At a byte >= 0x80: one well-formed UTF-8 sequence (no overlong forms, no surrogates, at most U+10FFFF).
    private mutating func utf8Sequence() -> Bool {
        let lead = bytes[index]
        let length: Int
        var lower: UInt8 = 0x80
        var upper: UInt8 = 0xBF
        switch lead {
        case 0xC2...0xDF: length = 2
        case 0xE0: length = 3; lower = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED: length = 3; upper = 0x9F
        case 0xF0: length = 4; lower = 0x90
        case 0xF1...0xF3: length = 4
        case 0xF4: length = 4; upper = 0x8F
        default: return false
        }
        guard count(atLeast: length) else { return false }
        let second = bytes[index + 1]
        guard second >= lower && second <= upper else { return false }
        for offset in 2..<max(2, length) where bytes[index + offset] & 0xC0 != 0x80 { return false }
        index += length
        return true
    }

    /// A number per the RFC grammar. One with an exponent or very many digits is checked with `strtod`: out of the
    /// `Double` range, or rounded to zero, it goes to the slow path.
    private mutating func number() -> Bool {
        let start = index
        if bytes[index] == UInt8(ascii: "-") { index += 1 }
        guard index < bytes.count else { return false }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
        } else {
            guard digits() else { return false }
        }
        var exponent = false
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            guard digits() else { return false }
        }
        if index < bytes.count, bytes[index] | 0x20 == UInt8(ascii: "e") {
            exponent = true
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard digits() else { return false }
        }
        if exponent || index - start > 300 {
            return Self.isNormalRange(bytes.baseAddress! + start, count: index - start)
        }
        return true
    }

    /// At least one digit.
    private mutating func digits() -> Bool {
        let start = index
        while index < bytes.count, bytes[index] &- UInt8(ascii: "0") < 10 { index += 1 }
        return index > start
    }

    /// Whether the number text converts to a finite `Double` that is zero only when every digit is zero.
    private static func isNormalRange(_ text: UnsafePointer<UInt8>, count: Int) -> Bool {
        guard count < 512 else { return false }
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: count + 1) { buffer -> Bool in
            for offset in 0..<count { buffer[offset] = CChar(bitPattern: text[offset]) }
            buffer[count] = 0
            let value = strtod(buffer.baseAddress!, nil)
            guard value.isFinite else { return false }
            if value == 0 {
                var offset = 0
                while offset < count, text[offset] | 0x20 != UInt8(ascii: "e") {
                    if text[offset] &- UInt8(ascii: "1") < 9 { return false }
                    offset += 1
                }
            }
            return true
        }
    }
}
