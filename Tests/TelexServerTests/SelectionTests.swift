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

    @Test("ranges coalesce the selected offsets of a slice, from the cursor on and below the snapshot end")
    func ranges() {
        let latest = TopicSelection(offsets: [2, 3, 4, 7, 9], end: 10, stopsAtEnd: false)
        #expect(latest.ranges(from: 0, to: 8) == [2..<5, 7..<8])
        #expect(latest.ranges(from: 3, to: 14) == [3..<5, 7..<8, 9..<10])
        #expect(latest.ranges(from: 10, to: 12) == [])
        #expect(latest.selects(5..<8, from: 0) && !latest.selects(5..<7, from: 0) && !latest.selects(2..<5, from: 5))
        #expect(!TopicSelection(offsets: [12], end: 10, stopsAtEnd: false).selects(10..<13, from: 0))
    }

    @Test("the machine jumps over unselected offsets, holds live records until CAUGHT_UP, then goes on; a history stops")
    func machineJumps() {
        var machine = SubscriptionStateMachine(credit: 100, maxCredit: 100)
        machine.topicAdded("l", from: 0, caughtUpAt: 10,
                           selection: TopicSelection(offsets: [3, 8], end: 10, stopsAtEnd: false))
        machine.topicAdded("h", from: 0, caughtUpAt: 6, selection: TopicSelection(offsets: [5], end: 6, stopsAtEnd: true))
        machine.topicAdded("born-later", from: 0, caughtUpAt: nil)
        func pump() -> [SubscriptionStateMachine.Read] {
            var reads: [SubscriptionStateMachine.Read] = []
            // Each read delivers one offset; the logs end at 12.
            while let read = machine.nextRead(writable: true) {
                guard read.offset < 12 else { continue }
                reads.append(read)
                if read.topic != "born-later", read.offset < 10 {
                    #expect(machine.selection(topic: read.topic, first: read.offset, next: read.offset + 1) == [read.offset..<read.offset + 1])
                    #expect(machine.continuing(topic: read.topic) != nil)
                }
                machine.delivered(topic: read.topic, nextOffset: read.offset + 1, batchCount: 1)
            }
            return reads
        }
        let replay = pump()
        #expect(replay.filter { $0.topic == "l" }.map(\.offset) == [3, 8])
        #expect(replay.filter { $0.topic == "h" }.map(\.offset) == [5])
        #expect(!replay.contains { $0.topic == "born-later" }, "live records wait for CAUGHT_UP")
        let caughtUp = machine.shouldSendCaughtUp()
        #expect(caughtUp && machine.releasesOnCaughtUp)
        let live = pump()
        #expect(live.filter { $0.topic == "l" }.map(\.offset) == [10, 11])
        #expect(live.filter { $0.topic == "born-later" }.map(\.offset) == Array(0..<12))
        #expect(!live.contains { $0.topic == "h" }, "a history delivers nothing after its snapshot")
        #expect(machine.selection(topic: "l", first: 12, next: 13) == nil && machine.continuing(topic: "l") == nil)
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
