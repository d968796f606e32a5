import NIOCore
import TelexProtocol

// TEMPORARY until p12-proto's RecordBatch.keys(of:header:limits:) is merged (design12.md A); not committed.
struct BatchKey: Sendable, Equatable {
    var key: ByteBuffer
    var type: String
}

extension RecordBatch {
    static func keys(
        of batch: ByteBuffer, header: RecordBatchHeader, limits: RecordBatchLimits = .init()
    ) throws(TelexError) -> [BatchKey] {
        let (_, records) = try decodeRecords(batch, limits: limits)
        return records.map { record in
            let type = record.headers.first { $0.name == "ce-type" }
                .map { String(decoding: $0.value.readableBytesView, as: UTF8.self) } ?? ""
            return BatchKey(key: record.key, type: type)
        }
    }
}
