/// A failed S3 operation, with everything needed to act on it: what was asked of which store, and what it said.
/// The message reads like `PUT s3://b/k at http://127.0.0.1:9000 failed: 404 NoSuchBucket (The specified
/// bucket does not exist)` or `GET s3://b/k at http://127.0.0.1:9 could not connect: connection refused`.
public struct S3Error: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// 404: the key or the bucket does not exist.
        case notFound
        /// 403: credentials rejected or not allowed; retrying will not help until the configuration changes.
        case denied
        /// Connection failure, timeout or 5xx: retry later.
        case unavailable
        /// The store answered, but not as expected (other status, bad XML, wrong size, checksum mismatch).
        case invalidResponse
    }

    public var kind: Kind
    /// The operation, e.g. "PUT", "GET range", "LIST", "HEAD bucket".
    public var operation: String
    public var bucket: String
    /// The key, or nil for bucket operations (a LIST names its prefix here).
    public var key: String?
    /// The endpoint URL, as configured.
    public var endpoint: String
    /// The HTTP status, when the store answered.
    public var status: Int?
    /// The store's error Code and Message from its XML error body, when there was one.
    public var code: String?
    public var storeMessage: String?
    /// What went wrong when the status and code do not say it (a connection error, a size mismatch).
    public var detail: String?

    public init(
        _ kind: Kind, operation: String, bucket: String, key: String?, endpoint: String, status: Int? = nil,
        code: String? = nil, storeMessage: String? = nil, detail: String? = nil
    ) {
        self.kind = kind
        self.operation = operation
        self.bucket = bucket
        self.key = key
        self.endpoint = endpoint
        self.status = status
        self.code = code
        self.storeMessage = storeMessage
        self.detail = detail
    }

    /// `s3://bucket/key` or `s3://bucket`.
    public var location: String { key.map { "s3://\(bucket)/\($0)" } ?? "s3://\(bucket)" }

    public var description: String {
        let subject = "\(operation) \(location) at \(endpoint)"
        guard let status else { return "\(subject) could not connect: \(detail ?? "unknown error")" }
        var text = "\(subject) failed: \(status)"
        if let code { text += " \(code)" }
        if let storeMessage, !storeMessage.isEmpty { text += " (\(storeMessage))" }
        if let detail { text += code == nil && storeMessage == nil ? " \(detail)" : ": \(detail)" }
        return text
    }

    /// The kind an HTTP error status maps to.
    static func kind(forStatus status: Int) -> Kind {
        switch status {
        case 403: .denied
        case 404: .notFound
        case 500...599: .unavailable
        default: .invalidResponse
        }
    }
}
