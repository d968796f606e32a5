import Foundation
import NIOCore

/// A JSON value whose objects keep their key order, so written vectors read top-down.
indirect enum JSONValue: Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    /// Pretty-printed with two-space indentation.
    func rendered(indent: String = "") -> String {
        let inner = indent + "  "
        switch self {
        case .null: return "null"
        case .bool(let value): return value ? "true" : "false"
        case .int(let value): return String(value)
        case .string(let value): return JSONValue.quoted(value)
        case .array(let values):
            if values.isEmpty { return "[]" }
            return "[\n" + values.map { inner + $0.rendered(indent: inner) }.joined(separator: ",\n") + "\n\(indent)]"
        case .object(let members):
            if members.isEmpty { return "{}" }
            return "{\n"
                + members.map { inner + JSONValue.quoted($0.0) + ": " + $0.1.rendered(indent: inner) }
                .joined(separator: ",\n")
                + "\n\(indent)}"
        }
    }

    private static func quoted(_ string: String) -> String {
        var out = "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let digits = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - digits.count) + digits
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.0 == key }?.1
    }
}

/// A vector file that does not have the shape the tests expect.
struct VectorFormatError: Error, CustomStringConvertible {
    var description: String
}

extension JSONValue: Decodable {
    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .int(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else if let value = try? container.decode([String: JSONValue].self) {
            self = .object(value.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
        } else {
            throw VectorFormatError(description: "unsupported JSON value at \(decoder.codingPath)")
        }
    }

    /// Parses a vector file.
    static func load(_ url: URL) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: url))
    }

    /// The member `key`, or an error naming it.
    func field(_ key: String) throws -> JSONValue {
        guard let value = self[key] else { throw VectorFormatError(description: "missing field '\(key)'") }
        return value
    }

    func string(_ key: String) throws -> String {
        guard case .string(let value) = try field(key) else {
            throw VectorFormatError(description: "field '\(key)' is not a string")
        }
        return value
    }

    func integer<T: FixedWidthInteger>(_ key: String, as type: T.Type = T.self) throws -> T {
        guard case .int(let value) = try field(key), let exact = T(exactly: value) else {
            throw VectorFormatError(description: "field '\(key)' is not an integer that fits \(T.self)")
        }
        return exact
    }

    func bool(_ key: String) throws -> Bool {
        guard case .bool(let value) = try field(key) else {
            throw VectorFormatError(description: "field '\(key)' is not a boolean")
        }
        return value
    }

    func array(_ key: String) throws -> [JSONValue] {
        guard case .array(let value) = try field(key) else {
            throw VectorFormatError(description: "field '\(key)' is not an array")
        }
        return value
    }

    func hexBytes(_ key: String) throws -> ByteBuffer {
        guard let bytes = Hex.decode(try string(key)) else {
            throw VectorFormatError(description: "field '\(key)' is not hex")
        }
        return bytes
    }
}
