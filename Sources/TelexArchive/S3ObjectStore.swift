import NIOCore
import TelexS3

/// The archive's `ObjectStore` on S3 (or any S3-compatible store) through `S3Client`: keys are full object keys,
/// `S3Error`s become `ObjectStoreError`s of the same kind with the same message.
public struct S3ObjectStore: ObjectStore {
    public let client: S3Client

    public init(client: S3Client) {
        self.client = client
    }

    public var displayName: String { client.displayName }

    public func putFile(key: String, path: String, offset: Int, length: Int) async throws -> StoredObject {
        try await Self.mapped { () async throws(S3Error) in
            StoredObject(try await client.putObject(key: key, filePath: path, offset: offset, length: length))
        }
    }

    public func putBytes(key: String, bytes: ByteBuffer) async throws -> StoredObject {
        try await Self.mapped { () async throws(S3Error) in StoredObject(try await client.putObject(key: key, bytes: bytes)) }
    }

    public func get(key: String, range: Range<Int>?) async throws -> ByteBuffer {
        try await Self.mapped { () async throws(S3Error) in try await client.getObject(key: key, range: range) }
    }

    public func head(key: String) async throws -> StoredObject? {
        try await Self.mapped { () async throws(S3Error) in try await client.headObject(key: key).map(StoredObject.init) }
    }

    public func list(prefix: String) async throws -> [StoredObject] {
        try await Self.mapped { () async throws(S3Error) in try await client.listObjects(prefix: prefix).map(StoredObject.init) }
    }

    public func list(prefix: String, startAfter: String?) async throws -> [StoredObject] {
        try await Self.mapped { () async throws(S3Error) in
            try await client.listObjects(prefix: prefix, startAfter: startAfter).map(StoredObject.init)
        }
    }

    public func delete(key: String) async throws {
        try await Self.mapped { () async throws(S3Error) in try await client.deleteObject(key: key) }
    }

    private static func mapped<T>(_ body: () async throws(S3Error) -> T) async throws(ObjectStoreError) -> T {
        do {
            return try await body()
        } catch {
            let kind: ObjectStoreError.Kind = switch error.kind {
            case .notFound: .notFound
            case .denied: .denied
            case .unavailable: .unavailable
            case .invalidResponse: .invalidResponse
            }
            throw ObjectStoreError(kind, error.description)
        }
    }
}

extension StoredObject {
    init(_ object: S3Object) {
        self.init(key: object.key, size: object.size, etag: object.etag)
    }
}
