/// A bucket and a key prefix, written `s3://BUCKET/PREFIX` (PREFIX may be empty).
public struct S3Location: Sendable, Hashable, CustomStringConvertible {
    /// The bucket name, checked against S3's naming rules.
    public let bucket: String
    /// The key prefix without leading or trailing slash; empty for the bucket's root.
    public let prefix: String

    /// Why a location string was rejected.
    public struct ParseError: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    /// Parses `s3://BUCKET` or `s3://BUCKET/PREFIX`; slashes around the prefix are dropped.
    public init(parsing text: String) throws(ParseError) {
        let scheme = "s3://"
        guard text.hasPrefix(scheme) else {
            throw ParseError(description: "archive location '\(text)' must start with s3:// (s3://BUCKET/PREFIX)")
        }
        let rest = text.dropFirst(scheme.count)
        let bucket: Substring
        let prefix: Substring
        if let slash = rest.firstIndex(of: "/") {
            bucket = rest[..<slash]
            prefix = rest[rest.index(after: slash)...]
        } else {
            bucket = rest
            prefix = ""
        }
        if let problem = S3Location.bucketNameProblem(String(bucket)) {
            throw ParseError(description: "archive location '\(text)': bucket name '\(bucket)' \(problem)")
        }
        self.bucket = String(bucket)
        self.prefix = String(prefix.trimmingSlashes())
    }

    /// A location from parts already known to be valid (the prefix's slashes are trimmed).
    public init(bucket: String, prefix: String) throws(ParseError) {
        try self.init(parsing: "s3://\(bucket)/\(prefix)")
    }

    /// The full key of `relative` under the prefix, joined with "/".
    public func objectKey(_ relative: String) -> String {
        prefix.isEmpty ? relative : prefix + "/" + relative
    }

    public var description: String { prefix.isEmpty ? "s3://\(bucket)" : "s3://\(bucket)/\(prefix)" }

    /// What breaks S3's bucket naming rules, or nil: 3-63 characters of lowercase letters, digits, dots and
    /// hyphens, starting and ending with a letter or digit, no "..", not an IP address.
    static func bucketNameProblem(_ name: String) -> String? {
        let bytes = Array(name.utf8)
        if bytes.isEmpty { return "is missing" }
        guard (3...63).contains(bytes.count) else { return "must be 3 to 63 characters long (it has \(bytes.count))" }
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "."), UInt8(ascii: "-"):
                continue
            default:
                let found = Character(Unicode.Scalar(byte))
                return "may only hold lowercase letters, digits, dots and hyphens (found '\(found)')"
            }
        }
        let isAlphanumeric = { (byte: UInt8) in byte != UInt8(ascii: ".") && byte != UInt8(ascii: "-") }
        guard isAlphanumeric(bytes[0]), isAlphanumeric(bytes[bytes.count - 1]) else {
            return "must start and end with a letter or digit"
        }
        if name.contains("..") { return "must not contain two adjacent dots" }
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        if parts.count == 4, parts.allSatisfy({ UInt8($0) != nil }) { return "must not be an IP address" }
        return nil
    }
}

extension Substring {
    fileprivate func trimmingSlashes() -> Substring {
        var result = self
        while result.first == "/" { result = result.dropFirst() }
        while result.last == "/" { result = result.dropLast() }
        return result
    }
}
