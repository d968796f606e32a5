import Dispatch
import NIOCore
import Synchronization
import TelexProtocol
import TelexStorage

#if canImport(Glibc)
    import Glibc
#endif

/// A deliberate bug for Scripts/crash-test.sh to prove it catches lost acknowledged events. Enabled only by the
/// environment variable `TELEX_TEST_FAULT=ack-before-write`; telexd refuses any other value and logs the fault
/// at startup.
public enum TestFault: String, Sendable {
    /// PUBLISH_ACK goes out at once with the offset the batch will get; the batch is written 50 ms later, so a
    /// kill in between loses an acknowledged batch.
    case ackBeforeWrite = "ack-before-write"

    /// The raw value of `TELEX_TEST_FAULT`, if set.
    public static let requested: String? = getenv("TELEX_TEST_FAULT").map { String(cString: $0) }
    /// The fault in force, if `TELEX_TEST_FAULT` names one.
    public static let active: TestFault? = requested.flatMap(TestFault.init(rawValue:))

    /// Records per topic acknowledged but not yet written, so predicted offsets follow on from each other.
    private static let unwritten = Mutex<[String: Int64]>([:])
    /// One serial queue, so delayed writes happen in the order their offsets were predicted.
    private static let queue = DispatchQueue(label: "telex.test-fault")

    /// Returns the offset `batch` will be written at and writes it after a delay, calling `durable` once it is
    /// durable; nil if the batch is invalid.
    static func acknowledgeBeforeWriting(
        _ batch: ByteBuffer, to log: TopicLog, durable: @escaping @Sendable () -> Void
    ) -> (offset: Int64, count: UInt32)? {
        guard
            let header = try? RecordBatch.validate(
                batch, limits: log.configuration.batchLimits, requireKeyTable: true, context: "test fault")
        else {
            return nil
        }
        let count = Int64(header.recordCount)
        let offset = unwritten.withLock { unwritten in
            defer { unwritten[log.topic, default: 0] += count }
            return log.endOffset + unwritten[log.topic, default: 0]
        }
        queue.asyncAfter(deadline: .now() + .milliseconds(50)) {
            unwritten.withLock { unwritten in
                if let result = try? log.append(batch) { log.whenDurable(result) { _ in durable() } }
                unwritten[log.topic, default: 0] -= count
            }
        }
        return (offset, header.recordCount)
    }
}
