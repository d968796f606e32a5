import Foundation
import Testing

@testable import TelexS3

/// The signer against requests signed by botocore's S3 SigV4 signer and AWS's published example
/// (Fixtures/sigv4-vectors.json, made by Scripts/sigv4-vectors.py): every string must match byte for byte.
@Suite struct SigV4SignerTests {
    struct Vectors: Decodable {
        var accessKeyID: String
        var secretAccessKey: String
        var epochSeconds: Int
        var cases: [Vector]
    }

    struct Vector: Decodable, CustomTestStringConvertible {
        var name: String
        var method: String
        var endpoint: String
        var region: String
        var path: String
        var query: [[String]]
        var headers: [[String]]
        var sessionToken: String?
        var payloadHash: String
        var canonicalRequest: String
        var stringToSign: String
        var authorization: String
        var signedHeaderValues: [String: String]
        var source: String
        // AWS's example has its own credentials and time.
        var accessKeyID: String?
        var secretAccessKey: String?
        var epochSeconds: Int?

        var testDescription: String { "\(name) (\(source))" }
    }

    static let vectors: Vectors = {
        let url = Bundle.module.url(forResource: "sigv4-vectors", withExtension: "json", subdirectory: "Fixtures")!
        return try! JSONDecoder().decode(Vectors.self, from: Data(contentsOf: url))
    }()

    @Test func fixtureHasTheRequiredCases() {
        let names = Set(Self.vectors.cases.map(\.name))
        #expect(Self.vectors.cases.count >= 11)
        for required in [
            "get-object", "put-object-with-body", "head-object", "delete-object", "list-objects-v2",
            "key-with-spaces", "key-with-reserved-characters", "key-with-unicode", "key-with-double-slash",
            "session-token", "range-header", "non-default-port", "list-empty-prefix", "aws-docs-get-object",
        ] {
            #expect(names.contains(required), "missing vector \(required)")
        }
    }

    @Test(arguments: vectors.cases) func matchesVector(_ vector: Vector) throws {
        let credentials = S3Credentials(
            accessKeyID: vector.accessKeyID ?? Self.vectors.accessKeyID,
            secretAccessKey: vector.secretAccessKey ?? Self.vectors.secretAccessKey,
            sessionToken: vector.sessionToken
        )
        let signer = SigV4Signer(credentials: credentials, region: vector.region)
        let date = Date(timeIntervalSince1970: TimeInterval(vector.epochSeconds ?? Self.vectors.epochSeconds))
        let signed = signer.sign(
            method: vector.method, endpoint: try #require(URL(string: vector.endpoint)), path: vector.path,
            query: vector.query.map { ($0[0], $0[1]) }, headers: vector.headers.map { ($0[0], $0[1]) },
            payloadHash: vector.payloadHash, date: date
        )
        #expect(signed.canonicalRequest == vector.canonicalRequest)
        #expect(signed.stringToSign == vector.stringToSign)
        if vector.source.hasPrefix("botocore") {
            #expect(signed.authorization == vector.authorization)
        } else {
            // AWS writes no space after the commas; the signature and its scope are what matter.
            #expect(signed.authorization.replacingOccurrences(of: ", ", with: ",") == vector.authorization)
        }
        let added = Dictionary(signed.headers.map { ($0.name, $0.value) }, uniquingKeysWith: { first, _ in first })
        #expect(added["authorization"] == signed.authorization)
        for (name, value) in vector.signedHeaderValues {
            #expect(added[name] == value, "header \(name)")
        }
        #expect((added["x-amz-security-token"] != nil) == (vector.sessionToken != nil))
    }

    @Test func urlCarriesTheSignedPathAndQuery() throws {
        let signer = SigV4Signer(
            credentials: S3Credentials(accessKeyID: "a", secretAccessKey: "s"), region: "us-east-1")
        let signed = signer.sign(
            method: "GET", endpoint: try #require(URL(string: "http://127.0.0.1:9000")), path: "/b/topics/a b+ü",
            query: [("prefix", "x y/"), ("list-type", "2")], payloadHash: SigV4Signer.emptyPayloadHash,
            date: Date(timeIntervalSince1970: 0)
        )
        #expect(signed.url == "http://127.0.0.1:9000/b/topics/a%20b%2B%C3%BC?list-type=2&prefix=x%20y%2F")
        #expect(SigV4Signer.timestamp(Date(timeIntervalSince1970: 0)) == "19700101T000000Z")
    }
}
