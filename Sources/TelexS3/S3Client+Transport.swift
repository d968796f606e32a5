import AsyncHTTPClient
import Foundation
import Glibc
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// One request as the client sends it; `key` names the object (or the listed prefix) in errors and logs.
struct S3Request {
    var operation: String
    var method: HTTPMethod
    var key: String?
    /// The object key to address, or nil for the bucket itself.
    var objectKey: String?
    var query: [(name: String, value: String)] = []
    var headers: [(name: String, value: String)] = []
    var body: HTTPClientRequest.Body?
    /// Bytes of `body`: each MiB adds a second to the request's deadline, so a large segment can upload on a slow
    /// link (at 1 MiB/s or faster) instead of failing at the same deadline every retry.
    var bodyLength = 0
    var payloadHash = SigV4Signer.emptyPayloadHash
    /// Statuses that are answers, not failures.
    var accept: Set<Int> = [200]
    /// The most body bytes a successful answer may have.
    var maxBodyBytes = 16 << 20
}

/// A store's answer with its body collected.
struct S3Response {
    var status: Int
    var headers: HTTPHeaders
    var body: ByteBuffer
}

extension S3Client {
    /// Signs and sends `request`; a status outside `accept` becomes an `S3Error` with the store's Code and
    /// Message, a transport failure an `.unavailable` one naming the endpoint.
    func send(_ request: S3Request) async throws(S3Error) -> S3Response {
        var path = "/" + configuration.bucket
        if let objectKey = request.objectKey { path += "/" + objectKey }
        let signed = signer.sign(
            method: request.method.rawValue, endpoint: configuration.endpoint, path: path, query: request.query,
            headers: request.headers, payloadHash: request.payloadHash, date: Date()
        )
        var http = HTTPClientRequest(url: signed.url)
        http.method = request.method
        for header in request.headers + signed.headers { http.headers.add(name: header.name, value: header.value) }
        if let body = request.body { http.body = body }

        let started = ContinuousClock.now
        let response: HTTPClientResponse
        let body: ByteBuffer
        do {
            let timeout = configuration.requestTimeout + .seconds(request.bodyLength >> 20)
            response = try await httpClient.execute(http, timeout: TimeAmount(timeout), logger: logger)
            let accepted = request.accept.contains(Int(response.status.code))
            body = try await response.body.collect(upTo: accepted ? request.maxBodyBytes : 1 << 20)
        } catch let error as NIOTooManyBytesError {
            throw failure(request, .invalidResponse, status: nil, detail: "answer larger than expected: \(error)")
        } catch {
            logger.debug(
                "S3 request failed",
                metadata: [
                    "s3.operation": "\(request.operation)", "s3.key": "\(request.key ?? "")",
                    "error": "\(Self.describeTransportError(error))",
                ]
            )
            if let fileError = error as? FileRangeError {
                throw failure(request, .invalidResponse, status: nil, detail: fileError.description)
            }
            throw failure(request, .unavailable, status: nil, detail: Self.describeTransportError(error))
        }
        let status = Int(response.status.code)
        logger.debug(
            "S3 request",
            metadata: [
                "s3.operation": "\(request.operation)", "s3.key": "\(request.key ?? "")", "s3.status": "\(status)",
                "s3.bytes": "\(body.readableBytes)", "s3.duration": "\(ContinuousClock.now - started)",
            ]
        )
        guard request.accept.contains(status) else {
            let parsed = S3XML.parseError(String(buffer: body))
            var error = failure(request, S3Error.kind(forStatus: status), status: status)
            error.code = parsed?.code
            error.storeMessage = parsed?.message
            if parsed == nil {
                error.detail = Self.statusExplanation(status, isBucket: request.objectKey == nil)
            }
            throw error
        }
        return S3Response(status: status, headers: response.headers, body: body)
    }

    func failure(
        _ request: S3Request, _ kind: S3Error.Kind, status: Int?, detail: String? = nil
    ) -> S3Error {
        S3Error(
            kind, operation: request.operation, bucket: configuration.bucket, key: request.key,
            endpoint: configuration.endpointName, status: status, detail: detail
        )
    }

    /// Words for a status whose answer had no XML error body (HEAD answers never have one).
    static func statusExplanation(_ status: Int, isBucket: Bool) -> String? {
        switch status {
        case 404: isBucket ? "(the bucket does not exist)" : "(no such key, or no such bucket)"
        case 403: "(access denied: check the credentials and what they are allowed)"
        case 301: "(the bucket is in another region: check the configured region and endpoint)"
        default: nil
        }
    }

    /// A transport failure in a few words: "connection refused", "connect timed out after 5 s".
    static func describeTransportError(_ error: any Error) -> String {
        if let error = error as? HTTPClientError {
            switch error {
            case .connectTimeout: return "connect timed out"
            case .deadlineExceeded: return "no complete answer within the request timeout"
            case .readTimeout: return "the store stopped answering (read timeout)"
            case .remoteConnectionClosed: return "the store closed the connection before answering"
            case .cancelled: return "cancelled"
            default: return "\(error)"
            }
        }
        if let error = error as? NIOConnectionError {
            if let first = error.connectionErrors.first { return describeTransportError(first.error) }
            if let dnsError = error.dnsAError ?? error.dnsAAAAError { return "cannot resolve host: \(dnsError)" }
            return "\(error)"
        }
        if let error = error as? IOError { return String(cString: strerror(error.errnoCode)).lowercased() }
        if let error = error as? ChannelError, case .connectTimeout = error { return "connect timed out" }
        return "\(error)"
    }
}
