import TelexProtocol

/// Decides where a new subscription starts in each matched topic. Pure: the caller reads the logs' bounds
/// (and, for a timestamp start, looks the timestamp up) and performs nothing but what this returns.
///
/// The policy: a resume offset sent with SUBSCRIBE beats the consumer's committed offset, which beats the
/// start position. An explicit offset is clamped into the log only for a pattern (where one number cannot fit
/// every topic); for a single topic, and for resume and committed offsets, an offset outside the log is an error.
struct StartPositionResolver {
    /// What the caller knows about one matched topic at subscribe time.
    struct TopicBounds: Equatable {
        var topic: String
        /// The first offset still in the log.
        var logStart: Int64
        /// The offset after the last durable (readable) record; delivery up to here sends CAUGHT_UP.
        var readableEnd: Int64
        /// The offset the next append gets.
        var endOffset: Int64
        /// For a timestamp start only: the first offset at or after the timestamp (see `timestampToLookUp`).
        var timestampOffset: Int64?
    }

    let start: StartPosition
    let isPattern: Bool
    let committed: [String: Int64]
    let resume: [String: Int64]

    init(start: StartPosition, isPattern: Bool, committed: [String: Int64], resume: [TopicOffset]) {
        self.start = start
        self.isPattern = isPattern
        self.committed = committed
        self.resume = Dictionary(resume.map { ($0.topic, $0.offset) }, uniquingKeysWith: { $1 })
    }

    /// The timestamp the caller must look up in `topic` before calling `range(for:)`, if any.
    func timestampToLookUp(for topic: String) -> Int64? {
        guard case .timestamp(let time) = start, resume[topic] == nil, committed[topic] == nil else { return nil }
        return time
    }

    /// Where delivery of one topic starts, and the end that counts for CAUGHT_UP.
    func range(for bounds: TopicBounds) throws(TelexError) -> TopicRange {
        let topic = bounds.topic
        let from: Int64
        if let offset = resume[topic] ?? committed[topic] {
            from = offset
        } else {
            switch start {
            case .beginning, .latest, .history: from = bounds.logStart
            case .end: from = bounds.readableEnd
            case .offset(let offset):
                from = isPattern ? min(max(offset, bounds.logStart), bounds.readableEnd) : offset
            case .timestamp:
                guard let offset = bounds.timestampOffset else {
                    preconditionFailure("timestamp start for \(topic) without the offset looked up for it")
                }
                from = offset
            }
        }
        guard from >= bounds.logStart else {
            throw TelexError(.offsetOutOfRange,
                "offset \(from) is out of range for \(topic) (log starts at \(bounds.logStart))", topic: topic, offset: from)
        }
        guard from <= bounds.endOffset else {
            throw TelexError(.offsetOutOfRange,
                "offset \(from) is beyond the end of \(topic) (next offset is \(bounds.endOffset))", topic: topic, offset: from)
        }
        return TopicRange(topic: topic, startOffset: from, endOffset: bounds.readableEnd)
    }

    /// The ranges of every topic in order; the first topic out of range fails the whole subscription.
    func ranges(for topics: [TopicBounds]) throws(TelexError) -> [TopicRange] {
        var ranges: [TopicRange] = []
        ranges.reserveCapacity(topics.count)
        for bounds in topics { ranges.append(try range(for: bounds)) }
        return ranges
    }

    /// Where a topic created after the subscription began starts: it is new in its entirety, so at its
    /// beginning, or where a durable consumer left it (`committed` is read when the topic appears).
    static func startOfNewTopic(committed: Int64?, logStart: Int64) -> Int64 {
        committed ?? logStart
    }
}
