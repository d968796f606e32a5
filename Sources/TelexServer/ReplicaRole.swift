import TelexProtocol

/// What makes a broker a read replica: it serves a primary's archive and takes no writes (no publishes, no
/// commits, no durable consumers), which it refuses with `INVALID_REQUEST` naming the archive and the primary.
public struct ReplicaRole: Sendable {
    /// The archive the replica serves, as given to telexd (`s3://BUCKET/PREFIX`).
    public var source: String
    /// The primary's address (`HOST:PORT`) as it last wrote it into the archive; nil until it has.
    public var primaryAddress: @Sendable () -> String?

    public init(source: String, primaryAddress: @escaping @Sendable () -> String?) {
        self.source = source
        self.primaryAddress = primaryAddress
    }

    /// The refusal of `request`; `action` says what to do at the primary ("publish to", "commit to", …).
    func refusal(_ request: String, action: String) -> TelexError {
        let advice = primaryAddress().map { "\(action) the primary at \($0)" }
            ?? "\(action) the primary; the primary has not written its address yet"
        return TelexError(.invalidRequest, "\(request) refused: this broker is a read replica of \(source): \(advice)")
    }
}
