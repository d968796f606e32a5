/// The object keys of an archive under `s3://BUCKET/PREFIX` (Protocol/STORAGE.md §16.1). `PREFIX` may be empty;
/// keys are joined with "/".
public struct ArchiveLayout: Sendable, Equatable {
    /// The prefix without leading or trailing slashes ("" for the bucket's root).
    public let prefix: String

    public init(prefix: String) {
        self.prefix = String(prefix.split(separator: "/", omittingEmptySubsequences: true).joined(separator: "/"))
    }

    private func key(_ rest: String) -> String { prefix.isEmpty ? rest : prefix + "/" + rest }

    /// The 20-digit zero-padded base offset segments are named by (as `Segment.fileName`).
    public static func base20(_ baseOffset: Int64) -> String {
        let digits = String(baseOffset)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits
    }

    /// `PREFIX/topics/`: every segment object and manifest is under it.
    public var topicsPrefix: String { key("topics/") }
    /// `PREFIX/topics/<topic>/`.
    public func topicPrefix(_ topic: String) -> String { key("topics/\(topic)/") }
    /// `PREFIX/topics/<topic>/<base20>.r`: the objects of every rewrite of one segment.
    public func rewritesPrefix(topic: String, baseOffset: Int64) -> String {
        topicPrefix(topic) + Self.base20(baseOffset) + ".r"
    }
    /// The sealed segment's `.log` bytes as uploaded after `rewrites` rewrites.
    public func segmentLog(topic: String, baseOffset: Int64, rewrites: UInt32) -> String {
        rewritesPrefix(topic: topic, baseOffset: baseOffset) + "\(rewrites).log"
    }
    /// The compaction marker of a rewritten segment.
    public func compactionMarker(topic: String, baseOffset: Int64, rewrites: UInt32) -> String {
        rewritesPrefix(topic: topic, baseOffset: baseOffset) + "\(rewrites).compacted"
    }
    /// The manifest, written last: the segment is in the archive iff it exists.
    public func manifest(topic: String, baseOffset: Int64) -> String {
        topicPrefix(topic) + Self.base20(baseOffset) + ".manifest"
    }
    /// `PREFIX/consumers/`.
    public var consumersPrefix: String { key("consumers/") }
    /// A consumer-offsets file's copy.
    public func consumerOffsets(_ name: String) -> String { consumersPrefix + name + ".offsets" }
    /// The primary's address object.
    public var primary: String { key("primary") }

    /// The topic and base offset a manifest key names, or nil when `key` is no manifest key of this layout.
    public func manifestSegment(_ key: String) -> (topic: String, baseOffset: Int64)? {
        guard key.hasPrefix(topicsPrefix), key.hasSuffix(".manifest") else { return nil }
        let parts = key.dropFirst(topicsPrefix.count).dropLast(".manifest".count).split(separator: "/")
        guard parts.count == 2, parts[1].count == 20, parts[1].allSatisfy(\.isASCII),
            let base = Int64(parts[1]), base >= 0
        else { return nil }
        return (String(parts[0]), base)
    }
}
