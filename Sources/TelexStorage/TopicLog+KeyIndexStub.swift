// TEMPORARY (p12-select): replaced by the key index of p12-store at merge.
public struct KeyVersion: Sendable, Equatable {
    public var offset: Int64
    public var appendTime: Int64
    public var tombstone: Bool
    public init(offset: Int64, appendTime: Int64, tombstone: Bool) {
        self.offset = offset
        self.appendTime = appendTime
        self.tombstone = tombstone
    }
}

extension TopicLog {
    public func latestVersions(below end: Int64) -> [String: KeyVersion] { [:] }
    public func versions(of key: String, below end: Int64) -> [KeyVersion] { [] }
}
