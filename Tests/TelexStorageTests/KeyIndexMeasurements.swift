import Foundation
import NIOCore
import TelexProtocol
import Testing

@testable import TelexStorage

/// Opt-in measurements of the key index (Protocol/STORAGE.md §14.4): `TELEX_KEY_INDEX_RECORDS=N` appends N records
/// of about 1 KiB (10 versions per key, batches of 64, codec none, fsync never) with the index off and then on,
/// and prints the RSS each run added, the append time of each, and the time to open the log from its `.keys`
/// files, to rebuild them from the segments, and to open with the index off, the bytes the reopened index keeps in
/// memory per sealed and per growing record, and the time of a history query (`versions(of:)`, averaged over 100
/// keys) and a latest query over the reopened log, with the sealed tables not cached (cold), cached within the
/// default `keyTableCacheBytes`, and all cached. A key's versions are spread over
/// the whole log (record i has key i mod N/10: every key in every segment, the worst case for memory), or with
/// `TELEX_KEY_INDEX_CLUSTERED=1` consecutive (key i/10, as corrections follow a story within hours).
@Suite("Key index measurements (TELEX_KEY_INDEX_RECORDS)")
struct KeyIndexMeasurements {
    static let records = ProcessInfo.processInfo.environment["TELEX_KEY_INDEX_RECORDS"].flatMap(Int.init)
    static let clustered = ProcessInfo.processInfo.environment["TELEX_KEY_INDEX_CLUSTERED"] == "1"

    static func residentBytes() -> Int {
        let fields = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8))?.split(separator: " ") ?? []
        return (fields.count > 1 ? Int(fields[1]) ?? 0 : 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    static func seconds(_ body: () throws -> Void) rethrows -> Double {
        let start = ContinuousClock.now
        try body()
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    /// Appends `records` records to `log`, building each batch just before it is appended; returns the seconds
    /// spent in `append` alone.
    static func fill(_ log: TopicLog, records: Int) throws -> Double {
        let keys = max(1, records / 10)
        let filler = String(repeating: "x", count: 900)
        var appendSeconds = 0.0
        var written = 0
        while written < records {
            var builder = RecordBatchBuilder()
            for index in written..<min(records, written + 64) {
                let key = "urn:telex:article:\(clustered ? index / 10 : index % keys)"
                builder.append(
                    timestamp: 1_700_000_000_000 + Int64(index), key: ByteBuffer(string: key),
                    headers: [RecordHeader(name: "ce-type", value: "news.article.updated")],
                    value: ByteBuffer(string: "{\"uri\":\"\(key)\",\"body\":\"\(filler)\"}"))
            }
            written += builder.count
            let batch = builder.build(codec: .none)
            appendSeconds += try seconds { _ = try log.append(batch) }
        }
        return appendSeconds
    }

    @Test("memory per indexed record, append cost on and off, rebuild versus load",
          .enabled(if: records != nil), .timeLimit(.minutes(30)))
    func measure() throws {
        let records = Self.records ?? 0
        try withTemporaryDirectorySync { directory in
            var configuration = testConfiguration(segmentBytes: 128 << 20)
            var results: [Bool: (rss: Int, append: Double)] = [:]
            for indexKeys in [false, true] {
                configuration.indexKeys = indexKeys
                let path = directory + "/\(indexKeys)"
                let before = Self.residentBytes()
                let log = try TopicLog(topic: "news.wire", directory: path, configuration: configuration,
                                       logger: makeLogger())
                let append = try Self.fill(log, records: records)
                results[indexKeys] = (Self.residentBytes() - before, append)
                try log.close()
            }
            let path = directory + "/true"
            let size = FileIO.treeSize(path)
            var loaded: TopicLog?
            let load = try Self.seconds { loaded = try TopicLog(topic: "news.wire", directory: path,
                                                                 configuration: configuration, logger: makeLogger()) }
            let versions = loaded!.keyIndexCounts.reduce(0) { $0 + $1.records }
            let resident = loaded!.keyIndexResidentBytes
            let end = loaded!.readableEndOffset
            let keys = max(1, records / 10)
            let probes = stride(from: 0, to: keys, by: max(1, keys / 100)).prefix(100).map { "urn:telex:article:\($0)" }
            var found = 0
            // Per key: with no table cached (each query loads what it needs), then warm with the default cache
            // (8 MiB: it may hold fewer tables than a key touches) and with one holding every table.
            let cold = Self.seconds {
                for key in probes {
                    loaded!.keyTables.removeAll()
                    found += try! loaded!.versions(of: key, below: end).count
                }
            } / Double(probes.count)
            let warm = Self.seconds { for key in probes { _ = try! loaded!.versions(of: key, below: end) } } / Double(probes.count)
            loaded!.keyTables.removeAll()
            var latestCount = 0
            let latestCold = Self.seconds { latestCount = try! loaded!.latestVersions(below: end).count }
            let latestWarm = Self.seconds { _ = try! loaded!.latestVersions(below: end) }
            let cacheDefault = loaded!.keyTableCacheBytes
            try loaded!.close()
            var large = configuration
            large.keyTableCacheBytes = 1 << 30
            let big = try TopicLog(topic: "news.wire", directory: path, configuration: large, logger: makeLogger())
            for key in probes { _ = try! big.versions(of: key, below: end) }
            let warmAll = Self.seconds { for key in probes { _ = try! big.versions(of: key, below: end) } } / Double(probes.count)
            _ = try! big.latestVersions(below: end)
            let latestWarmAll = Self.seconds { _ = try! big.latestVersions(below: end) }
            let cacheAll = big.keyTableCacheBytes
            try big.close()
            for name in try FileManager.default.contentsOfDirectory(atPath: path) where name.hasSuffix(".keys") {
                try FileManager.default.removeItem(atPath: path + "/" + name)
            }
            let rebuild = try Self.seconds {
                try TopicLog(topic: "news.wire", directory: path, configuration: configuration, logger: makeLogger())
                    .close()
            }
            configuration.indexKeys = false
            let plain = try Self.seconds {
                try TopicLog(topic: "news.wire", directory: path, configuration: configuration, logger: makeLogger())
                    .close()
            }
            let on = results[true]!
            let off = results[false]!
            print("""
                key index: \(records) records (\(versions) indexed, versions \(Self.clustered ? "clustered" : "spread")), \
                topic \(size >> 20) MiB on disk
                key index: RSS added appending with the index off \(off.rss >> 20) MiB, on \(on.rss >> 20) MiB: \
                \((on.rss - off.rss) / max(1, records)) bytes per indexed record
                key index: append time off \(off.append) s, on \(on.append) s \
                (\(Int((on.append / off.append - 1) * 100))% more)
                key index: open loading .keys \(load) s, rebuilding from segments \(rebuild) s, index off \(plain) s
                key index: resident after reopen: sealed \(resident.sealed) bytes for \(resident.sealedRecords) records \
                (\(Double(resident.sealed) / Double(max(1, resident.sealedRecords))) B each), growing \(resident.growing) \
                bytes for \(resident.growingRecords) (\(Double(resident.growing) / Double(max(1, resident.growingRecords))) B each)
                key index: history query (100 keys, \(found) versions) cold \(cold * 1000) ms, warm (default cache, \
                \(cacheDefault >> 10) KiB held) \(warm * 1000) ms, warm (every table cached, \(cacheAll >> 10) KiB) \
                \(warmAll * 1000) ms
                key index: latest query (\(latestCount) keys) cold \(latestCold * 1000) ms, warm (default cache) \
                \(latestWarm * 1000) ms, warm (every table cached) \(latestWarmAll * 1000) ms
                """)
            #expect(versions == records)
        }
    }
}
