import Foundation
import Logging
import NIOCore
import Synchronization
import TelexProtocol
import TelexStorage
import Testing

@testable import TelexArchive

/// Runs `body` with a new empty directory under the system temporary directory, removed afterwards.
func withTemporaryDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("telex-archive-tests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: url) }
    return try await body(url.path)
}

/// Collects log messages, so tests can check warnings without printing them.
final class RecordingLogHandler: LogHandler, Sendable {
    private let recorded = Mutex<[(level: Logger.Level, message: String)]>([])
    var metadata: Logger.Metadata {
        get { [:] }
        set {}
    }
    var logLevel: Logger.Level {
        get { .trace }
        set {}
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { nil }
        set {}
    }

    func log(event: LogEvent) {
        recorded.withLock { $0.append((event.level, event.message.description)) }
    }

    func messages(atLeast level: Logger.Level) -> [String] {
        recorded.withLock { $0.filter { $0.level >= level }.map(\.message) }
    }
}

func makeLogger(_ handler: RecordingLogHandler = RecordingLogHandler()) -> Logger {
    Logger(label: "telex.archive.tests") { _ in handler }
}

let topic = "news.wire"
let layout = ArchiveLayout(prefix: "newsroom/prod")

/// A store of small segments (4 KiB) without fsync, so tests stay fast and roll often.
func openStore(_ directory: String) throws -> TopicStore {
    try TopicStore(
        directory: directory,
        configuration: LogConfiguration(segmentBytes: 4096, fsync: .never), logger: makeLogger())
}

/// One batch of `records` article events; the key is `key` when given, else unique per record.
func makeBatch(seed: Int, records: Int = 3, key: String? = nil) -> ByteBuffer {
    var builder = RecordBatchBuilder()
    for index in 0..<records {
        let value = "{\"uri\":\"urn:telex:article:\(seed)-\(index)\",\"headline\":\"\(String(repeating: "news ", count: 20))\"}"
        builder.append(
            timestamp: 1_700_000_000_000 + Int64(seed), key: ByteBuffer(string: key ?? "urn:telex:article:\(seed)-\(index)"),
            headers: [RecordHeader(name: "ce-type", value: "news.article.published")], value: ByteBuffer(string: value))
    }
    return builder.build(codec: .none)
}

/// Publishes `count` batches to `topic` and seals every rolled segment (the sync round seals them).
@discardableResult
func publish(_ store: TopicStore, count: Int, from seed: Int = 0, key: String? = nil) throws -> TopicLog {
    let log = try store.createLog(topic).log
    for index in 0..<count { _ = try log.append(makeBatch(seed: seed + index, key: key)) }
    try log.sync()
    return log
}

/// Every record of `log` from its start to its readable end: (offset, key, value), across compaction gaps.
func records(of log: TopicLog) throws -> [(Int64, String, String)] {
    var result: [(Int64, String, String)] = []
    var offset = log.startOffset
    while let slice = try log.read(from: offset, maxBytes: 1 << 20, skipDamaged: true) {
        for batch in try RecordBatch.split(try slice.readBytes()) {
            let (header, decoded) = try RecordBatch.decodeRecords(batch)
            for (index, record) in decoded.enumerated() {
                result.append((header.baseOffset + Int64(index), String(buffer: record.key), String(buffer: record.value)))
            }
        }
        offset = slice.nextOffset
    }
    return result
}

/// An archiver over `store` writing to `objects`, with the test layout.
func makeArchiver(
    _ store: TopicStore, _ objects: any ObjectStore, catalog: ArchiveCatalog = ArchiveCatalog(),
    metrics: ArchiveMetrics = ArchiveMetrics(), logger: Logger = makeLogger()
) -> Archiver {
    Archiver(store: store, objectStore: objects, layout: layout, catalog: catalog,
             configuration: .init(advertisedAddress: "primary.example:7400"), logger: logger, metrics: metrics)
}

/// Keys put so far that end with `suffix`.
func puts(_ objects: DirectoryObjectStore, endingWith suffix: String) -> [String] {
    objects.putKeys.filter { $0.hasSuffix(suffix) }
}

/// An object store over a `DirectoryObjectStore` with test hooks: `afterPutFile` (`afterPutBytes`) runs after a
/// file's (bytes') PUT was stored (before the archiver sees the answer), `etag` rewrites the ETag a PUT answers (nil: none), and
/// `failGet` makes GETs of the keys it accepts fail with `.unavailable`.
final class HookedObjectStore: ObjectStore {
    struct Hooks {
        var afterPutFile: (@Sendable (String) -> Void)?
        var afterPutBytes: (@Sendable (String) -> Void)?
        var etag: (@Sendable (StoredObject) -> String?)?
        var failGet: (@Sendable (String) -> Bool)?
    }

    let base: DirectoryObjectStore
    let hooks = Mutex(Hooks())
    var displayName: String { base.displayName }

    init(_ base: DirectoryObjectStore) { self.base = base }

    func putFile(key: String, path: String, offset: Int, length: Int) async throws -> StoredObject {
        var stored = try await base.putFile(key: key, path: path, offset: offset, length: length)
        let hooks = self.hooks.withLock { $0 }
        hooks.afterPutFile?(key)
        if let etag = hooks.etag { stored.etag = etag(stored) }
        return stored
    }

    func putBytes(key: String, bytes: ByteBuffer) async throws -> StoredObject {
        let stored = try await base.putBytes(key: key, bytes: bytes)
        hooks.withLock { $0.afterPutBytes }?(key)
        return stored
    }

    func get(key: String, range: Range<Int>?) async throws -> ByteBuffer {
        if hooks.withLock({ $0.failGet })?(key) == true {
            throw ObjectStoreError(.unavailable, "get \(key) at \(displayName): connection reset")
        }
        return try await base.get(key: key, range: range)
    }

    func head(key: String) async throws -> StoredObject? { try await base.head(key: key) }
    func list(prefix: String) async throws -> [StoredObject] { try await base.list(prefix: prefix) }
    func delete(key: String) async throws { try await base.delete(key: key) }
}

/// The manifest keys in `objects` for `topic`'s segments, as base offsets.
func manifestBases(_ objects: DirectoryObjectStore, topic: String = topic) async throws -> [Int64] {
    try await objects.list(prefix: layout.topicPrefix(topic)).compactMap { layout.manifestSegment($0.key)?.baseOffset }
}

/// Removes the last line of the topic's archive state (a crash after the manifest, before the state line).
func dropLastStateLine(_ dataDirectory: String) throws {
    let statePath = ArchiveState.path(dataDirectory: dataDirectory, topic: topic)
    let lines = try String(contentsOfFile: statePath, encoding: .utf8).split(separator: "\n")
    try (lines.dropLast().joined(separator: "\n") + "\n").write(toFile: statePath, atomically: false, encoding: .utf8)
}
