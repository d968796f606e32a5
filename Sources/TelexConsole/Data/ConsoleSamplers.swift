import TelexStorage

/// Each topic's end offset over the last minute, behind the topic sparklines. Bounded: at most `maxTopics` topics
/// (the ones sampled first keep their place; the rest get none until a sampled topic is deleted), each with at most
/// `capacity` samples. Times are milliseconds on a clock that never goes back, supplied by the caller.
public struct TopicRateSampler: Sendable {
    public struct Sample: Sendable, Equatable {
        public var time: Int64
        public var endOffset: Int64
        public init(time: Int64, endOffset: Int64) {
            self.time = time
            self.endOffset = endOffset
        }
    }

    /// How far back the rates reach, in milliseconds.
    public let window: Int64
    public let maxTopics: Int
    /// Most samples per topic: a window's worth at the sampling interval, plus the one the first rate starts from.
    public let capacity: Int
    public private(set) var samples: [String: [Sample]] = [:]

    public init(interval: Duration, window: Duration = .seconds(60), maxTopics: Int) {
        self.window = window.milliseconds
        self.maxTopics = max(0, maxTopics)
        capacity = max(2, Int(window.milliseconds / max(1, interval.milliseconds)) + 1)
    }

    /// Records the end offsets of the topics that exist now at `time`; topics missing from `endOffsets` were
    /// deleted and lose their history.
    public mutating func record(_ endOffsets: [String: Int64], at time: Int64) {
        samples = samples.filter { endOffsets[$0.key] != nil }
        let room = maxTopics - samples.count
        if room > 0 {
            // Sorted, so which topics get the last places does not depend on dictionary order.
            for topic in endOffsets.keys.filter({ samples[$0] == nil }).sorted().prefix(room) { samples[topic] = [] }
        }
        for (topic, end) in endOffsets where samples[topic] != nil {
            // In place: copying every topic's history on every sample would cost more than the sample.
            Self.add(Sample(time: time, endOffset: end), to: &samples[topic]!, window: window, capacity: capacity)
        }
    }

    /// Static: a method on `self` would keep a copy of `samples` alive while one of its values is modified, and
    /// copy the whole dictionary on every call.
    private static func add(_ sample: Sample, to history: inout [Sample], window: Int64, capacity: Int) {
        if let last = history.last {
            // A clock that did not move would divide by zero; an end that went back is a topic deleted and created
            // again between two samples: its old history says nothing about the new one.
            if sample.time <= last.time { return }
            if sample.endOffset < last.endOffset { history.removeAll() }
        }
        history.append(sample)
        if let keep = history.firstIndex(where: { $0.time >= sample.time - window }), keep > 0 {
            history.removeFirst(keep)
        }
        if history.count > capacity { history.removeFirst(history.count - capacity) }
    }

    /// Events per second in each interval between the samples of `topic`, oldest first.
    public func rateHistory(of topic: String) -> [Double] {
        guard let history = samples[topic] else { return [] }
        return zip(history, history.dropFirst()).map { Self.rate(from: $0, to: $1) }
    }

    /// Events per second from the oldest sample of `topic` to the newest; 0 with fewer than two samples.
    public func eventsPerSecond(of topic: String) -> Double {
        guard let history = samples[topic], let first = history.first, let last = history.last, last.time > first.time
        else { return 0 }
        return Self.rate(from: first, to: last)
    }

    /// Rounded to hundredths: 60 samples of 10,000 topics in every poll would otherwise be 17-digit doubles.
    static func rate(from earlier: Sample, to later: Sample) -> Double {
        (Double(later.endOffset - earlier.endOffset) * 100_000 / Double(later.time - earlier.time)).rounded() / 100
    }
}

/// Each durable consumer's total lag, sampled every `interval` over `history`, behind the lag charts. Bounded: at
/// most `maxConsumers` consumers, each with at most `capacity` samples.
public struct ConsumerLagSampler: Sendable {
    /// Milliseconds between samples.
    public let interval: Int64
    /// How far back a history reaches, in milliseconds.
    public let history: Int64
    public let maxConsumers: Int
    public let capacity: Int
    public private(set) var samples: [String: [LagSampleJSON]] = [:]
    /// When the next sample is due (monotonic milliseconds); nil before the first.
    public private(set) var nextDue: Int64?

    public init(interval: Duration, history: Duration, maxConsumers: Int) {
        self.interval = max(1, interval.milliseconds)
        self.history = history.milliseconds
        self.maxConsumers = max(0, maxConsumers)
        capacity = max(1, Int(self.history / self.interval))
    }

    /// Whether a sample is due at `time` (monotonic milliseconds).
    public func isDue(at time: Int64) -> Bool { nextDue.map { time >= $0 } ?? true }

    /// Records the total lag of each consumer that exists now; `time` is monotonic (the schedule), `wallTime` the
    /// sample's time in milliseconds since the epoch. Consumers missing from `lags` lose their history.
    public mutating func record(_ lags: [String: Int64], at time: Int64, wallTime: Int64) {
        // The schedule advances by whole intervals from the first sample, so callers ticking at a shorter period
        // with some jitter do not make the samples drift.
        var due = nextDue ?? time
        while due <= time { due += interval }
        nextDue = due
        samples = samples.filter { lags[$0.key] != nil }
        let room = maxConsumers - samples.count
        if room > 0 {
            for consumer in lags.keys.filter({ samples[$0] == nil }).sorted().prefix(room) { samples[consumer] = [] }
        }
        for (consumer, lag) in lags where samples[consumer] != nil {
            Self.add(LagSampleJSON(time: wallTime, lag: lag), to: &samples[consumer]!, history: history,
                     capacity: capacity)
        }
    }

    private static func add(_ sample: LagSampleJSON, to kept: inout [LagSampleJSON], history: Int64, capacity: Int) {
        kept.append(sample)
        if let keep = kept.firstIndex(where: { $0.time > sample.time - history }), keep > 0 { kept.removeFirst(keep) }
        if kept.count > capacity { kept.removeFirst(kept.count - capacity) }
    }

    /// The samples of `consumer`, oldest first.
    public func lagHistory(of consumer: String) -> [LagSampleJSON] { samples[consumer] ?? [] }
}

extension Duration {
    /// Whole milliseconds.
    var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}

/// The clocks the console samples with; tests supply their own.
public struct ConsoleClock: Sendable {
    /// Milliseconds on a clock that never goes back (rates, the lag schedule).
    public var monotonicMilliseconds: @Sendable () -> Int64
    /// Milliseconds since the Unix epoch (the times of lag samples).
    public var wallMilliseconds: @Sendable () -> Int64

    public init(
        monotonicMilliseconds: @escaping @Sendable () -> Int64, wallMilliseconds: @escaping @Sendable () -> Int64
    ) {
        self.monotonicMilliseconds = monotonicMilliseconds
        self.wallMilliseconds = wallMilliseconds
    }

    public static let system: ConsoleClock = {
        let origin = ContinuousClock.now
        return ConsoleClock(
            monotonicMilliseconds: { (ContinuousClock.now - origin).milliseconds },
            wallMilliseconds: { FileIO.nowMilliseconds() })
    }()
}
