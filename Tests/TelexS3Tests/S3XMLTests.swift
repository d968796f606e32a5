import Testing

@testable import TelexS3

@Suite struct S3XMLTests {
    @Test func listPageWithEntitiesAndTruncation() throws {
        let xml = """
            <?xml version="1.0" encoding="UTF-8"?>
            <ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>p/</Prefix>\
            <KeyCount>2</KeyCount><MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated>\
            <Contents><Key>p/a &amp; b &lt;c&gt; &quot;d&quot; &apos;e&apos;</Key>\
            <LastModified>2026-01-01T00:00:00.000Z</LastModified>\
            <ETag>&quot;0cc175b9c0f1b6a831c399e269772661&quot;</ETag><Size>1</Size>\
            <StorageClass>STANDARD</StorageClass></Contents>\
            <Contents><Key>p/&#233;t&#xE9; &#x65E5;</Key><ETag>"abc-2"</ETag><Size>12345678901</Size></Contents>\
            <NextContinuationToken>tok/en+=&amp;</NextContinuationToken></ListBucketResult>
            """
        let page = try S3XML.parseListPage(xml)
        #expect(
            page.objects == [
                .init(key: "p/a & b <c> \"d\" 'e'", size: 1, etag: "0cc175b9c0f1b6a831c399e269772661"),
                .init(key: "p/été 日", size: 12_345_678_901, etag: "abc-2"),
            ]
        )
        #expect(page.isTruncated)
        #expect(page.nextContinuationToken == "tok/en+=&")
    }

    @Test func emptyListing() throws {
        let xml = """
            <ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>none/</Prefix>\
            <KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>
            """
        let page = try S3XML.parseListPage(xml)
        #expect(page.objects.isEmpty)
        #expect(!page.isTruncated)
        #expect(page.nextContinuationToken == nil)
        // A self-closing prefix element is not mistaken for content.
        #expect(
            try S3XML.parseListPage("<ListBucketResult><Prefix/><IsTruncated>false</IsTruncated></ListBucketResult>")
                .objects.isEmpty)
    }

    @Test func malformedListingsAreRejected() {
        #expect(throws: S3XML.ParseError.self) { try S3XML.parseListPage("<Error><Code>X</Code></Error>") }
        #expect(throws: S3XML.ParseError.self) {
            try S3XML.parseListPage(
                "<ListBucketResult><Contents><Key>k</Key><Size>x</Size></Contents></ListBucketResult>")
        }
        #expect(throws: S3XML.ParseError.self) {
            try S3XML.parseListPage("<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>")
        }
    }

    @Test func unknownEntitiesAreKept() {
        #expect(S3XML.decodeEntities("a &unknown; &#xZZ; & b &amp;") == "a &unknown; &#xZZ; & b &")
    }

    @Test func errorBody() throws {
        let xml = """
            <?xml version="1.0" encoding="UTF-8"?>
            <Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message>\
            <BucketName>missing</BucketName><RequestId>4442587FB7D0A2F9</RequestId></Error>
            """
        let parsed = try #require(S3XML.parseError(xml))
        #expect(parsed.code == "NoSuchBucket")
        #expect(parsed.message == "The specified bucket does not exist")
        #expect(S3XML.parseError("<html>Bad Gateway</html>") == nil)
        #expect(S3XML.parseError("") == nil)
    }

    @Test func errorMessages() {
        var error = S3Error(
            .notFound, operation: "PUT", bucket: "b", key: "k", endpoint: "http://127.0.0.1:9000", status: 404,
            code: "NoSuchBucket", storeMessage: "The specified bucket does not exist"
        )
        let expected =
            "PUT s3://b/k at http://127.0.0.1:9000 failed: 404 NoSuchBucket (The specified bucket does not exist)"
        #expect(error.description == expected)
        error = S3Error(
            .unavailable, operation: "GET", bucket: "b", key: nil, endpoint: "http://127.0.0.1:9",
            detail: "connection refused"
        )
        #expect(error.description == "GET s3://b at http://127.0.0.1:9 could not connect: connection refused")
        #expect(S3Error.kind(forStatus: 503) == .unavailable)
        #expect(S3Error.kind(forStatus: 403) == .denied)
        #expect(S3Error.kind(forStatus: 404) == .notFound)
        #expect(S3Error.kind(forStatus: 400) == .invalidResponse)
    }
}
