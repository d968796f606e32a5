import NIOCore
import TelexProtocol

/// A sealed segment's `.keys` file: its key table, and the segment state it was built from
/// (Protocol/STORAGE.md §14.2). All integers big-endian.
///
/// ```
/// magic u32 "TKEY" · version u8 (2) · baseOffset i64 · nextOffset i64 · logSize i64
/// timeCount u32 · timeCount × appendTime i64
/// entryCount u32 · entryCount × (offsetDelta u32 · timeIndex u32 · keyLength u16 · flags u8)
/// keyBytesLength u32 · the keys' bytes, in entry order
/// entryCount × entry u32 (the entries ordered by key hash, key bytes, offset)
/// crc u32 (CRC-32 of every byte before it)
/// ```
struct KeyTableFile: Equatable {
    static let magic: UInt32 = 0x544B_4559
    static let version: UInt8 = 2
    static let suffix = ".keys"

    var baseOffset: Int64
    /// The segment's next offset when the table was written.
    var nextOffset: Int64
    /// The segment's `.log` size in bytes when the table was written.
    var logSize: Int64
    var keys: SealedKeys

    func encoded() -> ByteBuffer {
        let entries = keys.entries
        var buffer = ByteBufferAllocator().buffer(
            capacity: 49 + 8 * entries.appendTimes.count + 15 * entries.count + entries.keyBytes.count)
        buffer.writeMultipleIntegers(Self.magic, Self.version, baseOffset, nextOffset, logSize,
                                     UInt32(entries.appendTimes.count))
        for time in entries.appendTimes { buffer.writeInteger(time) }
        buffer.writeInteger(UInt32(entries.count))
        for entry in entries.entries {
            buffer.writeMultipleIntegers(entry.offsetDelta, entry.appendTimeIndex, entry.keyLength,
                                         UInt8(entry.tombstone ? 1 : 0))
        }
        buffer.writeInteger(UInt32(entries.keyBytes.count))
        buffer.writeBytes(entries.keyBytes)
        for index in keys.byHash { buffer.writeInteger(index) }
        buffer.writeInteger(CRC32.checksum(buffer))
        return buffer
    }

    /// Parses and checks a `.keys` file: its CRC, its fields, entries in increasing offset order inside
    /// `baseOffset..<nextOffset`, each run of append times once, and the hash order. Throws `storageFailure`
    /// naming the problem.
    static func decode(_ bytes: ByteBuffer, path: String) throws(TelexError) -> KeyTableFile {
        func damaged(_ problem: String) -> TelexError {
            TelexError(.storageFailure, "\(path): damaged key table: \(problem)")
        }
        guard bytes.readableBytes >= 41 + 4 else { throw damaged("\(bytes.readableBytes) bytes is too short") }
        let body = bytes.getSlice(at: bytes.readerIndex, length: bytes.readableBytes - 4)!
        let stored = bytes.getInteger(at: bytes.writerIndex - 4, as: UInt32.self)!
        guard CRC32.checksum(body) == stored else { throw damaged("CRC mismatch") }
        var buffer = body
        let (magic, version, baseOffset, nextOffset, logSize, timeCount) = buffer.readMultipleIntegers(
            as: (UInt32, UInt8, Int64, Int64, Int64, UInt32).self)!
        guard magic == Self.magic else { throw damaged("bad magic \(RecordBatch.hex(magic))") }
        guard version == Self.version else { throw damaged("unknown version \(version) (this telexd reads 2)") }
        guard baseOffset >= 0, nextOffset >= baseOffset, nextOffset - baseOffset <= Int64(UInt32.max), logSize >= 0
        else { throw damaged("base offset \(baseOffset), next offset \(nextOffset), log size \(logSize)") }
        guard Int(timeCount) <= buffer.readableBytes / 8 else { throw damaged("timeCount \(timeCount) is too large") }
        var entries = KeyEntries()
        entries.appendTimes.reserveCapacity(Int(timeCount))
        for index in 0..<Int(timeCount) {
            let time = buffer.readInteger(as: Int64.self)!
            guard index == 0 || time != entries.appendTimes[index - 1] else {
                throw damaged("append time \(index) repeats the one before it")
            }
            entries.appendTimes.append(time)
        }
        guard let entryCount = buffer.readInteger(as: UInt32.self), Int(entryCount) <= buffer.readableBytes / 11 else {
            throw damaged("entryCount is truncated or too large for the \(buffer.readableBytes) bytes left")
        }
        entries.entries.reserveCapacity(Int(entryCount))
        var keyStart = 0
        for index in 0..<Int(entryCount) {
            let (delta, time, length, flags) = buffer.readMultipleIntegers(as: (UInt32, UInt32, UInt16, UInt8).self)!
            let previous = entries.entries.last
            guard baseOffset + Int64(delta) < nextOffset, previous.map({ delta > $0.offsetDelta }) ?? true else {
                throw damaged("entry \(index): offset \(baseOffset + Int64(delta)) is out of order or not below \(nextOffset)")
            }
            let step = previous.map { Int64(time) - Int64($0.appendTimeIndex) } ?? Int64(time)
            guard step == 0 || (step == 1 && previous != nil), time < timeCount, length > 0, flags <= 1 else {
                throw damaged("entry \(index): append time index \(time) of \(timeCount), key length \(length), flags \(flags)")
            }
            // The keys follow the entries: they cannot take more than the bytes left (nor overflow a u32 start).
            guard keyStart + Int(length) <= buffer.readableBytes else {
                throw damaged("entry \(index): its key would end at byte \(keyStart + Int(length)) of keys the file cannot hold")
            }
            entries.entries.append(KeyEntry(keyStart: UInt32(keyStart), offsetDelta: delta, appendTimeIndex: time,
                                            keyLength: length, tombstone: flags == 1))
            keyStart += Int(length)
        }
        guard entryCount == 0 ? timeCount == 0 : entries.entries.last!.appendTimeIndex == timeCount - 1 else {
            throw damaged("\(timeCount) append times, not all used by the entries")
        }
        guard let keyBytesLength = buffer.readInteger(as: UInt32.self), Int(keyBytesLength) == keyStart,
            let keyBytes = buffer.readBytes(length: keyStart)
        else { throw damaged("the entries' keys take \(keyStart) bytes; keyBytesLength or the bytes disagree") }
        entries.keyBytes = keyBytes
        guard buffer.readableBytes == 4 * Int(entryCount) else {
            throw damaged("\(buffer.readableBytes) bytes for the hash order of \(entryCount) entries")
        }
        var byHash: [UInt32] = []
        byHash.reserveCapacity(Int(entryCount))
        var seen = [Bool](repeating: false, count: Int(entryCount))
        for _ in 0..<Int(entryCount) {
            let index = buffer.readInteger(as: UInt32.self)!
            guard index < entryCount, !seen[Int(index)] else { throw damaged("hash order repeats or exceeds entry \(index)") }
            seen[Int(index)] = true
            byHash.append(index)
        }
        let sorted = entries.keyBytes.withUnsafeBytes { arena in
            var previous: (hash: UInt64, index: UInt32)?
            for index in byHash {
                let current = (hash: SealedKeys.hash(entries.key(Int(index), in: arena)), index: index)
                if let previous, !SealedKeys.precedes(previous, current, entries, arena) { return false }
                previous = current
            }
            return true
        }
        guard sorted else { throw damaged("entries are not in hash order") }
        return KeyTableFile(baseOffset: baseOffset, nextOffset: nextOffset, logSize: logSize,
                            keys: SealedKeys(entries: entries, byHash: byHash))
    }
}
