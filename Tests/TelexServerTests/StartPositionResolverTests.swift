import TelexProtocol
import Testing

@testable import TelexServer

@Suite("Start position policy", .timeLimit(.minutes(1)))
struct StartPositionResolverTests {
    /// A log holding offsets 10..<20, all durable.
    let bounds = StartPositionResolver.TopicBounds(topic: "news.a", logStart: 10, readableEnd: 20, endOffset: 20)

    func resolver(
        _ start: StartPosition, pattern: Bool = false, committed: [String: Int64] = [:], resume: [TopicOffset] = []
    ) -> StartPositionResolver {
        StartPositionResolver(start: start, isPattern: pattern, committed: committed, resume: resume)
    }

    @Test("beginning, end and an offset inside the log")
    func startPositions() throws {
        #expect(try resolver(.beginning).range(for: bounds) == TopicRange(topic: "news.a", startOffset: 10, endOffset: 20))
        #expect(try resolver(.end).range(for: bounds).startOffset == 20)
        #expect(try resolver(.offset(15)).range(for: bounds).startOffset == 15)
        #expect(try resolver(.offset(15), pattern: true).range(for: bounds).startOffset == 15)
    }

    @Test("end is the readable end, not the append end")
    func endIsReadableEnd() throws {
        var pending = bounds
        pending.endOffset = 25
        #expect(try resolver(.end).range(for: pending) == TopicRange(topic: "news.a", startOffset: 20, endOffset: 20))
        #expect(try resolver(.offset(24)).range(for: pending).startOffset == 24)
    }

    @Test("a resume offset beats the committed offset, which beats the start position")
    func precedence() throws {
        let committed = ["news.a": Int64(12)]
        let resume = [TopicOffset(topic: "news.a", offset: 17)]
        #expect(try resolver(.beginning, committed: committed, resume: resume).range(for: bounds).startOffset == 17)
        #expect(try resolver(.beginning, committed: committed).range(for: bounds).startOffset == 12)
        #expect(try resolver(.end, committed: ["other": 3]).range(for: bounds).startOffset == 20)
        #expect(try resolver(.offset(11), resume: [TopicOffset(topic: "other", offset: 3)]).range(for: bounds).startOffset == 11)
    }

    @Test("the last resume offset for a topic wins")
    func duplicateResume() throws {
        let resume = [TopicOffset(topic: "news.a", offset: 13), TopicOffset(topic: "news.a", offset: 14)]
        #expect(try resolver(.beginning, resume: resume).range(for: bounds).startOffset == 14)
    }

    @Test("an explicit offset is clamped into the log only for a pattern")
    func clamping() throws {
        #expect(try resolver(.offset(3), pattern: true).range(for: bounds).startOffset == 10)
        #expect(try resolver(.offset(99), pattern: true).range(for: bounds).startOffset == 20)
        #expect(throws: TelexError.self) { try resolver(.offset(3)).range(for: bounds) }
        #expect(throws: TelexError.self) { try resolver(.offset(99)).range(for: bounds) }
    }

    @Test("resume and committed offsets are never clamped, even for a pattern")
    func noClampingOfStoredOffsets() {
        #expect(throws: TelexError.self) {
            try resolver(.beginning, pattern: true, committed: ["news.a": 5]).range(for: bounds)
        }
        #expect(throws: TelexError.self) {
            try resolver(.beginning, pattern: true, resume: [TopicOffset(topic: "news.a", offset: 21)]).range(for: bounds)
        }
    }

    @Test("below the log start names the topic, the offset and the log start")
    func belowLogStart() {
        do {
            _ = try resolver(.offset(4)).range(for: bounds)
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .offsetOutOfRange)
            #expect(error.message == "offset 4 is out of range for news.a (log starts at 10)")
            #expect(error.topic == "news.a")
            #expect(error.offset == 4)
        }
    }

    @Test("beyond the end names the topic, the offset and the next offset")
    func beyondEnd() {
        do {
            _ = try resolver(.beginning, committed: ["news.a": 21]).range(for: bounds)
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .offsetOutOfRange)
            #expect(error.message == "offset 21 is beyond the end of news.a (next offset is 20)")
            #expect(error.topic == "news.a")
            #expect(error.offset == 21)
        }
    }

    @Test("a timestamp start uses the offset the caller looked up, unless a stored offset wins")
    func timestamp() throws {
        let byTime = resolver(.timestamp(1_700_000_000_000))
        #expect(byTime.timestampToLookUp(for: "news.a") == 1_700_000_000_000)
        var looked = bounds
        looked.timestampOffset = 16
        #expect(try byTime.range(for: looked).startOffset == 16)
        let committed = resolver(.timestamp(5), committed: ["news.a": 12])
        #expect(committed.timestampToLookUp(for: "news.a") == nil)
        #expect(try committed.range(for: bounds).startOffset == 12)
        let resumed = resolver(.timestamp(5), resume: [TopicOffset(topic: "news.a", offset: 18)])
        #expect(resumed.timestampToLookUp(for: "news.a") == nil)
        #expect(resolver(.beginning).timestampToLookUp(for: "news.a") == nil)
    }

    @Test("the first topic out of range fails the whole subscription")
    func rangesStopAtFirstError() throws {
        let other = StartPositionResolver.TopicBounds(topic: "news.b", logStart: 0, readableEnd: 4, endOffset: 4)
        let ranges = try resolver(.offset(2), pattern: true).ranges(for: [bounds, other])
        #expect(ranges.map(\.startOffset) == [10, 2])
        #expect(throws: TelexError.self) {
            try resolver(.beginning, committed: ["news.b": 9]).ranges(for: [bounds, other])
        }
    }

    @Test("a topic born later starts at its beginning or at the consumer's committed offset")
    func newTopic() {
        #expect(StartPositionResolver.startOfNewTopic(committed: nil, logStart: 0) == 0)
        #expect(StartPositionResolver.startOfNewTopic(committed: 7, logStart: 0) == 7)
    }
}
