#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import TelexProtocol

/// The recovery point: the base offset below which every segment is sealed — its `.log` fsynced after its last
/// batch and the directory fsynced after it — so recovery may trust those segments by their indexes and must scan
/// the rest (Protocol/STORAGE.md §6). Kafka keeps the same checkpoint for the same reason.
///
/// The file `recovery-point` in the topic directory holds the offset (`i64`) and the CRC-32 of those 8 bytes
/// (`u32`), big-endian, and is replaced atomically. It only ever moves forward, and only after the fsyncs it
/// stands for, so a crash leaves an older point at worst, which makes recovery scan more, never less.
extension TopicLog {
    static let recoveryPointFileName = "recovery-point"

    /// The recovery point in `directory`; nil when there is none (a topic that never rolled, a data directory
    /// from before the file existed) or it is damaged, which makes recovery scan every segment.
    static func readRecoveryPoint(directory: String, logger: Logger) -> Int64? {
        let path = directory + "/" + recoveryPointFileName
        guard FileIO.exists(path) else { return nil }
        do throws(TelexError) {
            let fd = try FileIO.open(path, flags: O_RDONLY)
            defer { _ = FileIO.close(fd, path: path) }
            var buffer = ByteBuffer()
            _ = try FileIO.read(fd, at: 0, length: 13, into: &buffer, path: path)
            guard buffer.readableBytes == 12, let offset = buffer.getInteger(at: 0, as: Int64.self),
                let stored = buffer.getInteger(at: 8, as: UInt32.self),
                stored == CRC32.checksum(buffer.getSlice(at: 0, length: 8)!), offset >= 0
            else {
                logger.warning("ignoring a damaged recovery point; every segment is scanned", metadata: ["path": "\(path)"])
                return nil
            }
            return offset
        } catch {
            logger.warning("cannot read the recovery point; every segment is scanned",
                           metadata: ["path": "\(path)", "error": "\(error)"])
            return nil
        }
    }

    /// Records that every segment below `offset` is sealed. Blocking (a write, two fsyncs and a rename): called on
    /// the sync queue after a round that sealed segments, and as the log opens. A failure is logged and leaves the
    /// older point, which is safe.
    func writeRecoveryPoint(_ offset: Int64) {
        var bytes = ByteBuffer()
        bytes.writeInteger(offset)
        bytes.writeInteger(CRC32.checksum(bytes))
        do throws(TelexError) {
            try FileIO.replaceAtomically(directory + "/" + Self.recoveryPointFileName, in: directory, with: bytes)
        } catch {
            logger.warning("could not record the recovery point; the next open scans more segments",
                           metadata: ["offset": "\(offset)", "error": "\(error)"])
        }
    }

    /// After a round sealed every segment below `sealed`: writes the producer snapshot a roll queued and moves
    /// the recovery point. Blocking: on the sync queue, after the round's acknowledgements.
    func recordSealing(below sealed: Int64) {
        guard !state.withLock({ $0.closedFiles }) else { return }
        writeProducerSnapshot(sealedBelow: sealed)
        writeRecoveryPoint(sealed)
    }
}
