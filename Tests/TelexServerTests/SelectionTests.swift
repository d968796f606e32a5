import Testing
import TelexStorage

@testable import TelexServer

@Suite("Latest and history selections", .timeLimit(.minutes(1)))
struct SelectionTests {
    func version(_ offset: Int64, at time: Int64, tombstone: Bool = false) -> KeyVersion {
        KeyVersion(offset: offset, appendTime: time, tombstone: tombstone)
    }

    @Test("latest keeps each key's newest record across topics and drops keys whose newest is a tombstone")
    func latestAcrossTopics() {
        let plan = SelectionPlanner.latest([
            (topic: "news.world", latest: ["a": version(4, at: 100), "b": version(7, at: 300), "c": version(9, at: 400)]),
            (topic: "news.europe", latest: ["a": version(2, at: 200), "b": version(1, at: 50), "d": version(3, at: 10, tombstone: true)]),
            (topic: "news.empty", latest: [:]),
        ])
        #expect(plan["news.world"] == [7, 9])
        #expect(plan["news.europe"] == [2])
        #expect(plan["news.empty"] == [])
    }

    @Test("a tombstone newer in another topic hides the article in every topic")
    func tombstoneInOtherTopic() {
        let plan = SelectionPlanner.latest([
            (topic: "a", latest: ["k": version(1, at: 10)]),
            (topic: "b", latest: ["k": version(5, at: 11, tombstone: true)]),
        ])
        #expect(plan["a"] == [] && plan["b"] == [])
    }

    @Test("equal append times are decided by the greater topic name, then the greater offset")
    func ties() {
        let plan = SelectionPlanner.latest([
            (topic: "news.europe", latest: ["k": version(8, at: 10)]),
            (topic: "news.world", latest: ["k": version(3, at: 10)]),
        ])
        #expect(plan["news.world"] == [3] && plan["news.europe"] == [])
        #expect(SelectionPlanner.isNewer(version(4, at: 1), in: "t", than: version(3, at: 1), in: "t"))
    }

    @Test("ranges coalesce selected offsets and, for a latest replay, add everything from the snapshot end")
    func ranges() {
        let latest = TopicSelection(offsets: [2, 3, 4, 7, 9], end: 10, stopsAtEnd: false)
        #expect(latest.ranges(from: 0, to: 8) == [2..<5, 7..<8])
        #expect(latest.ranges(from: 3, to: 14) == [3..<5, 7..<8, 9..<14])
        #expect(latest.ranges(from: 10, to: 12) == [10..<12])
        let history = TopicSelection(offsets: [2, 9], end: 10, stopsAtEnd: true)
        #expect(history.ranges(from: 0, to: 14) == [2..<3, 9..<10])
    }

    @Test("the machine jumps over unselected offsets, goes on live after a latest snapshot, stops a history")
    func machineJumps() {
        var machine = SubscriptionStateMachine(credit: 100, maxCredit: 100)
        machine.topicAdded("l", from: 0, caughtUpAt: 10,
                           selection: TopicSelection(offsets: [3, 8], end: 10, stopsAtEnd: false))
        machine.topicAdded("h", from: 0, caughtUpAt: 6, selection: TopicSelection(offsets: [5], end: 6, stopsAtEnd: true))
        var reads: [SubscriptionStateMachine.Read] = []
        // Each read delivers one offset; the logs end at 12.
        while let read = machine.nextRead(writable: true) {
            guard read.offset < 12 else { continue }
            reads.append(read)
            #expect(machine.selection(topic: read.topic, first: read.offset, next: read.offset + 1) != nil || read.offset >= 10)
            machine.delivered(topic: read.topic, nextOffset: read.offset + 1, batchCount: 1)
        }
        #expect(reads.filter { $0.topic == "l" }.map(\.offset) == [3, 8, 10, 11])
        #expect(reads.filter { $0.topic == "h" }.map(\.offset) == [5])
        let caughtUp = machine.shouldSendCaughtUp()
        #expect(caughtUp)
        #expect(machine.selection(topic: "l", first: 12, next: 13) == nil)
    }

    @Test("a history with nothing selected is caught up at once and reads nothing")
    func emptyHistory() {
        var machine = SubscriptionStateMachine(credit: 10, maxCredit: 10)
        machine.topicAdded("h", from: 0, caughtUpAt: 50, selection: TopicSelection(offsets: [], end: 50, stopsAtEnd: true))
        #expect(machine.nextRead(writable: true) == nil)
        let caughtUp = machine.shouldSendCaughtUp()
        #expect(caughtUp)
    }
}
