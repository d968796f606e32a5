import TelexProtocol

/// Per-producer memory of recent batches, so a retried batch is answered with its original offsets.
///
/// Keyed by sequence, not ordered by it: concurrent publishers sharing one producer id may send batches
/// out of sequence order, and each is still stored once.
struct ProducerState {
    static let remembered = 4096
    var lastAppendTime: Int64
    private var offsets: [Int32: (baseOffset: Int64, recordCount: UInt32)] = [:]
    private var order: [Int32] = []
    private var orderHead = 0

    init(lastAppendTime: Int64) {
        self.lastAppendTime = lastAppendTime
    }

    mutating func remember(_ sequence: Int32, baseOffset: Int64, recordCount: UInt32, appendTime: Int64) {
        lastAppendTime = appendTime
        offsets[sequence] = (baseOffset, recordCount)
        order.append(sequence)
        if order.count - orderHead > Self.remembered {
            offsets[order[orderHead]] = nil
            orderHead += 1
            if orderHead >= Self.remembered {
                order.removeFirst(orderHead)
                orderHead = 0
            }
        }
    }

    func lookup(_ sequence: Int32) -> (baseOffset: Int64, recordCount: UInt32)? {
        offsets[sequence]
    }

    /// True when the memory is full and `sequence` is older than everything in it: it cannot be told apart
    /// from a forgotten batch, so it must not be stored blindly.
    func isTooOld(_ sequence: Int32) -> Bool {
        guard order.count - orderHead >= Self.remembered else { return false }
        return sequence < order[orderHead]
    }

    /// The newest `limit` remembered batches, oldest first (for a snapshot).
    func recent(_ limit: Int) -> [(sequence: Int32, baseOffset: Int64, recordCount: UInt32)] {
        order[max(orderHead, order.count - limit)...].compactMap { sequence in
            offsets[sequence].map { (sequence, $0.baseOffset, $0.recordCount) }
        }
    }

    /// The sequence remembered longest.
    var oldestRemembered: Int32? { orderHead < order.count ? order[orderHead] : nil }
}
