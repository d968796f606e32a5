#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import TelexProtocol

/// An archived segment's local copy rewritten without some records (a purge reaching below the local log,
/// Protocol/STORAGE.md §16.2): what to upload as the segment's next rewrite.
public struct ArchivedRewrite: Sendable, Equatable {
    /// What was removed, as a rewrite of a local segment reports it.
    public var rewrite: SegmentRewrite
    /// The new file as the archive records it: the same base and end offset, `rewrites` one more, its bytes.
    public var segment: ArchivedSegment
    /// Append time of the new file's oldest batch (nil when no batch is left).
    public var firstAppendTime: Int64?
    /// The encoded `.compacted` marker (§15.2) to upload with the new file.
    public var marker: ByteBuffer
}

extension TopicLog {
    /// Rewrites the archived segment `entry` of `topic`, whose verified local copy is at `path` (the archive
    /// cache's), into a new file at `output` keeping the records `keep` accepts, at their offsets, exactly as a
    /// local rewrite would (§15.1); nil when `keep` accepts every record (nothing is written). `previousMarker` is
    /// the segment's archived `.compacted` object, if any, whose removed-records count the new marker carries on.
    ///
    /// The copy is CRC-checked whole first: a damaged one is refused with `DATA_LOSS` naming the topic and offset.
    /// The new file is fdatasynced and read back (a full scan) before this returns; on failure it is removed.
    /// Blocking: call it off event loops.
    public static func rewriteArchivedCopy(
        topic: String, path: String, entry: ArchivedSegment, previousMarker: ByteBuffer?, into output: String,
        limits: RecordBatchLimits = RecordBatchLimits(), keep: (RecordVersion) -> Bool
    ) throws(TelexError) -> ArchivedRewrite? {
        // A cache of its own: these files belong to no log. The indexes a scan builds live in memory and are dropped.
        let files = FileDescriptorCache(budget: 4)
        let indexInterval = LogConfiguration().indexIntervalBytes
        let segment = try scanArchivedCopy(entry, path: path, topic: topic, files: files, indexInterval: indexInterval,
                                           limits: limits)
        defer { segment.closeFiles() }
        let source = RewriteSource(segment: segment, lease: try segment.logFile.lease(), size: segment.size,
                                   following: entry.nextOffset, lastAppendTime: segment.lastAppendTime)
        var rewriter = SegmentRewriter(limits: limits)
        let (plan, removed, kept) = try planRewrite(of: source, topic: topic, rewriter: rewriter, keep: keep)
        guard !removed.isEmpty else { return nil }
        let fd = try FileIO.open(output, flags: O_WRONLY | O_CREAT | O_TRUNC)
        let bytes = try writeRewritten(fd, path: output, from: source, topic: topic, plan: plan, rewriter: &rewriter)
        let previous = previousMarker.flatMap { CompactionMarker(decoding: $0) }
        let marker = CompactionMarker(
            endOffset: entry.nextOffset,
            lastAppendTime: [segment.lastAppendTime, entry.lastAppendTime, previous?.lastAppendTime].compactMap { $0 }
                .max(),
            recordsKept: kept, recordsRemoved: Int64(removed.count) + (previous?.recordsRemoved ?? 0),
            rewrites: entry.rewrites + 1)
        let rewritten = ArchivedSegment(baseOffset: entry.baseOffset, nextOffset: entry.nextOffset, bytes: bytes,
                                        rewrites: marker.rewrites, lastAppendTime: marker.lastAppendTime)
        // Read back as a reader of the archive will, so a file that would not serve is never uploaded.
        let check: Segment
        do throws(TelexError) {
            check = try scanArchivedCopy(rewritten, path: output, topic: topic, files: files,
                                         indexInterval: indexInterval, limits: limits)
        } catch {
            try? FileIO.remove(output)
            throw error
        }
        defer { check.closeFiles() }
        return ArchivedRewrite(
            rewrite: SegmentRewrite(topic: topic, baseOffset: entry.baseOffset, removedOffsets: removed,
                                    recordsKept: kept, bytesBefore: segment.size, bytesAfter: bytes),
            segment: rewritten, firstAppendTime: check.firstAppendTime, marker: marker.encoded())
    }
}
