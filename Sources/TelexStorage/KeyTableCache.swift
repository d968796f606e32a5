import Synchronization

/// What stays in memory of a sealed segment's key table (Protocol/STORAGE.md §14.1): the high 32 bits of each
/// distinct ASCII key's hash, sorted, so a history query loads only the tables that may hold its key. About 4
/// bytes per distinct key of the segment; the table itself is on disk (`.keys`) and in `KeyTableCache`.
struct SealedKeySummary: Sendable {
    private static let nextID = Atomic<UInt64>(0)

    /// Names the table in the cache: unique in the process, so a segment rewritten in place (compaction, purge)
    /// never finds its predecessor's table.
    let id: UInt64
    let hashes: [UInt32]
    /// The table has a key with a byte outside ASCII, which may equal any query as a String (§14.1).
    let hasNonASCII: Bool
    let records: Int
    let tombstones: Int

    /// Summarizes `table`. Blocking CPU work (hashes every key): never under the log's lock.
    init(_ table: SealedKeys) {
        id = Self.nextID.add(1, ordering: .relaxed).newValue
        var hashes: [UInt32] = []
        var hasNonASCII = false
        // `byHash` is ordered by hash, so the high halves come sorted and equal ones adjacent.
        table.entries.keyBytes.withUnsafeBytes { arena in
            for index in table.byHash {
                let hash = SealedKeys.hash(table.entries.key(Int(index), in: arena))
                if hash == SealedKeys.nonASCIIHash {
                    hasNonASCII = true
                } else if hashes.last != UInt32(truncatingIfNeeded: hash >> 32) {
                    hashes.append(UInt32(truncatingIfNeeded: hash >> 32))
                }
            }
        }
        // Without spare capacity: the summary lives as long as its segment.
        self.hashes = [UInt32](unsafeUninitializedCapacity: hashes.count) { buffer, initialized in
            initialized = buffer.initialize(fromContentsOf: hashes)
        }
        self.hasNonASCII = hasNonASCII
        records = table.entries.count
        tombstones = table.entries.tombstones
    }

    /// Whether the table may hold an ASCII key whose hash is `hash` (false: it certainly does not).
    func mayContain(_ hash: UInt64) -> Bool {
        if hasNonASCII { return true }
        let wanted = UInt32(truncatingIfNeeded: hash >> 32)
        var (low, high) = (0, hashes.count)
        while low < high {
            let middle = (low + high) / 2
            if hashes[middle] < wanted { low = middle + 1 } else { high = middle }
        }
        return low < hashes.count && hashes[low] == wanted
    }
}

/// Sealed key tables loaded for queries, least recently used evicted first, holding at most `capacity` bytes
/// (`LogConfiguration.keyTableCacheBytes`). A table larger than the capacity is not kept: its query uses it and
/// lets it go. Thread-safe; the lock is held only to look up, insert and evict (never while loading).
final class KeyTableCache: Sendable {
    let capacity: Int
    private let state = Mutex(State())

    private struct State {
        var tables: [UInt64: (table: SealedKeys, bytes: Int, used: UInt64)] = [:]
        var bytes = 0
        var clock: UInt64 = 0
    }

    init(capacity: Int) {
        self.capacity = capacity
    }

    /// Bytes the cached tables take.
    var bytes: Int { state.withLock { $0.bytes } }
    /// How many tables are cached.
    var count: Int { state.withLock { $0.tables.count } }

    /// The table cached for summary `id`, now the most recently used.
    func table(_ id: UInt64) -> SealedKeys? {
        state.withLock { state in
            guard let cached = state.tables[id] else { return nil }
            state.clock += 1
            state.tables[id]!.used = state.clock
            return cached.table
        }
    }

    /// Caches `table` as summary `id`'s, evicting the least recently used tables to stay within the capacity.
    func insert(_ table: SealedKeys, for id: UInt64) {
        let size = Self.bytes(of: table)
        guard size <= capacity else { return }
        let evicted = state.withLock { state -> [SealedKeys] in
            var evicted: [SealedKeys] = []
            if let old = state.tables.removeValue(forKey: id) {
                state.bytes -= old.bytes
                evicted.append(old.table)
            }
            while state.bytes + size > capacity, let oldest = state.tables.min(by: { $0.value.used < $1.value.used }) {
                state.tables[oldest.key] = nil
                state.bytes -= oldest.value.bytes
                evicted.append(oldest.value.table)
            }
            state.clock += 1
            state.tables[id] = (table, size, state.clock)
            state.bytes += size
            return evicted
        }
        // Freed after the lock is released.
        withExtendedLifetime(evicted) {}
    }

    /// Drops every table (tests, measurements: a cold cache).
    func removeAll() {
        let dropped = state.withLock { state in
            defer { state = State() }
            return state.tables
        }
        withExtendedLifetime(dropped) {}
    }

    /// The bytes a table's arrays hold.
    static func bytes(of table: SealedKeys) -> Int {
        table.entries.entries.count * MemoryLayout<KeyEntry>.stride + table.entries.keyBytes.count
            + table.entries.appendTimes.count * MemoryLayout<Int64>.stride
            + table.byHash.count * MemoryLayout<UInt32>.stride
    }
}
