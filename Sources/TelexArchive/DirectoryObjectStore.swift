#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import Synchronization
import TelexProtocol
import TelexStorage

/// An `ObjectStore` kept as files under a directory (a key's "/" become subdirectories), for tests and local
/// experiments. A put writes a temporary file and renames it over the object, so readers see the old or the new
/// bytes; the ETag is the hex MD5, as S3's for a single-part upload.
///
/// Test switches: `setUnavailable(_:)` makes every call fail with `.unavailable` (a store that is down; `setFailing`
/// with another kind), `corrupt(key:)` flips a byte of a stored object, `holdGets()` makes GETs wait until
/// `releaseGets()`. `calls` counts calls per operation ("put", "get", ...). Blocking file I/O in the caller's task;
/// `list` reads every object to give its ETag (fine for tests, not for big archives).
public final class DirectoryObjectStore: ObjectStore {
    public let directory: String
    public var displayName: String { "dir://\(directory)" }

    struct Faults {
        var failing: ObjectStoreError.Kind?
        var calls: [String: Int] = [:]
        var puts: [String] = []
        /// Every list asked for: its prefix and start-after key.
        var lists: [(prefix: String, startAfter: String?)] = []
        /// While held, GETs wait here until `releaseGets()`.
        var holdingGets = false
        var heldGets: [CheckedContinuation<Void, Never>] = []
    }

    private let faults = Mutex(Faults())

    /// A store in `directory` (created if missing).
    public init(directory: String) throws(TelexError) {
        try FileIO.makeDirectory(directory)
        self.directory = directory
    }

    /// While true, every call throws `ObjectStoreError(.unavailable, ...)` and stores nothing.
    public func setUnavailable(_ unavailable: Bool) { setFailing(unavailable ? .unavailable : nil) }

    /// While not nil, every call throws an `ObjectStoreError` of that kind (`.denied`: rejected credentials,
    /// `.notFound`: a missing bucket) and stores nothing.
    public func setFailing(_ kind: ObjectStoreError.Kind?) { faults.withLock { $0.failing = kind } }

    /// How many calls of `operation` ("put", "get", "head", "list", "delete") were answered (not failed).
    public func calls(_ operation: String) -> Int { faults.withLock { $0.calls[operation] ?? 0 } }

    /// Makes GETs wait (without failing) until `releaseGets()`, so a test can act while a download is in flight.
    public func holdGets() { faults.withLock { $0.holdingGets = true } }

    /// How many GETs are waiting for `releaseGets()`.
    public var heldGets: Int { faults.withLock { $0.heldGets.count } }

    /// Lets every held GET go on, and later ones pass.
    public func releaseGets() {
        let held = faults.withLock { faults in
            faults.holdingGets = false
            defer { faults.heldGets = [] }
            return faults.heldGets
        }
        for continuation in held { continuation.resume() }
    }

    /// Every key put so far, in order.
    public var putKeys: [String] { faults.withLock { $0.puts } }
    /// Every list asked for so far: prefix and start-after key (nil: from the first key).
    public var listRequests: [(prefix: String, startAfter: String?)] { faults.withLock { $0.lists } }

    /// Flips the bits of the byte at `offset` of the object `key`, bypassing the store (a damaged disk).
    public func corrupt(key: String, at offset: Int = 0) throws(TelexError) {
        let path = self.path(key)
        var bytes = try ArchiveFiles.readFile(path)
        guard let byte = bytes.getInteger(at: offset, as: UInt8.self) else {
            throw TelexError(.invalidRequest, "object \(key) has no byte at \(offset)")
        }
        bytes.setInteger(~byte, at: offset)
        try ArchiveFiles.writeFile(path, bytes)
    }

    private func path(_ key: String) -> String { directory + "/" + key }

    /// Counts a call of `operation`, or throws the error the store is switched to fail with.
    private func begin(_ operation: String, _ key: String) throws(ObjectStoreError) {
        let failing = faults.withLock { faults in
            if faults.failing == nil {
                faults.calls[operation, default: 0] += 1
                if operation == "put" { faults.puts.append(key) }
            }
            return faults.failing
        }
        guard let failing else { return }
        let reply = switch failing {
        case .unavailable: "connection refused"
        case .denied: "403 AccessDenied"
        case .notFound: "404 NoSuchBucket"
        case .invalidResponse: "bad reply"
        }
        throw ObjectStoreError(failing, "\(operation) \(key) at \(displayName): \(reply)")
    }

    private func failure(_ operation: String, _ key: String, _ error: TelexError) -> ObjectStoreError {
        ObjectStoreError(.invalidResponse, "\(operation) \(key) at \(displayName): \(error.message)")
    }

    public func putFile(key: String, path source: String, offset: Int, length: Int) async throws -> StoredObject {
        try begin("put", key)
        do {
            let fd = try FileIO.open(source, flags: O_RDONLY)
            defer { FileIO.close(fd, path: source) }
            let bytes = try ArchiveFiles.read(fd, at: offset, length: length, path: source)
            return try store(key, bytes)
        } catch {
            throw failure("put", key, error)
        }
    }

    public func putBytes(key: String, bytes: ByteBuffer) async throws -> StoredObject {
        try begin("put", key)
        do {
            return try store(key, bytes)
        } catch {
            throw failure("put", key, error)
        }
    }

    private func store(_ key: String, _ bytes: ByteBuffer) throws(TelexError) -> StoredObject {
        let target = path(key)
        if let slash = target.lastIndex(of: "/") { try FileIO.makeDirectory(String(target[..<slash])) }
        try ArchiveFiles.writeFile(target + ".tmp-put", bytes)
        try FileIO.rename(target + ".tmp-put", target)
        return StoredObject(key: key, size: bytes.readableBytes, etag: FileDigest.md5(bytes))
    }

    public func get(key: String, range: Range<Int>?) async throws -> ByteBuffer {
        try begin("get", key)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let held = faults.withLock { faults in
                if faults.holdingGets { faults.heldGets.append(continuation) }
                return faults.holdingGets
            }
            if !held { continuation.resume() }
        }
        guard FileIO.exists(path(key)) else {
            throw ObjectStoreError(.notFound, "get \(key) at \(displayName): no such key")
        }
        do {
            let bytes = try ArchiveFiles.readFile(path(key))
            guard let range else { return bytes }
            let length = max(0, min(range.upperBound, bytes.readableBytes) - range.lowerBound)
            return bytes.getSlice(at: range.lowerBound, length: length) ?? ByteBuffer()
        } catch {
            throw failure("get", key, error)
        }
    }

    public func head(key: String) async throws -> StoredObject? {
        try begin("head", key)
        guard FileIO.exists(path(key)) else { return nil }
        do {
            let bytes = try ArchiveFiles.readFile(path(key))
            return StoredObject(key: key, size: bytes.readableBytes, etag: FileDigest.md5(bytes))
        } catch {
            throw failure("head", key, error)
        }
    }

    public func list(prefix: String) async throws -> [StoredObject] {
        try await list(prefix: prefix, startAfter: nil)
    }

    public func list(prefix: String, startAfter: String?) async throws -> [StoredObject] {
        try begin("list", prefix)
        faults.withLock { $0.lists.append((prefix, startAfter)) }
        do {
            var objects: [StoredObject] = []
            try walk("", into: &objects)
            return objects.filter { object in
                object.key.hasPrefix(prefix) && startAfter.map { $0.utf8.lexicographicallyPrecedes(object.key.utf8) } ?? true
            }.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
        } catch {
            throw failure("list", prefix, error)
        }
    }

    private func walk(_ relative: String, into objects: inout [StoredObject]) throws(TelexError) {
        for name in try ArchiveFiles.listDirectory(relative.isEmpty ? directory : path(relative))
        where !name.hasSuffix(".tmp-put") {
            let key = relative.isEmpty ? name : relative + "/" + name
            var info = stat()
            guard lstat(path(key), &info) == 0 else { continue }
            if (info.st_mode & S_IFMT) == S_IFDIR {
                try walk(key, into: &objects)
            } else {
                let bytes = try ArchiveFiles.readFile(path(key))
                objects.append(StoredObject(key: key, size: bytes.readableBytes, etag: FileDigest.md5(bytes)))
            }
        }
    }

    public func delete(key: String) async throws {
        try begin("delete", key)
        do {
            try FileIO.remove(path(key))
        } catch {
            throw failure("delete", key, error)
        }
    }
}
