import NIOCore
import TelexProtocol

/// One stored record as a rewrite sees it: where it is, its key and whether it is a tombstone (from the batch's
/// key table), and when the broker appended its batch.
public struct RecordVersion: Sendable, Equatable {
    public var offset: Int64
    /// The record key decoded from UTF-8 (the article's uri); empty for keyless records.
    public var key: String
    /// The record's first `ce-type` header is exactly `article.deleted`.
    public var isTombstone: Bool
    /// The broker append time of the record's batch (ms since the epoch).
    public var appendTime: Int64
}

/// Rewrites stored batches keeping chosen records at their offsets (Protocol/STORAGE.md §15.1).
///
/// A batch whose records are all kept is copied byte for byte (its CRC intact); one with none kept is dropped;
/// otherwise every run of consecutive kept records becomes a batch of its own, built with the same codec, whose
/// base offset is the run's first offset and whose append time is the original batch's, with producer id 0 and
/// sequence −1 and a CRC computed here.
struct SegmentRewriter {
    let limits: RecordBatchLimits
    private let decompressor = BatchDecompressor()
    private let compressor = BatchCompressor()
    private var scratch = ByteBuffer()

    init(limits: RecordBatchLimits) {
        self.limits = limits
    }

    /// The version of every record of `batch` (one whole stored batch, CRC checked here), in offset order: from
    /// its key table when it has one (no inflating), else from its records.
    func versions(of batch: ByteBuffer, context: @autoclosure () -> String) throws(TelexError) -> [RecordVersion] {
        let header = try RecordBatch.validate(batch, limits: limits, context: context())
        return try RecordBatch.keys(of: batch, header: header, limits: limits).enumerated().map { index, entry in
            RecordVersion(offset: header.baseOffset + Int64(index),
                          key: String(decoding: entry.key.readableBytesView, as: UTF8.self),
                          isTombstone: entry.isTombstone, appendTime: header.appendTime)
        }
    }

    /// Writes to `output` what is left of `batch` (one whole stored batch) when only the records whose `keep`
    /// flag is set stay (`keep` has one flag per record, in order).
    mutating func rewrite(
        _ batch: ByteBuffer, keep: [Bool], into output: inout ByteBuffer, context: @autoclosure () -> String
    ) throws(TelexError) {
        if keep.allSatisfy({ $0 }) {
            output.writeImmutableBuffer(batch)
            return
        }
        guard keep.contains(true) else { return }
        let (header, records) = try RecordBatch.decodeRecords(
            batch, limits: limits, decompressor: decompressor, context: context(), scratch: &scratch)
        guard records.count == keep.count else {
            throw TelexError(.storageFailure,
                "\(context()): \(records.count) records but \(keep.count) keep flags", offset: header.baseOffset)
        }
        var builder = RecordBatchBuilder()
        var runStart = 0
        for (index, record) in records.enumerated() {
            // A run ends at a removed record, and before a record whose timestamp is too far from the run's first
            // for a timestamp delta (i32): the builder would clamp it.
            if builder.count > 0, !keep[index] || !fitsDelta(record.timestamp, from: records[runStart].timestamp) {
                flush(&builder, baseOffset: header.baseOffset + Int64(runStart), header: header, into: &output)
            }
            guard keep[index] else { continue }
            if builder.count == 0 { runStart = index }
            builder.append(record)
        }
        if builder.count > 0 {
            flush(&builder, baseOffset: header.baseOffset + Int64(runStart), header: header, into: &output)
        }
    }

    private func fitsDelta(_ timestamp: Int64, from first: Int64) -> Bool {
        let (delta, overflow) = timestamp.subtractingReportingOverflow(first)
        return !overflow && delta >= Int64(Int32.min) && delta <= Int64(Int32.max)
    }

    private func flush(
        _ builder: inout RecordBatchBuilder, baseOffset: Int64, header: RecordBatchHeader, into output: inout ByteBuffer
    ) {
        var built = builder.build(codec: header.codec!, compressor: compressor, producerID: 0, producerSequence: -1)
        RecordBatch.assign(baseOffset: baseOffset, appendTime: header.appendTime, in: &built, at: built.readerIndex)
        output.writeImmutableBuffer(built)
        builder = RecordBatchBuilder()
    }
}
