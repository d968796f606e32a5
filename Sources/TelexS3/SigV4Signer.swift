import Crypto
import Foundation

/// AWS Signature Version 4 for S3 requests (header authorization), with no I/O: the client gives it a request
/// and sends the headers it returns. Checked byte for byte against botocore's S3 signer and AWS's own example
/// (Tests/TelexS3Tests/Fixtures/sigv4-vectors.json, made by Scripts/sigv4-vectors.py).
public struct SigV4Signer: Sendable {
    /// The `x-amz-content-sha256` value of a request whose body is not hashed.
    public static let unsignedPayload = "UNSIGNED-PAYLOAD"
    /// The SHA-256 hex of an empty body.
    public static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    public let credentials: S3Credentials
    public let region: String
    public let service: String

    public init(credentials: S3Credentials, region: String, service: String = "s3") {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// A signed request: what to send, and the intermediate strings (for tests and debugging, never logged).
    public struct SignedRequest: Sendable {
        /// The URL to send: the endpoint, the encoded path and the canonical (sorted, encoded) query.
        public var url: String
        /// The headers to add to the request's own: host, x-amz-date, x-amz-content-sha256,
        /// x-amz-security-token (with a session token) and authorization.
        public var headers: [(name: String, value: String)]
        public var canonicalRequest: String
        public var stringToSign: String
        public var authorization: String
    }

    /// Signs a request. `path` is the raw, unencoded path ("/bucket/key"); `endpoint` gives the scheme, host and
    /// port ("http://127.0.0.1:9000"); every header in `headers` is signed; `payloadHash` is the body's SHA-256
    /// hex or `unsignedPayload`.
    public func sign(
        method: String,
        endpoint: URL,
        path: String,
        query: [(name: String, value: String)] = [],
        headers: [(name: String, value: String)] = [],
        payloadHash: String,
        date: Date
    ) -> SignedRequest {
        let timestamp = Self.timestamp(date)
        let day = String(timestamp.prefix(8))
        let host = Self.hostHeader(endpoint)
        let encodedPath = Self.uriEncode(path.hasPrefix("/") ? path : "/" + path, keepSlash: true)
        let canonicalQuery =
            query
            .map { (Self.uriEncode($0.name, keepSlash: false), Self.uriEncode($0.value, keepSlash: false)) }
            .sorted { $0.0 == $1.0 ? Self.precedes($0.1, $1.1) : Self.precedes($0.0, $1.0) }
            .map { "\($0.0)=\($0.1)" }
            .joined(separator: "&")

        var added: [(name: String, value: String)] = [
            ("host", host), ("x-amz-date", timestamp), ("x-amz-content-sha256", payloadHash),
        ]
        if let token = credentials.sessionToken { added.append(("x-amz-security-token", token)) }

        // Headers of one name are joined with commas in the order given; names sort bytewise.
        var canonicalHeaders: [String: [String]] = [:]
        for header in headers + added {
            let name = header.name.trimmingCharacters(in: .whitespaces).lowercased()
            canonicalHeaders[name, default: []].append(Self.trimAll(header.value))
        }
        let names = canonicalHeaders.keys.sorted(by: Self.precedes)
        let signedHeaders = names.joined(separator: ";")
        let headerBlock = names.map { "\($0):\(canonicalHeaders[$0]!.joined(separator: ","))\n" }.joined()

        let canonicalRequest = [
            method.uppercased(), encodedPath, canonicalQuery, headerBlock, signedHeaders, payloadHash,
        ].joined(separator: "\n")
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = [
            "AWS4-HMAC-SHA256", timestamp, scope, Self.hex(SHA256.hash(data: Data(canonicalRequest.utf8))),
        ].joined(separator: "\n")

        var key = SymmetricKey(data: Data("AWS4\(credentials.secretAccessKey)".utf8))
        for part in [day, region, service, "aws4_request"] {
            key = SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: Data(part.utf8), using: key)))
        }
        let signature = Self.hex(HMAC<SHA256>.authenticationCode(for: Data(stringToSign.utf8), using: key))
        let authorization =
            "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), "
            + "SignedHeaders=\(signedHeaders), Signature=\(signature)"
        added.append(("authorization", authorization))

        var url = "\(endpoint.scheme ?? "https")://\(host)\(encodedPath)"
        if !canonicalQuery.isEmpty { url += "?" + canonicalQuery }
        return SignedRequest(
            url: url, headers: added, canonicalRequest: canonicalRequest, stringToSign: stringToSign,
            authorization: authorization
        )
    }

    /// The Host header of `endpoint`: lowercased host, with the port only when it is not the scheme's default.
    static func hostHeader(_ endpoint: URL) -> String {
        var host = (endpoint.host ?? "").lowercased()
        if host.contains(":") && !host.hasPrefix("[") { host = "[\(host)]" }
        if let port = endpoint.port {
            let defaultPort = endpoint.scheme?.lowercased() == "http" ? 80 : 443
            if port != defaultPort { host += ":\(port)" }
        }
        return host
    }

    /// RFC 3986 percent-encoding of the UTF-8 bytes: unreserved characters kept, "/" kept in paths only.
    static func uriEncode(_ text: String, keepSlash: Bool) -> String {
        let hexDigits = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."),
                UInt8(ascii: "~"):
                out.append(byte)
            case UInt8(ascii: "/") where keepSlash:
                out.append(byte)
            default:
                out.append(UInt8(ascii: "%"))
                out.append(hexDigits[Int(byte >> 4)])
                out.append(hexDigits[Int(byte & 0x0F)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Trims the value and turns each run of whitespace into one space (SigV4's Trimall).
    static func trimAll(_ value: String) -> String {
        value.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" })
            .joined(separator: " ")
    }

    /// `yyyyMMdd'T'HHmmss'Z'` in UTC.
    static func timestamp(_ date: Date) -> String {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(parts.tm_year + 1900)\(two(parts.tm_mon + 1))\(two(parts.tm_mday))T"
            + "\(two(parts.tm_hour))\(two(parts.tm_min))\(two(parts.tm_sec))Z"
    }

    static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        let hexDigits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in digest {
            out.append(hexDigits[Int(byte >> 4)])
            out.append(hexDigits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func precedes(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }
}
