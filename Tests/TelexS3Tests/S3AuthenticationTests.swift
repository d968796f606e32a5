import Foundation
import Logging
import NIOCore
import Testing

@testable import TelexS3

/// Against a moto_server that checks signatures (it recomputes each with botocore): every operation, signed by
/// `SigV4Signer`, is accepted with the right key, and wrong credentials are `.denied`.
@Suite("S3 client against moto_server checking signatures", .motoServer, .timeLimit(.minutes(1)))
struct S3AuthenticationTests {
    func makeSignedClient(_ accessKeyID: String, _ secret: String, bucket: String) throws -> S3Client {
        S3Client(
            configuration: S3Configuration(
                bucket: bucket, credentials: S3Credentials(accessKeyID: accessKeyID, secretAccessKey: secret),
                endpoint: try MotoServer.shared().endpoint
            ),
            logger: Logger(label: "telex.s3.tests")
        )
    }

    @Test func signedRequestsAreAcceptedAndWrongCredentialsDenied() async throws {
        let key = try await MotoServer.shared().requireAuthentication()
        let client = try makeSignedClient(key.accessKeyID, key.secretAccessKey, bucket: "signed")
        try await client.createBucket()
        try await client.checkBucket()

        // moto verifies against its decoded path and query, so it rejects botocore's own signatures of keys with
        // '+', '=' or non-ASCII and of a "/" in a list prefix (boto3 gets SignatureDoesNotMatch there too); the
        // vectors and the unauthenticated suite cover those.
        let keys = ["topics/world news/00.log", "topics/a~b/c-d_e.log", "topics/x//y.log", "p/z"]
        for (index, objectKey) in keys.enumerated() {
            _ = try await client.putObject(key: objectKey, bytes: ByteBuffer(bytes: patternBytes(index + 10)))
        }
        let listed = try await client.listObjects(prefix: "topics", maxKeysPerPage: 2)
        #expect(listed.count == 3)
        #expect(try await client.headObject(key: keys[1])?.size == 11)
        #expect(Array(buffer: try await client.getObject(key: keys[1], range: 2..<5)) == Array(patternBytes(11)[2..<5]))

        let bytes = patternBytes(3 << 20, seed: 3)
        let path = NSTemporaryDirectory() + "s3-signed-\(UUID().uuidString)"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        _ = try await client.putObject(key: "file.log", filePath: path, offset: 100, length: bytes.count - 100)
        #expect(Array(buffer: try await client.getObject(key: "file.log")) == Array(bytes[100...]))
        try await client.deleteObject(key: "file.log")

        let unknownKey = try makeSignedClient("AKIDUNKNOWN", "secret", bucket: "signed")
        let wrongSecret = try makeSignedClient(key.accessKeyID, "not-the-secret", bucket: "signed")
        for denied in [unknownKey, wrongSecret] {
            await #expect(performing: { try await denied.checkBucket() }, throws: { ($0 as? S3Error)?.kind == .denied })
        }
        await #expect {
            _ = try await unknownKey.putObject(key: "k", bytes: ByteBuffer(string: "x"))
        } throws: { error in
            guard let error = error as? S3Error else { return false }
            return error.kind == .denied && error.status == 403 && error.code == "InvalidAccessKeyId"
        }
        await #expect {
            _ = try await wrongSecret.getObject(key: keys[0])
        } throws: { error in
            guard let error = error as? S3Error else { return false }
            return error.kind == .denied && error.code == "SignatureDoesNotMatch"
                && !"\(error)".contains("not-the-secret")
        }
        for client in [client, unknownKey, wrongSecret] { try await client.shutdown() }
    }
}
