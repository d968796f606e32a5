import Foundation
import Logging
import NIOCore
import Testing

@testable import TelexS3

/// A client for `bucket` at `endpoint` (moto accepts any credentials; the signature is tested by the vectors).
func makeClient(_ endpoint: URL, bucket: String) -> S3Client {
    S3Client(
        configuration: S3Configuration(
            bucket: bucket, credentials: S3Credentials(accessKeyID: "testing", secretAccessKey: "testing"),
            endpoint: endpoint, connectTimeout: .seconds(2), requestTimeout: .seconds(20)
        ),
        logger: Logger(label: "telex.s3.tests")
    )
}

/// A fresh bucket name per test, so the suite's tests run in parallel on one server.
func uniqueBucket(_ name: String) -> String {
    "\(name)-\(UUID().uuidString.lowercased().prefix(8))"
}

/// Deterministic bytes that differ at every offset (a misplaced range shows).
func patternBytes(_ count: Int, seed: UInt32 = 1) -> [UInt8] {
    var state = seed
    return (0..<count).map { _ in
        state = state &* 1_664_525 &+ 1_013_904_223
        return UInt8(truncatingIfNeeded: state >> 24)
    }
}

func withClient<T>(
    bucket: String, create: Bool = true, _ body: (S3Client) async throws -> T
) async throws -> T {
    let client = makeClient(try MotoServer.shared().endpoint, bucket: bucket)
    do {
        if create { try await client.createBucket() }
        let result = try await body(client)
        try await client.shutdown()
        return result
    } catch {
        try? await client.shutdown()
        throw error
    }
}

@Suite("S3 client against moto_server", .motoServer, .timeLimit(.minutes(1)))
struct S3ClientTests {
    @Test func putGetHeadDeleteBytes() async throws {
        try await withClient(bucket: uniqueBucket("bytes")) { client in
            try await client.createBucket()  // again: already ours, not an error
            try await client.checkBucket()
            let bytes = patternBytes(100_000)
            let stored = try await client.putObject(
                key: "topics/news/a.log", bytes: ByteBuffer(bytes: bytes), metadata: ["Rewrites": "2"]
            )
            let md5 = SigV4Signer.hex(Digest.md5(ByteBuffer(bytes: bytes)))
            #expect(stored == S3Object(key: "topics/news/a.log", size: 100_000, etag: md5, metadata: ["Rewrites": "2"]))

            #expect(Array(buffer: try await client.getObject(key: "topics/news/a.log")) == bytes)
            #expect(
                Array(buffer: try await client.getObject(key: "topics/news/a.log", range: 10..<20))
                    == Array(bytes[10..<20]))
            #expect(
                Array(buffer: try await client.getObject(key: "topics/news/a.log", range: 99_999..<100_000)) == [
                    bytes[99_999]
                ])
            #expect(try await client.getObject(key: "topics/news/a.log", range: 5..<5).readableBytes == 0)

            let head = try #require(try await client.headObject(key: "topics/news/a.log"))
            #expect(head.size == 100_000)
            #expect(head.etag == md5)
            #expect(head.metadata == ["rewrites": "2"])
            #expect(try await client.headObject(key: "topics/news/absent") == nil)

            // A range past the end is not what was asked.
            await #expect {
                _ = try await client.getObject(key: "topics/news/a.log", range: 99_990..<100_010)
            } throws: { ($0 as? S3Error)?.kind == .invalidResponse }

            try await client.deleteObject(key: "topics/news/a.log")
            try await client.deleteObject(key: "topics/news/a.log")  // already gone: fine
            #expect(try await client.headObject(key: "topics/news/a.log") == nil)
            await #expect {
                _ = try await client.getObject(key: "topics/news/a.log")
            } throws: { error in
                guard let error = error as? S3Error else { return false }
                return error.kind == .notFound && error.status == 404 && error.code == "NoSuchKey"
                    && "\(error)".contains(
                        "GET s3://\(client.configuration.bucket)/topics/news/a.log at http://127.0.0.1:")
            }
        }
    }

    @Test func putFileStreamsWholeFilesAndRanges() async throws {
        let bytes = patternBytes(5 << 20 | 12345, seed: 7)
        let path = NSTemporaryDirectory() + "s3-put-\(UUID().uuidString)"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }

        try await withClient(bucket: uniqueBucket("files")) { client in
            let whole = try await client.putObject(key: "whole.log", filePath: path, offset: 0, length: bytes.count)
            #expect(whole.size == bytes.count)
            #expect(whole.etag == SigV4Signer.hex(Digest.md5(ByteBuffer(bytes: bytes))))
            #expect(Array(buffer: try await client.getObject(key: "whole.log")) == bytes)

            let range = 1_000_003..<(3 << 20)
            let part = try await client.putObject(
                key: "part.log", filePath: path, offset: range.lowerBound, length: range.count
            )
            #expect(part.size == range.count)
            #expect(Array(buffer: try await client.getObject(key: "part.log")) == Array(bytes[range]))
            #expect(
                Array(buffer: try await client.getObject(key: "part.log", range: (1 << 20)..<((1 << 20) + 100)))
                    == Array(bytes[(range.lowerBound + (1 << 20))..<(range.lowerBound + (1 << 20) + 100)])
            )
            #expect(try await client.headObject(key: "part.log")?.size == range.count)

            // A range beyond the file's end is a local error naming the file, and nothing is stored.
            await #expect {
                _ = try await client.putObject(key: "beyond.log", filePath: path, offset: bytes.count - 10, length: 20)
            } throws: { "\($0)".contains(path) && "\($0)".contains("PUT s3://") }
            #expect(try await client.headObject(key: "beyond.log") == nil)
            await #expect {
                _ = try await client.putObject(key: "x", filePath: path + ".absent", offset: 0, length: 1)
            } throws: { "\($0)".contains("cannot open") }
        }
    }

    @Test func bytesChangedAfterHashingAreRejected() async throws {
        try await withClient(bucket: uniqueBucket("digest")) { client in
            // What a file changing between the hashing pass and the upload looks like: digests of other bytes.
            // S3 answers BadDigest; moto takes the bytes, and its ETag (their MD5) gives the change away.
            let hashed = ByteBuffer(string: "the bytes hashed")
            let sent = ByteBuffer(string: "the bytes sent!!")
            let rejection: S3Error?
            do throws(S3Error) {
                _ = try await client.put(
                    key: "k", body: .bytes(sent), length: sent.readableBytes, sha256: Digest.sha256Hex(hashed),
                    md5: Digest.md5(hashed), metadata: [:], source: "the bytes of /data/f (offset 0, 16 bytes)"
                )
                rejection = nil
            } catch {
                rejection = error
            }
            let error = try #require(rejection, "a changed upload was accepted")
            #expect(error.kind == .invalidResponse)
            #expect("\(error)".contains("the bytes of /data/f (offset 0, 16 bytes) changed during the upload"))
        }
    }

    @Test func aFileShrinkingUnderTheUploadStopsIt() async throws {
        let path = NSTemporaryDirectory() + "s3-shrink-\(UUID().uuidString)"
        try Data(patternBytes(3 << 20)).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        try await withClient(bucket: uniqueBucket("shrink")) { client in
            // The second pass finds fewer bytes than the first hashed: the body stream fails, nothing is stored.
            let file = try await FileDescriptorBox.open(path)
            let chunks = FileRangeChunks(file: file, offset: 1 << 20, length: 3 << 20, chunkSize: 1 << 20)
            let failure: S3Error?
            do throws(S3Error) {
                _ = try await client.put(
                    key: "k", body: .stream(chunks, length: .known(Int64(3 << 20))), length: 3 << 20,
                    sha256: SigV4Signer.unsignedPayload, md5: Digest.md5(ByteBuffer()), metadata: [:]
                )
                failure = nil
            } catch {
                failure = error
            }
            let error = try #require(failure, "a short body was accepted")
            #expect(error.kind == .invalidResponse)
            #expect("\(error)".contains("file \(path) ends at offset \(3 << 20)"))
            #expect(try await client.headObject(key: "k") == nil)
        }
    }

    @Test func listFollowsContinuationTokens() async throws {
        try await withClient(bucket: uniqueBucket("list")) { client in
            let keys = [
                "p/topics/a b/00.log", "p/topics/a b/01.log", "p/topics/nyheter/räksmörgås & <co>.log",
                "p/topics/日本/x+y=z~.log", "p/zz", "q/outside",
            ]
            for (index, key) in keys.enumerated() {
                _ = try await client.putObject(key: key, bytes: ByteBuffer(bytes: patternBytes(index + 1)))
            }
            let listed = try await client.listObjects(prefix: "p/", maxKeysPerPage: 2)
            #expect(listed.map(\.key) == Array(keys.prefix(5)).sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) })
            #expect(listed.map(\.size) == listed.map { keys.firstIndex(of: $0.key)! + 1 })
            #expect(listed.allSatisfy { $0.etag?.count == 32 })

            #expect(try await client.listObjects(prefix: "").count == keys.count)
            #expect(try await client.listObjects(prefix: "none/").isEmpty)
            // start-after on the first page, carried by the continuation token to the others.
            let after = try await client.listObjects(prefix: "p/", startAfter: "p/topics/a b/00.log", maxKeysPerPage: 1)
            #expect(after.map(\.key) == Array(listed.map(\.key).dropFirst()))
        }
    }

    @Test func missingBucketIsNotFoundAndNamed() async throws {
        let bucket = uniqueBucket("missing")
        try await withClient(bucket: bucket, create: false) { client in
            let isMissingBucket = { (error: any Error) -> Bool in
                guard let error = error as? S3Error else { return false }
                return error.kind == .notFound && "\(error)".contains("s3://\(bucket)")
            }
            await #expect(performing: { _ = try await client.listObjects(prefix: "") }, throws: isMissingBucket)
            await #expect(performing: { try await client.checkBucket() }, throws: isMissingBucket)
            await #expect(
                performing: { _ = try await client.getObject(key: "k", range: 0..<1) }, throws: isMissingBucket)
            await #expect {
                _ = try await client.putObject(key: "k", bytes: ByteBuffer(string: "x"))
            } throws: { "\($0)".hasSuffix("failed: 404 NoSuchBucket (The specified bucket does not exist)") }
        }
    }
}

@Suite("S3 client without a store", .timeLimit(.minutes(1)))
struct S3ClientUnreachableTests {
    @Test func nothingListeningIsUnavailableNamingTheEndpoint() async throws {
        // Port 9 on loopback: nothing listens there in the test environment.
        let client = makeClient(URL(string: "http://127.0.0.1:9")!, bucket: "archive")
        await #expect {
            try await client.checkBucket()
        } throws: { error in
            guard let error = error as? S3Error else { return false }
            return error.kind == .unavailable && error.status == nil
                && "\(error)" == "HEAD bucket s3://archive at http://127.0.0.1:9 could not connect: connection refused"
        }
        await #expect {
            _ = try await client.getObject(key: "topics/t/x.log")
        } throws: { ($0 as? S3Error)?.kind == .unavailable }
        try await client.shutdown()
    }
}

@Suite("S3 client across a store restart", .motoServer, .timeLimit(.minutes(1)))
struct S3ClientRestartTests {
    @Test func operationsFailWhileStoppedAndWorkAfterRestart() async throws {
        let server = try MotoServer.shared()
        let client = makeClient(server.endpoint, bucket: "restart")
        try await client.createBucket()
        _ = try await client.putObject(key: "before", bytes: ByteBuffer(string: "1"))

        await server.stop()
        await #expect {
            _ = try await client.putObject(key: "during", bytes: ByteBuffer(string: "2"))
        } throws: { error in
            guard let error = error as? S3Error else { return false }
            return error.kind == .unavailable && "\(error)".contains("at \(server.endpoint.absoluteString)")
        }

        try await server.start()
        try await client.createBucket()  // moto keeps its data in memory: the restart lost the bucket
        _ = try await client.putObject(key: "after", bytes: ByteBuffer(string: "3"))
        #expect(String(buffer: try await client.getObject(key: "after")) == "3")
        try await client.shutdown()
    }
}
