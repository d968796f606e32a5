import Foundation

/// Where and how an `S3Client` talks to its store. Requests are always path-style (`ENDPOINT/BUCKET/KEY`), which
/// every S3-compatible store (MinIO, Ceph, moto) accepts.
public struct S3Configuration: Sendable {
    /// The bucket every operation addresses.
    public var bucket: String
    /// The store's base URL; default `https://s3.REGION.amazonaws.com`.
    public var endpoint: URL
    /// The signing region; default us-east-1.
    public var region: String
    public var credentials: S3Credentials
    /// How long a connection attempt may take; default 5 s.
    public var connectTimeout: Duration
    /// How long one request may take until its answer starts, plus a second per MiB of request body (an upload);
    /// a body being received is bounded by the same time without a byte (read timeout). Default 60 s.
    public var requestTimeout: Duration

    public init(
        bucket: String,
        credentials: S3Credentials,
        region: String = "us-east-1",
        endpoint: URL? = nil,
        connectTimeout: Duration = .seconds(5),
        requestTimeout: Duration = .seconds(60)
    ) {
        self.bucket = bucket
        self.credentials = credentials
        self.region = region
        self.endpoint = endpoint ?? URL(string: "https://s3.\(region).amazonaws.com")!
        self.connectTimeout = connectTimeout
        self.requestTimeout = requestTimeout
    }

    /// The endpoint as written in messages, without a trailing slash.
    var endpointName: String {
        var text = endpoint.absoluteString
        while text.hasSuffix("/") { text.removeLast() }
        return text
    }
}

/// An object as S3 describes it (HEAD, LIST, and the answer to a PUT).
public struct S3Object: Sendable, Equatable {
    public var key: String
    public var size: Int
    /// The entity tag without quotes (a single-part upload's: the hex MD5 of the bytes).
    public var etag: String?
    /// The user metadata (`x-amz-meta-NAME` headers, names lowercased); HEAD fills it, LIST does not.
    public var metadata: [String: String]

    public init(key: String, size: Int, etag: String?, metadata: [String: String] = [:]) {
        self.key = key
        self.size = size
        self.etag = etag
        self.metadata = metadata
    }
}
