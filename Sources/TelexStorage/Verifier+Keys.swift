import NIOCore
import TelexProtocol

/// Checks of a segment's `.keys` file against the batches its `.log` walk found (Protocol/STORAGE.md §10.1, §14).
extension StorageVerifier.Run {
    /// Checks `bytes`, the `.keys` (nil if missing, which is no problem: the active segment has none, nor does a
    /// log kept with `indexKeys` off, and the broker rebuilds a missing one): sound, written for the segment as
    /// it is, and holding exactly the keys of its intact batches. The last check is skipped when the walk found
    /// damage, which is reported already.
    mutating func verifyKeys(
        _ topic: String, _ file: String, _ bytes: ByteBuffer?, baseOffset: Int64, walk: StorageVerifier.LogWalk,
        logIntact: Bool
    ) {
        guard let bytes else { return }
        let table: KeyTableFile
        do throws(TelexError) {
            table = try KeyTableFile.decode(bytes, path: file)
            try table.check(against: baseOffset, nextOffset: walk.nextOffset, logSize: walk.size, path: file)
        } catch {
            return add(topic, file, nil, nil, "\(error.message) (the broker rebuilds it on open)")
        }
        guard logIntact, table.keys != walk.keys else { return }
        let offsets = { (keys: SegmentKeys) in
            Set(keys.versions.flatMap { key, versions in
                versions.map {
                    "\(key) at offset \($0.offset) appended \($0.appendTime)\($0.tombstone ? " (tombstone)" : "")"
                }
            })
        }
        let stored = offsets(table.keys)
        let found = offsets(walk.keys)
        let sample = stored.symmetricDifference(found).sorted().prefix(3).joined(separator: ", ")
        add(topic, file, nil, nil, """
            holds \(table.keys.records) key versions, the log's batches \(walk.keys.records); they differ in \
            \(sample) (delete the file: the broker rebuilds it on open)
            """)
    }
}
