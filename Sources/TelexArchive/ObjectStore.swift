import NIOCore

/// What the archive needs of an object store: S3 (`S3ObjectStore`) in production, a directory in unit tests
/// (`DirectoryObjectStore`). Keys are full object keys (the archive's prefix included).
public protocol ObjectStore: Sendable {
    /// A human-readable name for logs and errors, e.g. `s3://bucket/prefix at http://127.0.0.1:9000`.
    var displayName: String { get }
    /// Stores `length` bytes of the file at `path` from `offset` as `key`, replacing any object of that key.
    /// Returns once the store confirmed it holds exactly those bytes (size and checksum).
    func putFile(key: String, path: String, offset: Int, length: Int) async throws -> StoredObject
    /// Stores `bytes` as `key`, confirmed like `putFile`.
    func putBytes(key: String, bytes: ByteBuffer) async throws -> StoredObject
    /// The bytes of `key` in `range` (the whole object when nil). Throws `ObjectStoreError.notFound` when absent.
    func get(key: String, range: Range<Int>?) async throws -> ByteBuffer
    /// The object's size and checksum, or nil when there is none.
    func head(key: String) async throws -> StoredObject?
    /// Every object whose key starts with `prefix`, in key order.
    func list(prefix: String) async throws -> [StoredObject]
    /// Those of them whose key sorts after `startAfter` (nil: all), in key order. Default: `list(prefix:)` filtered.
    func list(prefix: String, startAfter: String?) async throws -> [StoredObject]
    /// Removes `key`; no error when it is already gone.
    func delete(key: String) async throws
}

extension ObjectStore {
    public func list(prefix: String, startAfter: String?) async throws -> [StoredObject] {
        let all = try await list(prefix: prefix)
        guard let startAfter else { return all }
        return all.filter { startAfter.utf8.lexicographicallyPrecedes($0.key.utf8) }
    }
}

/// An object as the store describes it.
public struct StoredObject: Sendable, Equatable {
    public var key: String
    public var size: Int
    /// The store's entity tag (for a single-part S3 upload: the hex MD5 of the bytes), without quotes.
    public var etag: String?

    public init(key: String, size: Int, etag: String?) {
        self.key = key
        self.size = size
        self.etag = etag
    }
}

/// Errors every `ObjectStore` reports in these terms, so the archive can tell "absent" and "retry later" apart.
public struct ObjectStoreError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        /// The key (or the bucket) does not exist.
        case notFound
        /// Credentials rejected, or not allowed: retrying will not help until the configuration changes.
        case denied
        /// The store could not be reached or answered 5xx: retry with backoff.
        case unavailable
        /// The store answered, but not with what was asked (checksum mismatch, bad XML, wrong size).
        case invalidResponse
    }
    public var kind: Kind
    /// What was wrong and where: the operation, the key, the store, the status and the store's own message.
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
