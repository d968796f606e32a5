import TelexProtocol

extension HeaderWindow {
    /// The batch header at `position` if it continues the offset chain, first stepping over any damaged range
    /// starting there (`expected` then becomes the range's `nextOffset`); nil at the end of the bytes, or at a
    /// header that is implausible (below a header's length, past `limit`, magic not 1, no records) or whose base
    /// offset is not `expected` (or, with `allowsGaps`, is below it). On a header it returns, `expected` moves to its `nextOffset`.
    ///
    /// For walks over batches that may not have been CRC-checked yet (a sealed segment trusted by its indexes
    /// at open): a flipped `batchLength` makes the walk jump into the middle of a batch, and the bytes there must
    /// never be taken for a header. The walk stops instead.
    mutating func chainedHeader(
        skippingDamageAt position: inout Int, expected: inout Int64
    ) throws(TelexError) -> RecordBatchHeader? {
        while let damage = damaged.first(where: { $0.position == position }) {
            position = damage.end
            expected = damage.nextOffset
        }
        guard let header = try header(at: position), header.totalSize >= RecordBatchHeader.size,
            position + header.totalSize <= limit, header.magic == RecordBatchHeader.currentMagic,
            header.recordCount >= 1, header.baseOffset == expected || (allowsGaps && header.baseOffset > expected)
        else { return nil }
        expected = header.nextOffset
        return header
    }
}
