import NIOCore
import TelexProtocol

/// One stored version of an article key: where it is and whether it deletes the article.
public struct KeyVersion: Sendable, Equatable {
    public var offset: Int64
    /// When the broker appended the version's batch, in milliseconds since the epoch.
    public var appendTime: Int64
    /// The record's first `ce-type` header is exactly `article.deleted`.
    public var tombstone: Bool

    public init(offset: Int64, appendTime: Int64, tombstone: Bool) {
        self.offset = offset
        self.appendTime = appendTime
        self.tombstone = tombstone
    }
}

/// One indexed record, 16 bytes: its key's bytes in the arena of its `KeyEntries`, its offset relative to the
/// segment's base offset, which of the append times is its batch's, and whether it is a tombstone.
struct KeyEntry: Sendable, Equatable {
    var keyStart: UInt32
    var offsetDelta: UInt32
    var appendTimeIndex: UInt32
    var keyLength: UInt16
    var tombstone: Bool
}

/// Indexed records of one segment in offset order, as struct-of-arrays (Protocol/STORAGE.md §14.1): fixed-size
/// entries, one arena of key bytes, and each run of equal append times once. Appending a record allocates nothing
/// but the arrays' growth. Built the same way from any source, so equal contents are equal values.
///
/// Records with an empty key are not articles and are not indexed; nor are keys longer than a u16, which cannot
/// come off the wire.
struct KeyEntries: Sendable, Equatable {
    var entries: [KeyEntry] = []
    var keyBytes: [UInt8] = []
    var appendTimes: [Int64] = []

    var count: Int { entries.count }
    var tombstones: Int { entries.count { $0.tombstone } }

    mutating func add(_ key: UnsafeRawBufferPointer, offsetDelta: UInt32, appendTime: Int64, tombstone: Bool) {
        // A key that would start past a u32 arena is not indexed (a segment of over 4 GiB of keys: PUBLISH bounds
        // keys at 16 times the batch, so only a segment size far above the default gets here).
        guard key.count > 0, key.count <= Int(UInt16.max), keyBytes.count + key.count <= Int(UInt32.max) else { return }
        if appendTimes.last != appendTime { appendTimes.append(appendTime) }
        entries.append(KeyEntry(keyStart: UInt32(keyBytes.count), offsetDelta: offsetDelta,
                                appendTimeIndex: UInt32(appendTimes.count - 1), keyLength: UInt16(key.count),
                                tombstone: tombstone))
        keyBytes.append(contentsOf: key.assumingMemoryBound(to: UInt8.self))
    }

    /// Adds every record of one batch at `baseOffset` of a segment at `segmentBase`, read from its key table.
    /// A batch whose table does not parse stays readable; its records are just not indexed.
    mutating func add(
        _ batch: ByteBuffer, header: RecordBatchHeader, segmentBase: Int64, limits: RecordBatchLimits
    ) {
        let delta = header.baseOffset - segmentBase
        // A batch outside its segment's offsets (a broken chain, which verify reports) has no place here.
        guard delta >= 0, delta + Int64(header.recordCount) <= Int64(UInt32.max) else { return }
        try? RecordBatch.forEachKey(of: batch, header: header, limits: limits) { index, key, tombstone in
            add(key, offsetDelta: UInt32(delta + Int64(index)), appendTime: header.appendTime, tombstone: tombstone)
        }
    }

    mutating func append(contentsOf other: KeyEntries) {
        other.keyBytes.withUnsafeBytes { arena in
            for (index, entry) in other.entries.enumerated() {
                add(other.key(index, in: arena), offsetDelta: entry.offsetDelta,
                    appendTime: other.appendTimes[Int(entry.appendTimeIndex)], tombstone: entry.tombstone)
            }
        }
    }

    func version(_ index: Int, base: Int64) -> KeyVersion {
        let entry = entries[index]
        return KeyVersion(offset: base + Int64(entry.offsetDelta), appendTime: appendTimes[Int(entry.appendTimeIndex)],
                          tombstone: entry.tombstone)
    }

    /// The key of entry `index` in `arena` (this value's `keyBytes`).
    func key(_ index: Int, in arena: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        let entry = entries[index]
        return UnsafeRawBufferPointer(rebasing: arena[Int(entry.keyStart)..<Int(entry.keyStart) + Int(entry.keyLength)])
    }
}

/// The index of the segment being appended to (and of rolled ones until their sealing round): entries in chunks
/// of `capacity`, each full one packed (`PackedKeyEntries`, about 7 bytes an entry instead of about 45). A query
/// takes the chunks by reference under the log's lock; the next append then copies at most the partial last one
/// (copy-on-write), never the whole index.
struct KeyChunks: Sendable {
    static let capacity = 4096

    var full: [PackedKeyEntries] = []
    var last = KeyEntries()

    mutating func add(_ key: UnsafeRawBufferPointer, offsetDelta: UInt32, appendTime: Int64, tombstone: Bool) {
        if last.entries.count == Self.capacity {
            // Once per 4,096 records, under the log's lock on the append path: a pass over the chunk's keys.
            full.append(PackedKeyEntries(last))
            last = KeyEntries()
        }
        if last.entries.isEmpty { last.entries.reserveCapacity(Self.capacity) }
        last.add(key, offsetDelta: offsetDelta, appendTime: appendTime, tombstone: tombstone)
    }

    var count: Int { full.reduce(last.count) { $0 + $1.count } }
    var tombstones: Int { full.reduce(last.tombstones) { $0 + $1.tombstones } }

    /// Calls `body` with each entry in offset order (as `PackedKeyEntries.forEach`) until it returns false.
    func forEach(_ body: (UnsafeRawBufferPointer, UInt32, Int64, Bool) -> Bool) {
        for chunk in full where !chunk.forEach(body) { return }
        last.keyBytes.withUnsafeBytes { arena in
            for (index, entry) in last.entries.enumerated() {
                let time = last.appendTimes[Int(entry.appendTimeIndex)]
                guard body(last.key(index, in: arena), entry.offsetDelta, time, entry.tombstone) else { return }
            }
        }
    }

    /// All entries in one value, as a sealed table holds them, without spare capacity.
    func joined() -> KeyEntries {
        var all = KeyEntries()
        all.entries.reserveCapacity(count)
        all.keyBytes.reserveCapacity(full.reduce(last.keyBytes.count) { $0 + $1.keyByteCount })
        forEach { key, offsetDelta, appendTime, tombstone in
            all.add(key, offsetDelta: offsetDelta, appendTime: appendTime, tombstone: tombstone)
            return true
        }
        return all
    }
}

/// A sealed segment's key table: immutable once built (when the segment is sealed, in the sync round, or when
/// its `.keys` is loaded), so queries share it without copying. `byHash` orders the entries by (key hash, key
/// bytes, offset): a key's versions are adjacent, oldest first, and found by binary search.
struct SealedKeys: Sendable, Equatable {
    var entries: KeyEntries
    var byHash: [UInt32]

    /// Orders `entries` by hash. Blocking CPU work (O(n log n)): never under the log's lock.
    init(_ entries: KeyEntries) {
        self.entries = entries
        byHash = entries.keyBytes.withUnsafeBytes { arena in
            var order = (0..<entries.count).map { (hash: Self.hash(entries.key($0, in: arena)), index: UInt32($0)) }
            order.sort { Self.precedes($0, $1, entries, arena) }
            return order.map(\.index)
        }
    }

    init(entries: KeyEntries, byHash: [UInt32]) {
        self.entries = entries
        self.byHash = byHash
    }

    /// The bucket of every key with a byte outside ASCII. Such keys compare as Strings (canonical equivalence,
    /// repaired invalid bytes), which a hash of their bytes would not respect; they are rare in URIs.
    static let nonASCIIHash = UInt64.max

    /// FNV-1a over the key's bytes (stable across processes: it is stored), or `nonASCIIHash`.
    static func hash(_ key: UnsafeRawBufferPointer) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        var high: UInt8 = 0
        for byte in key {
            high |= byte
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        return high >= 0x80 ? nonASCIIHash : min(hash, nonASCIIHash - 1)
    }

    static func precedes(
        _ a: (hash: UInt64, index: UInt32), _ b: (hash: UInt64, index: UInt32), _ entries: KeyEntries,
        _ arena: UnsafeRawBufferPointer
    ) -> Bool {
        if a.hash != b.hash { return a.hash < b.hash }
        let (keyA, keyB) = (entries.key(Int(a.index), in: arena), entries.key(Int(b.index), in: arena))
        if !keyA.elementsEqual(keyB) { return keyA.lexicographicallyPrecedes(keyB) }
        return a.index < b.index
    }

    /// The positions in `byHash` of keys whose hash is `hash`.
    func bucket(_ hash: UInt64, in arena: UnsafeRawBufferPointer) -> Range<Int> {
        func firstAtOrAbove(_ hash: UInt64) -> Int {
            var (low, high) = (0, byHash.count)
            while low < high {
                let middle = (low + high) / 2
                let probe = Self.hash(entries.key(Int(byHash[middle]), in: arena))
                if probe < hash { low = middle + 1 } else { high = middle }
            }
            return low
        }
        let start = firstAtOrAbove(hash)
        return start..<(hash == Self.nonASCIIHash ? byHash.count : firstAtOrAbove(hash + 1))
    }

    /// Calls `body` with each distinct key's run in `byHash` (its versions, oldest first).
    func forEachKey(_ body: (UnsafeRawBufferPointer, ArraySlice<UInt32>) -> Void) {
        entries.keyBytes.withUnsafeBytes { arena in
            var start = 0
            while start < byHash.count {
                let key = entries.key(Int(byHash[start]), in: arena)
                var end = start + 1
                while end < byHash.count, entries.key(Int(byHash[end]), in: arena).elementsEqual(key) { end += 1 }
                body(key, byHash[start..<end])
                start = end
            }
        }
    }

    var distinctKeys: Int {
        var count = 0
        forEachKey { _, _ in count += 1 }
        return count
    }
}

/// A segment's key index as a query sees it: its sealed table, or the chunks of one still growing.
struct SegmentKeyIndex: Sendable {
    var baseOffset: Int64
    var sealed: SealedKeys?
    var growing: KeyChunks
    /// Damaged ranges (§6.2): their records cannot be read, so they are not answered.
    var damaged: [DamagedRange]

    func isDamaged(_ offset: Int64) -> Bool { !damaged.isEmpty && damaged.contains { $0.contains(offset) } }

    /// Calls `body` with each entry's key and version in offset order, sealed or growing, until it returns false.
    func forEachEntry(_ body: (UnsafeRawBufferPointer, KeyVersion) -> Bool) {
        if let sealed {
            sealed.entries.keyBytes.withUnsafeBytes { arena in
                for index in sealed.entries.entries.indices {
                    guard body(sealed.entries.key(index, in: arena), sealed.entries.version(index, base: baseOffset))
                    else { return }
                }
            }
            return
        }
        growing.forEach { key, offsetDelta, appendTime, tombstone in
            body(key, KeyVersion(offset: baseOffset + Int64(offsetDelta), appendTime: appendTime, tombstone: tombstone))
        }
    }

    /// Adds the versions of `key` below `end` to `found` (unordered when the key is not ASCII).
    func versions(of key: String, ascii: Bool, below end: Int64, into found: inout [KeyVersion]) {
        func add(_ version: KeyVersion) {
            if version.offset < end, !isDamaged(version.offset) { found.append(version) }
        }
        var utf8 = key
        utf8.withUTF8 { utf8 in
            let wanted = UnsafeRawBufferPointer(utf8)
            if let sealed, ascii {
                sealed.entries.keyBytes.withUnsafeBytes { arena in
                    for position in sealed.bucket(SealedKeys.hash(wanted), in: arena)
                    where sealed.entries.key(Int(sealed.byHash[position]), in: arena).elementsEqual(wanted) {
                        add(sealed.entries.version(Int(sealed.byHash[position]), base: baseOffset))
                    }
                    // A key with bytes outside ASCII may still equal an ASCII String (U+212A KELVIN SIGN is "K").
                    for position in sealed.bucket(SealedKeys.nonASCIIHash, in: arena) {
                        let index = Int(sealed.byHash[position])
                        if String(decoding: sealed.entries.key(index, in: arena), as: UTF8.self) == key {
                            add(sealed.entries.version(index, base: baseOffset))
                        }
                    }
                }
                return
            }
            forEachEntry { candidate, version in
                // Entries are in offset order: none after this one is below `end`.
                guard version.offset < end else { return false }
                let equal = ascii && candidate.elementsEqual(wanted)
                let asString = !ascii || candidate.contains(where: { $0 >= 0x80 })
                if equal || asString && String(decoding: candidate, as: UTF8.self) == key { add(version) }
                return true
            }
        }
    }

    /// Calls `body` with every entry's key (as a String) and version, in no particular order; damaged ones too.
    /// For compaction, which decides per record.
    func forEachVersion(_ body: (String, KeyVersion) -> Void) {
        forEachEntry { key, version in
            body(String(decoding: key, as: UTF8.self), version)
            return true
        }
    }

    /// Sets each key's newest version below `end` in `latest`, unless it holds a newer one.
    func latest(below end: Int64, into latest: inout [String: KeyVersion]) {
        func offer(_ key: UnsafeRawBufferPointer, _ version: KeyVersion) {
            let name = String(decoding: key, as: UTF8.self)
            if let held = latest[name], held.offset > version.offset { return }
            latest[name] = version
        }
        if let sealed {
            sealed.forEachKey { key, run in
                let newest = run.reversed().lazy.map { sealed.entries.version(Int($0), base: baseOffset) }
                    .first { $0.offset < end && !isDamaged($0.offset) }
                if let newest { offer(key, newest) }
            }
            return
        }
        forEachEntry { key, version in
            guard version.offset < end else { return false }
            if !isDamaged(version.offset) { offer(key, version) }
            return true
        }
    }
}
