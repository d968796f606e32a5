import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// The S3 API over async-http-client, for one bucket of S3 or an S3-compatible store (MinIO, Ceph, moto):
/// Signature V4, path-style requests, confirmed uploads. Knows nothing of Telex's logs.
///
/// ```swift
/// let location = try S3Location(parsing: "s3://news-archive/telex")
/// let client = S3Client(
///     configuration: S3Configuration(
///         bucket: location.bucket, credentials: try S3Credentials.fromEnvironment(),
///         endpoint: URL(string: "http://127.0.0.1:9000")),
///     logger: logger)
/// try await client.checkBucket()  // .notFound: no bucket; .denied: bad credentials; .unavailable: unreachable
/// let stored = try await client.putObject(
///     key: location.objectKey("topics/news/00000000000000000000.r0.log"), filePath: path, offset: 0, length: size)
/// let firstMiB = try await client.getObject(key: location.objectKey("topics/news/..."), range: 0..<(1 << 20))
/// try await client.shutdown()
/// ```
/// Every operation throws `S3Error`, whose message names the operation, `s3://bucket/key`, the endpoint, the
/// status and the store's own Code and Message. Credentials and the Authorization header are never logged.
public final class S3Client: Sendable {
    public let configuration: S3Configuration
    let signer: SigV4Signer
    let httpClient: HTTPClient
    let logger: Logger
    /// Chunk size of file hashing and upload bodies.
    static let fileChunkBytes = 1 << 20

    /// A client with its own connection pool on `eventLoopGroup`; call `shutdown()` when done.
    public init(
        configuration: S3Configuration, logger: Logger,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.configuration = configuration
        self.signer = SigV4Signer(credentials: configuration.credentials, region: configuration.region)
        self.logger = logger
        var http = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(
                connect: TimeAmount(configuration.connectTimeout), read: TimeAmount(configuration.requestTimeout)
            )
        )
        // Fail at once when the store is down: callers (the archiver) retry with their own backoff.
        http.connectionPool.retryConnectionEstablishment = false
        self.httpClient = HTTPClient(
            eventLoopGroup: eventLoopGroup, configuration: http, backgroundActivityLogger: logger
        )
    }

    /// Closes the connections and waits for them; the client cannot be used afterwards.
    public func shutdown() async throws {
        try await httpClient.shutdown()
    }

    // A client dropped without `shutdown()` (a test that threw, say) closes its connections in the background
    // instead of tripping async-http-client's debug-build trap; after `shutdown()` this is a no-op.
    deinit {
        httpClient.shutdown { _ in }
    }

    /// `s3://bucket at ENDPOINT`, for logs.
    public var displayName: String { "s3://\(configuration.bucket) at \(configuration.endpointName)" }

    // MARK: - Objects

    /// Stores `bytes` as `key`, confirmed: the store checks Content-MD5, the client checks the ETag.
    public func putObject(
        key: String, bytes: ByteBuffer, metadata: [String: String] = [:]
    ) async throws(S3Error) -> S3Object {
        try await put(
            key: key, body: .bytes(bytes), length: bytes.readableBytes, sha256: Digest.sha256Hex(bytes),
            md5: Digest.md5(bytes), metadata: metadata
        )
    }

    /// Stores `length` bytes of the file at `filePath` from `offset` as `key`, without holding them in memory:
    /// a first pass hashes the range (SHA-256 for the signature, MD5 for Content-MD5), a second streams it. If
    /// the bytes change between the passes the store rejects the upload (BadDigest) and nothing is replaced.
    public func putObject(
        key: String, filePath: String, offset: Int, length: Int, metadata: [String: String] = [:]
    ) async throws(S3Error) -> S3Object {
        let request = S3Request(operation: "PUT", method: .PUT, key: key, objectKey: key)
        let file: FileDescriptorBox
        let digests: (sha256: String, md5: Data)
        do {
            file = try await FileDescriptorBox.open(filePath)
            digests = try await hashFileRange(file, offset: offset, length: length, chunkSize: Self.fileChunkBytes)
        } catch {
            throw failure(request, .invalidResponse, status: nil, detail: "\(error)")
        }
        let chunks = FileRangeChunks(file: file, offset: offset, length: length, chunkSize: Self.fileChunkBytes)
        return try await put(
            key: key, body: .stream(chunks, length: .known(Int64(length))), length: length,
            sha256: digests.sha256, md5: digests.md5, metadata: metadata,
            source: "the bytes of \(filePath) (offset \(offset), \(length) bytes)"
        )
    }

    /// Sends a PUT whose body has the given digests. `source` names where the bytes come from when they can
    /// change under the upload: a store that checks Content-MD5 rejects changed bytes (BadDigest), one that does
    /// not (moto) answers with the MD5 of what it received as ETag, which the check below catches.
    func put(
        key: String, body: HTTPClientRequest.Body, length: Int, sha256: String, md5: Data,
        metadata: [String: String], source: String? = nil
    ) async throws(S3Error) -> S3Object {
        var request = S3Request(operation: "PUT", method: .PUT, key: key, objectKey: key)
        request.headers = [("Content-MD5", md5.base64EncodedString())]
        for (name, value) in metadata.sorted(by: { $0.key < $1.key }) {
            request.headers.append(("x-amz-meta-\(name.lowercased())", value))
        }
        request.body = body
        request.bodyLength = length
        request.payloadHash = sha256
        let response: S3Response
        do {
            response = try await send(request)
        } catch  where source != nil && (error.code == "BadDigest" || error.code == "XAmzContentSHA256Mismatch") {
            var changed = error
            changed.detail = "\(source!) changed during the upload"
            throw changed
        }
        let md5Hex = SigV4Signer.hex(md5)
        let etag = response.headers.first(name: "etag").map(S3XML.unquoteETag)
        if let etag, Self.looksLikeMD5(etag), etag.lowercased() != md5Hex {
            let what = source.map { "\($0) changed during the upload: " } ?? ""
            throw failure(
                request, .invalidResponse, status: response.status,
                detail:
                    "\(what)the store's ETag \(etag) is not the MD5 \(md5Hex) of the \(length) bytes meant to be sent"
            )
        }
        return S3Object(key: key, size: length, etag: etag ?? md5Hex, metadata: metadata)
    }

    /// The bytes of `key` in `range`, or the whole object when `range` is nil. The answer is checked against
    /// what was asked (status, Content-Range, length); a range past the object's end is an `.invalidResponse`.
    public func getObject(key: String, range: Range<Int>? = nil) async throws(S3Error) -> ByteBuffer {
        var request = S3Request(operation: range == nil ? "GET" : "GET range", method: .GET, key: key, objectKey: key)
        if let range {
            if range.isEmpty { return ByteBuffer() }
            request.headers = [("Range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)")]
            request.accept = [206]
            request.maxBodyBytes = range.count
        } else {
            request.maxBodyBytes = Int.max
        }
        let response = try await send(request)
        let expected: Int?
        if let range {
            let contentRange = response.headers.first(name: "content-range") ?? ""
            guard contentRange.hasPrefix("bytes \(range.lowerBound)-\(range.upperBound - 1)/") else {
                throw failure(
                    request, .invalidResponse, status: response.status,
                    detail: "asked bytes \(range.lowerBound)-\(range.upperBound - 1), the store sent '\(contentRange)'"
                )
            }
            expected = range.count
        } else {
            expected = response.headers.first(name: "content-length").flatMap { Int($0) }
        }
        if let expected, response.body.readableBytes != expected {
            throw failure(
                request, .invalidResponse, status: response.status,
                detail: "expected \(expected) bytes, received \(response.body.readableBytes)"
            )
        }
        return response.body
    }

    /// The size, ETag and metadata of `key`, or nil when it does not exist. (A HEAD answer has no body: in a
    /// missing bucket it is the same 404 as a missing key; `checkBucket()` tells them apart.)
    public func headObject(key: String) async throws(S3Error) -> S3Object? {
        var request = S3Request(operation: "HEAD", method: .HEAD, key: key, objectKey: key)
        request.accept = [200, 404]
        let response = try await send(request)
        if response.status == 404 { return nil }
        guard let size = response.headers.first(name: "content-length").flatMap({ Int($0) }) else {
            throw failure(request, .invalidResponse, status: response.status, detail: "no Content-Length")
        }
        var metadata: [String: String] = [:]
        for (name, value) in response.headers {
            let lowered = name.lowercased()
            if lowered.hasPrefix("x-amz-meta-") { metadata[String(lowered.dropFirst(11))] = value }
        }
        let etag = response.headers.first(name: "etag").map(S3XML.unquoteETag)
        return S3Object(key: key, size: size, etag: etag, metadata: metadata)
    }

    /// Every object whose key starts with `prefix`, in key order (ListObjectsV2, following continuation tokens).
    public func listObjects(
        prefix: String, startAfter: String? = nil, maxKeysPerPage: Int = 1000
    ) async throws(S3Error) -> [S3Object] {
        var objects: [S3Object] = []
        var token: String?
        repeat {
            var request = S3Request(operation: "LIST", method: .GET, key: prefix, objectKey: nil)
            request.query = [("list-type", "2"), ("prefix", prefix), ("max-keys", "\(maxKeysPerPage)")]
            // Only keys after it (in UTF-8 order); the continuation token carries it on to later pages.
            if let startAfter, token == nil { request.query.append(("start-after", startAfter)) }
            if let token { request.query.append(("continuation-token", token)) }
            let response = try await send(request)
            let page: S3XML.ListPage
            do {
                page = try S3XML.parseListPage(String(buffer: response.body))
            } catch {
                throw failure(request, .invalidResponse, status: response.status, detail: error.message)
            }
            objects += page.objects.map { S3Object(key: $0.key, size: $0.size, etag: $0.etag) }
            token = page.isTruncated ? page.nextContinuationToken : nil
        } while token != nil
        return objects
    }

    /// Removes `key`; no error when it is already gone.
    public func deleteObject(key: String) async throws(S3Error) {
        var request = S3Request(operation: "DELETE", method: .DELETE, key: key, objectKey: key)
        request.accept = [200, 204, 404]
        _ = try await send(request)
    }

    // MARK: - The bucket

    /// Creates the bucket (in the configured region); no error when it exists already and is ours.
    public func createBucket() async throws(S3Error) {
        var request = S3Request(operation: "CREATE bucket", method: .PUT, key: nil, objectKey: nil)
        if configuration.region != "us-east-1" {
            let xml =
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                + "<LocationConstraint>\(configuration.region)</LocationConstraint></CreateBucketConfiguration>"
            request.body = .bytes(ByteBuffer(string: xml))
            request.payloadHash = Digest.sha256Hex(ByteBuffer(string: xml))
        }
        do {
            _ = try await send(request)
        } catch  where error.code == "BucketAlreadyOwnedByYou" {
            return
        }
    }

    /// Checks that the bucket exists and the credentials may use it: `.notFound` for a missing bucket,
    /// `.denied` for rejected credentials, `.unavailable` when the store cannot be reached.
    public func checkBucket() async throws(S3Error) {
        _ = try await send(S3Request(operation: "HEAD bucket", method: .HEAD, key: nil, objectKey: nil))
    }

    static func looksLikeMD5(_ etag: String) -> Bool {
        etag.utf8.count == 32 && etag.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }
}
