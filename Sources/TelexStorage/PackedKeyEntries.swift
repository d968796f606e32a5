/// A full chunk of a growing segment's key index, packed once it stops growing (Protocol/STORAGE.md §14.1): per
/// entry a flags byte (bit 0 tombstone, bit 1 the next append time), the offset's distance from the previous
/// entry's, and the key as the length it shares with the previous key plus the rest, as LEB128 varints; the
/// append times as in `KeyEntries`. Consecutive article keys share most of their bytes
/// (`urn:telex:article:1041`, `…:1042`), so an entry takes about 7 bytes instead of 16 plus its key.
/// Immutable; read in offset order only (growing segments are scanned, never searched).
struct PackedKeyEntries: Sendable {
    let count: Int
    let tombstones: Int
    /// The sum of the keys' lengths (what `KeyEntries.keyBytes` would hold).
    let keyByteCount: Int
    private let appendTimes: [Int64]
    private let bytes: [UInt8]

    init(_ entries: KeyEntries) {
        count = entries.count
        tombstones = entries.tombstones
        keyByteCount = entries.keyBytes.count
        appendTimes = entries.appendTimes
        var stream: [UInt8] = []
        stream.reserveCapacity(entries.count * 12)
        entries.keyBytes.withUnsafeBytes { arena in
            var previous = UnsafeRawBufferPointer(rebasing: arena[0..<0])
            var (previousDelta, previousTime): (UInt32, UInt32) = (0, 0)
            for (index, entry) in entries.entries.enumerated() {
                let key = entries.key(index, in: arena)
                let limit = min(key.count, previous.count)
                var shared = 0
                while shared < limit, key[shared] == previous[shared] { shared += 1 }
                stream.append((entry.tombstone ? 1 : 0) | (entry.appendTimeIndex != previousTime ? 2 : 0))
                Self.write(entry.offsetDelta &- previousDelta, to: &stream)
                Self.write(UInt32(shared), to: &stream)
                Self.write(UInt32(key.count - shared), to: &stream)
                stream.append(contentsOf: UnsafeRawBufferPointer(rebasing: key[shared...]))
                (previous, previousDelta, previousTime) = (key, entry.offsetDelta, entry.appendTimeIndex)
            }
        }
        // Without the spare capacity: the chunk lives as long as its segment grows.
        bytes = [UInt8](unsafeUninitializedCapacity: stream.count) { buffer, initialized in
            initialized = buffer.initialize(fromContentsOf: stream)
        }
    }

    /// Bytes the chunk's arrays hold.
    var residentBytes: Int { bytes.count + appendTimes.count * MemoryLayout<Int64>.stride }

    /// Calls `body` with each entry in offset order: its key (valid during the call only), offset relative to the
    /// segment's base, append time and tombstone flag, until `body` returns false. Returns false if it did.
    @discardableResult
    func forEach(_ body: (UnsafeRawBufferPointer, UInt32, Int64, Bool) -> Bool) -> Bool {
        var key: [UInt8] = []
        key.reserveCapacity(256)
        return bytes.withUnsafeBytes { stream in
            var position = 0
            var (delta, time): (UInt32, Int) = (0, 0)
            for _ in 0..<count {
                let flags = stream[position]
                position += 1
                if flags & 2 != 0 { time += 1 }
                delta &+= Self.read(stream, &position)
                let shared = Int(Self.read(stream, &position))
                let rest = Int(Self.read(stream, &position))
                key.removeLast(key.count - shared)
                key.append(contentsOf: UnsafeRawBufferPointer(rebasing: stream[position..<position + rest]))
                position += rest
                guard key.withUnsafeBytes({ body($0, delta, appendTimes[time], flags & 1 != 0) }) else { return false }
            }
            return true
        }
    }

    private static func write(_ value: UInt32, to stream: inout [UInt8]) {
        var value = value
        while value >= 0x80 {
            stream.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        stream.append(UInt8(value))
    }

    private static func read(_ stream: UnsafeRawBufferPointer, _ position: inout Int) -> UInt32 {
        var (value, shift): (UInt32, UInt32) = (0, 0)
        while true {
            let byte = stream[position]
            position += 1
            value |= UInt32(byte & 0x7F) << shift
            if byte < 0x80 { return value }
            shift += 7
        }
    }
}
