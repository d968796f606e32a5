import Foundation
import Testing

@testable import TelexS3

@Suite struct S3LocationTests {
    @Test func parsesBucketAndPrefix() throws {
        let location = try S3Location(parsing: "s3://news-archive/telex/prod/")
        #expect(location.bucket == "news-archive")
        #expect(location.prefix == "telex/prod")
        #expect(location.objectKey("topics/a") == "telex/prod/topics/a")
        #expect(location.description == "s3://news-archive/telex/prod")

        for text in ["s3://news-archive", "s3://news-archive/", "s3://news-archive//"] {
            let root = try S3Location(parsing: text)
            #expect(root.prefix == "")
            #expect(root.objectKey("primary") == "primary")
            #expect(root.description == "s3://news-archive")
        }
    }

    @Test(arguments: [
        ("http://b/p", "must start with s3://"),
        ("s3://", "is missing"),
        ("s3://ab", "3 to 63 characters"),
        ("s3://" + String(repeating: "a", count: 64), "3 to 63 characters"),
        ("s3://News", "lowercase letters"),
        ("s3://my_bucket", "found '_'"),
        ("s3://-bucket", "start and end with a letter or digit"),
        ("s3://bucket.", "start and end with a letter or digit"),
        ("s3://a..b", "two adjacent dots"),
        ("s3://192.168.1.1", "IP address"),
    ])
    func rejectsBadLocations(_ text: String, _ expected: String) {
        #expect {
            try S3Location(parsing: text)
        } throws: { error in
            let message = "\(error)"
            return message.contains(expected) && message.contains(text)
        }
    }
}

@Suite struct S3CredentialsTests {
    @Test func fromEnvironment() throws {
        let credentials = try S3Credentials.fromEnvironment([
            "AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "SECRET", "AWS_SESSION_TOKEN": "TOKEN",
        ])
        #expect(credentials == S3Credentials(accessKeyID: "AKID", secretAccessKey: "SECRET", sessionToken: "TOKEN"))
        let plain = try S3Credentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "S"])
        #expect(plain.sessionToken == nil)
        #expect {
            try S3Credentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "AKID"])
        } throws: { "\($0)".contains("AWS_SECRET_ACCESS_KEY not set") }
    }

    @Test func descriptionHidesSecrets() {
        let credentials = S3Credentials(accessKeyID: "AKID", secretAccessKey: "SECRET", sessionToken: "TOKEN")
        for text in ["\(credentials)", String(reflecting: credentials)] {
            #expect(text.contains("AKID"))
            #expect(!text.contains("SECRET"))
            #expect(!text.contains("TOKEN"))
        }
    }

    @Test func fromSharedCredentialsFile() throws {
        let text = """
            # AWS shared credentials
            [default]
            aws_access_key_id = DEFAULTKEY
            aws_secret_access_key = default/secret+key

            [archive]
            aws_access_key_id=ARCHIVEKEY
            ; a comment
            aws_secret_access_key =  archive secret
            aws_session_token = session=token
            region = eu-west-1
            """
        let path = NSTemporaryDirectory() + "s3-credentials-\(UUID().uuidString)"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(
            try S3Credentials.fromFile(path: path)
                == S3Credentials(accessKeyID: "DEFAULTKEY", secretAccessKey: "default/secret+key")
        )
        #expect(
            try S3Credentials.fromFile(path: path, profile: "archive")
                == S3Credentials(
                    accessKeyID: "ARCHIVEKEY", secretAccessKey: "archive secret", sessionToken: "session=token")
        )
        #expect {
            try S3Credentials.fromFile(path: path, profile: "missing")
        } throws: { "\($0)" == "\(path): no [missing] profile" }
        #expect {
            try S3Credentials.fromFile(path: path + ".absent")
        } throws: { "\($0)".contains("cannot read S3 credentials file \(path).absent") }
    }

    @Test(arguments: [
        ("[p]\naws_access_key_id = A\n", "f: profile [p] has no aws_secret_access_key"),
        (
            "[p]\naws_access_key_id = A\naws_secret_access_key =\n",
            "f line 3: profile [p]: aws_secret_access_key is empty"
        ),
        ("[p]\naws_secret_access_key: SECRET\n", "f line 2: expected 'name = value' (no '=' on the line)"),
        ("aws_access_key_id = A\n[p]\n", "f line 1: setting outside any [profile] section"),
        ("[p\n", "f line 1: malformed section header (expected '[name]')"),
    ])
    func fileFormatErrors(_ text: String, _ expected: String) {
        #expect {
            try S3Credentials.parse(text, path: "f", profile: "p")
        } throws: { "\($0)" == expected }
    }
}
