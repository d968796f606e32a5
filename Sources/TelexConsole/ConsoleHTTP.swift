import Foundation
import NIOCore
import NIOHTTP1
import TelexProtocol

/// The console's JSON: Foundation's encoder (sorted keys, so answers are stable), with `<`, `>` and `&` written as
/// `\u003c`, `\u003e`, `\u0026` so that no answer holds markup even if a browser were tricked into reading it as
/// HTML. Those characters only occur inside JSON strings, so replacing the bytes keeps the JSON equal.
enum ConsoleJSON {
    static func encode(_ value: some Encodable) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let bytes: [UInt8]
        do {
            bytes = Array(try encoder.encode(value))
        } catch {
            // Only a non-finite Double can fail here; say so rather than send a half answer.
            return Array(
                #"{"error":{"code":"INTERNAL_ERROR","message":"the answer could not be encoded as JSON"}}"#.utf8)
        }
        var escaped: [UInt8] = []
        escaped.reserveCapacity(bytes.count)
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "<"): escaped += Array(#"\u003c"#.utf8)
            case UInt8(ascii: ">"): escaped += Array(#"\u003e"#.utf8)
            case UInt8(ascii: "&"): escaped += Array(#"\u0026"#.utf8)
            default: escaped.append(byte)
            }
        }
        return escaped
    }

    /// Decodes a request body; a failure is `INVALID_REQUEST` naming the field (or saying the body is not JSON).
    static func decode<T: Decodable>(_ type: T.Type, from body: ByteBuffer, what: String) throws(TelexError) -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(body.readableBytesView))
        } catch let error as DecodingError {
            throw TelexError(.invalidRequest, "\(what): \(describe(error))")
        } catch {
            throw TelexError(.invalidRequest, "\(what): \(error)")
        }
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ codingPath: [any CodingKey]) -> String {
            codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context):
            return "field '\(path(context.codingPath + [key]))' is missing"
        case .typeMismatch(let type, let context), .valueNotFound(let type, let context):
            let field = path(context.codingPath)
            return field.isEmpty ? "the body must be a JSON object" : "field '\(field)' must be \(Self.name(of: type))"
        case .dataCorrupted(let context):
            let field = path(context.codingPath)
            return field.isEmpty ? "the body is not valid JSON" : "field '\(field)' is not valid"
        @unknown default:
            return "the body cannot be read"
        }
    }

    private static func name(of type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Bool.Type: "true or false"
        case is Int.Type, is Int64.Type: "an integer"
        default: "a \(type)"
        }
    }
}

/// The HTTP status for each error code (README "Telex Console", errors).
enum ConsoleHTTPStatus {
    /// Console-only error codes (not TelexError codes).
    static let unauthenticated = "UNAUTHENTICATED"
    static let notFound = "NOT_FOUND"
    static let methodNotAllowed = "METHOD_NOT_ALLOWED"
    static let tooLarge = "TOO_LARGE"
    static let csrf = "CSRF"
    static let tooManyTails = "TOO_MANY_TAILS"
    /// Without logins, a request addressed to a DNS name (possible DNS rebinding).
    static let host = "HOST"

    static func of(_ code: TelexError.Code) -> HTTPResponseStatus {
        switch code {
        case .invalidRequest, .invalidTopic, .invalidEvent, .malformedFrame: .badRequest
        case .authenticationFailed, .handshakeRequired: .unauthorized
        case .notAuthorized: .forbidden
        case .topicNotFound: .notFound
        case .offsetOutOfRange: .rangeNotSatisfiable
        case .shuttingDown, .tooManyConnections, .tooManySubscriptions, .timeout: .serviceUnavailable
        default: .internalServerError
        }
    }
}

/// One answer, before the connection adds `Content-Length` and `Connection` (and the security headers, which
/// `ConsoleSecurityHeaders` adds to every response head).
struct ConsoleResponse: Sendable {
    var status: HTTPResponseStatus
    var headers: HTTPHeaders
    var body: [UInt8]
    /// Whether the connection closes after this answer (a body left unread, for instance).
    var closeConnection = false

    static let jsonContentType = "application/json; charset=utf-8"

    static func json(_ value: some Encodable, status: HTTPResponseStatus = .ok) -> ConsoleResponse {
        ConsoleResponse(
            status: status,
            headers: HTTPHeaders([("Content-Type", jsonContentType), ("Cache-Control", "no-store")]),
            body: ConsoleJSON.encode(value))
    }

    static func error(_ status: HTTPResponseStatus, code: String, _ message: String) -> ConsoleResponse {
        json(ErrorJSON(code: code, message: message), status: status)
    }

    static func error(_ error: TelexError) -> ConsoleResponse {
        self.error(ConsoleHTTPStatus.of(error.code), code: error.code.name, error.message)
    }

    static func noContent() -> ConsoleResponse {
        ConsoleResponse(status: .noContent, headers: HTTPHeaders([("Cache-Control", "no-store")]), body: [])
    }
}

/// Adds the console's security headers to every response head, including the 400 that NIO's protocol error handler
/// writes for a request it cannot parse. Sits just behind the response encoder.
final class ConsoleSecurityHeaders: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    static let headers: [(String, String)] = [
        ("Content-Security-Policy",
         "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            + "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("X-Frame-Options", "DENY"),
    ]

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .head(var head) = unwrapOutboundIn(data) else {
            context.write(data, promise: promise)
            return
        }
        for (name, value) in Self.headers { head.headers.replaceOrAdd(name: name, value: value) }
        context.write(wrapOutboundOut(.head(head)), promise: promise)
    }
}

/// Percent-decoding of paths and queries (RFC 3986; `+` is a space in application/x-www-form-urlencoded queries).
enum ConsolePercent {
    /// The decoded text, or nil when a `%` is not followed by two hex digits or the bytes are not UTF-8.
    static func decode(_ text: Substring, plusIsSpace: Bool) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            switch byte {
            case UInt8(ascii: "%"):
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue)
                else { return nil }
                bytes.append(high << 4 | low)
            case UInt8(ascii: "+") where plusIsSpace:
                bytes.append(UInt8(ascii: " "))
            default:
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// The parameters of a query string (the first of a repeated name wins), or `INVALID_REQUEST` naming the first
    /// part that is not percent-encoded UTF-8.
    static func parseQuery(_ query: Substring) -> Result<[String: String], TelexError> {
        var parameters: [String: String] = [:]
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = decode(parts[0], plusIsSpace: true),
                let value = parts.count > 1 ? decode(parts[1], plusIsSpace: true) : ""
            else {
                return .failure(TelexError(.invalidRequest,
                    "query parameter '\(pair)' is not valid percent-encoded UTF-8"))
            }
            if parameters[name] == nil { parameters[name] = value }
        }
        return .success(parameters)
    }
}
