import Dispatch
import Histogram
import NIOCore
import TelexCLI
import TelexClient
import TelexProtocol

/// Percentiles of one latency distribution, in nanoseconds.
struct Percentiles {
    var p50: Double
    var p99: Double
    var p999: Double
    var max: Double
    var count: Int

    init(p50: Double, p99: Double, p999: Double, max: Double, count: Int) {
        (self.p50, self.p99, self.p999, self.max, self.count) = (p50, p99, p999, max, count)
    }

    init(_ histogram: Histogram<UInt64>) {
        self.init(
            p50: Double(histogram.valueAtPercentile(50)), p99: Double(histogram.valueAtPercentile(99)),
            p999: Double(histogram.valueAtPercentile(99.9)), max: Double(histogram.max),
            count: Int(histogram.totalCount))
    }

    /// The median of each percentile over several runs.
    static func median(_ runs: [Percentiles]) -> Percentiles {
        Percentiles(
            p50: Stats.median(runs.map(\.p50)), p99: Stats.median(runs.map(\.p99)),
            p999: Stats.median(runs.map(\.p999)), max: Stats.median(runs.map(\.max)),
            count: runs.map(\.count).min() ?? 0)
    }
}

/// publish→delivery and publish→ack of one latency run, and how late the publisher handed each event to the
/// client (`send`: from its intended time until `send` returned), the load generator's own share of both.
struct LatencyResult {
    var delivery: Percentiles
    var ack: Percentiles
    var send: Percentiles
}

/// A latency run without coordinated omission: single-event batches are due on a fixed schedule (`rate` a second)
/// and every latency is measured from the event's *intended* send time. When the publisher falls behind (a slow
/// ack window, a descheduled task), the events it sends late carry the wait in their latency instead of the
/// schedule quietly sliding.
struct LatencyRun {
    static let intendedHeader = "bench-intended-ns"

    var rate: Int
    var duration: Double

    func run(_ records: [Record], topic: String, publisher: TelexClient, consumer: TelexClient) async throws
        -> LatencyResult
    {
        // Create the topic, then subscribe from its end so only timed events are measured.
        _ = try await publisher.publish([records[0]], to: topic)
        let subscription = try await consumer.subscribe(topic, from: .end)
        let total = Int(Double(rate) * duration)
        let receiving = Task { () throws -> Histogram<UInt64> in
            var histogram = Self.histogram()
            var received = 0
            for try await delivered in subscription {
                let now = DispatchTime.now().uptimeNanoseconds
                guard let intended = delivered.record.header(Self.intendedHeader).flatMap(UInt64.init) else { continue }
                _ = histogram.record(now &- min(now, intended))
                received += 1
                if received >= total { break }
            }
            return histogram
        }
        let interval = 1_000_000_000 / UInt64(rate)
        let start = DispatchTime.now().uptimeNanoseconds + 10_000_000
        // Each ack is awaited by its own child task, so its time is taken when it arrives, not when it is read.
        var sendLateness = Self.histogram()
        let acks = try await withThrowingTaskGroup(of: UInt64.self, returning: Histogram<UInt64>.self) { acks in
            for index in 0..<total {
                let intended = start + UInt64(index) * interval
                let now = DispatchTime.now().uptimeNanoseconds
                // Sleep, not spin: on two cores a spinning publisher would steal the broker's CPU. A late wake-up
                // counts against the event: its latency runs from `intended`.
                if intended > now { try await Task.sleep(nanoseconds: intended - now) }
                var record = records[(index + 1) % records.count]
                record.headers.append(RecordHeader(name: Self.intendedHeader, value: String(intended)))
                let prepared = try await publisher.prepare([record], topic: topic)
                let pending = try await publisher.send(prepared[0])
                let sent = DispatchTime.now().uptimeNanoseconds
                _ = sendLateness.record(sent &- min(sent, intended))
                acks.addTask {
                    _ = try await pending.ack()
                    let now = DispatchTime.now().uptimeNanoseconds
                    return now &- min(now, intended)
                }
            }
            var histogram = Self.histogram()
            for try await latency in acks { _ = histogram.record(latency) }
            return histogram
        }
        // The 30 s limit ends the wait even if deliveries stop: cancelling the receiving task ends its iteration.
        let timeout = Task {
            try await Task.sleep(nanoseconds: 30_000_000_000)
            receiving.cancel()
        }
        let delivered = try await receiving.value
        timeout.cancel()
        guard delivered.totalCount >= UInt64(total) else {
            throw TelexError(.timeout, "latency subscriber received \(delivered.totalCount) of \(total) events in 30 s")
        }
        await subscription.cancel()
        return LatencyResult(delivery: Percentiles(delivered), ack: Percentiles(acks), send: Percentiles(sendLateness))
    }

    /// Nanoseconds up to 60 s, three significant digits.
    static func histogram() -> Histogram<UInt64> {
        Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
    }
}
