import Foundation

/// A JSON value: what an event envelope and its ninjs article are made of. Parsed and serialized by Foundation's
/// `JSONDecoder` and `JSONEncoder`, so escaping is never done by hand.
///
/// Numbers are values, not text. A number that is an exact `Int64` becomes `.integer`, including `1.0`, `1e3`
/// (`.integer(1000)`) and `-0` or `-0.0` (`.integer(0)`: the sign of zero is not kept). Any other number becomes
/// `.double`: fractions, and integers outside the `Int64` range, which are rounded to the nearest `Double` (when
/// that is exactly `Int64.min`, the value is `.integer(.min)`). A number
/// beyond the `Double` range (`1e400`) is a parse error. Every value that comes out of `init(parsing:)` serializes
/// to text that parses back to an equal value; `.double(1.0)` built in code serializes as `1` and parses back as
/// `.integer(1)`. A non-finite `.double` (which parsing never produces) serializes as `null`. Of repeated object
/// keys the first one wins.
public enum JSONValue: Sendable, Hashable, Codable {
    case null
    case bool(Bool)
    case integer(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// Why a text is not JSON, in words for the person who wrote it.
    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        /// What is wrong, starting in lower case (e.g. "the text is empty").
        public let reason: String
        public var description: String { reason }
    }

    /// Parses one JSON text (any value at the top level; surrounding whitespace and a UTF-8 byte order mark allowed).
    public init(parsing bytes: some Collection<UInt8>) throws(ParseError) {
        if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }) {
            throw ParseError(reason: "the text is empty")
        }
        do {
            self = try Self.decoder.decode(JSONValue.self, from: Data(bytes))
        } catch let error as DecodingError {
            throw ParseError(reason: Self.reason(error))
        } catch {
            throw ParseError(reason: "\(error)")
        }
    }

    /// Compact UTF-8 JSON with object keys sorted and `/` unescaped.
    public func serialized() -> [UInt8] {
        do {
            return Array(try Self.encoder.encode(self))
        } catch {
            preconditionFailure("JSONValue always encodes (non-finite doubles become null): \(error)")
        }
    }

    /// `serialized()` as a string.
    public var jsonText: String { String(decoding: serialized(), as: UTF8.self) }

    private static let decoder = JSONDecoder()
    private static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    private static func reason(_ error: DecodingError) -> String {
        let context: DecodingError.Context
        switch error {
        case .dataCorrupted(let corrupted): context = corrupted
        case .typeMismatch(_, let mismatch): context = mismatch
        case .valueNotFound(_, let missing): context = missing
        case .keyNotFound(_, let missing): context = missing
        @unknown default: return "\(error)"
        }
        var reason = context.debugDescription
        if reason.hasSuffix(".") { reason.removeLast() }
        if let first = reason.first { reason.replaceSubrange(...reason.startIndex, with: first.lowercased()) }
        if let underlying = context.underlyingError {
            let detail = (underlying as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? "\(underlying)"
            reason += ": \(detail)"
        }
        return reason
    }

    /// Decodes any JSON value, with the number choices described on the type.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        /// Decodes `type` if the value is one; rethrows errors inside the value (a bad escape, a nested error).
        func attempt<T: Decodable>(_ type: T.Type) throws -> T? {
            do {
                return try container.decode(type)
            } catch DecodingError.typeMismatch(_, let context)
                where context.codingPath.count == container.codingPath.count
            {
                return nil
            }
        }
        /// Foundation reports errors in numbers and strings found while decoding (not while scanning) as an
        /// internal error type with no readable text: name the problem and where it is instead.
        func describingErrors<T>(_ problem: String, _ body: () throws -> T?) throws -> T? {
            do {
                return try body()
            } catch let error as DecodingError {
                throw error
            } catch {
                let description = "\(problem) at \(Self.path(container.codingPath))"
                throw DecodingError.dataCorrupted(.init(codingPath: container.codingPath, debugDescription: description))
            }
        }
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try describingErrors("a number out of range or badly formed", { try attempt(Double.self) })
        {
            // Only text just below Int64.min gets here with an Int64 value: it rounds to Int64.min.
            self = Int64(exactly: value).map(JSONValue.integer) ?? .double(value)
        } else if let value = try describingErrors("a string with a bad escape sequence", { try attempt(String.self) })
        {
            self = .string(value)
        } else if let value = try attempt([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }


    private static func path(_ codingPath: [any CodingKey]) -> String {
        var text = ""
        for key in codingPath {
            if let index = key.intValue {
                text += "[\(index)]"
            } else {
                text += text.isEmpty ? key.stringValue : ".\(key.stringValue)"
            }
        }
        return text.isEmpty ? "the top level" : text
    }

    /// Encodes the value; a non-finite double as `null`.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .integer(let value): try container.encode(value)
        case .double(let value): if value.isFinite { try container.encode(value) } else { try container.encodeNil() }
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}

// MARK: Accessors

extension JSONValue {
    /// The member `key` of an object; nil for a missing key or when this is not an object.
    public subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { members[key] } else { nil }
    }

    /// The element at `index` of an array; nil when out of range or when this is not an array.
    public subscript(index: Int) -> JSONValue? {
        if case .array(let elements) = self, elements.indices.contains(index) { elements[index] } else { nil }
    }

    /// The string, if this is one.
    public var stringValue: String? { if case .string(let value) = self { value } else { nil } }
    /// The boolean, if this is one.
    public var boolValue: Bool? { if case .bool(let value) = self { value } else { nil } }
    /// The integer, if this is an `.integer`.
    public var integerValue: Int64? { if case .integer(let value) = self { value } else { nil } }
    /// The number as a `Double`, for `.double` and `.integer` alike.
    public var doubleValue: Double? {
        switch self {
        case .double(let value): value
        case .integer(let value): Double(value)
        default: nil
        }
    }
    /// The elements, if this is an array.
    public var arrayValue: [JSONValue]? { if case .array(let value) = self { value } else { nil } }
    /// The members, if this is an object.
    public var objectValue: [String: JSONValue]? { if case .object(let value) = self { value } else { nil } }
    /// True for `null`.
    public var isNull: Bool { self == .null }

    /// What kind of value this is, for error messages: "a string", "an object", "null"...
    public var kindDescription: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .integer, .double: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

// MARK: Literals

extension JSONValue: ExpressibleByNilLiteral {
    public init(nilLiteral: ()) { self = .null }
}

extension JSONValue: ExpressibleByBooleanLiteral {
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}

extension JSONValue: ExpressibleByIntegerLiteral {
    public init(integerLiteral value: Int64) { self = .integer(value) }
}

extension JSONValue: ExpressibleByFloatLiteral {
    public init(floatLiteral value: Double) { self = .double(value) }
}

extension JSONValue: ExpressibleByStringLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
}

extension JSONValue: ExpressibleByStringInterpolation {}

extension JSONValue: ExpressibleByArrayLiteral {
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
}

extension JSONValue: ExpressibleByDictionaryLiteral {
    /// Of repeated keys the last one wins.
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
}
