import Testing

@testable import TelexServer

@Suite("Subscription state machine", .timeLimit(.minutes(1)))
struct SubscriptionStateMachineTests {
    /// Runs one pump against in-memory logs (`ends[topic]` is each log's end; each batch is one offset),
    /// returning the reads that delivered, in order.
    func pump(
        _ machine: inout SubscriptionStateMachine, ends: [String: Int64], batchesPerRead: Int = 1
    ) -> [SubscriptionStateMachine.Read] {
        var delivered: [SubscriptionStateMachine.Read] = []
        while let read = machine.nextRead(writable: true) {
            let available = Int(ends[read.topic, default: 0] - read.offset)
            let count = min(available, read.maxBatches, batchesPerRead)
            guard count > 0 else { continue }
            machine.delivered(topic: read.topic, nextOffset: read.offset + Int64(count), batchCount: count)
            delivered.append(read)
        }
        return delivered
    }

    @Test("reads no more batches than the credit, and resumes when credit is added")
    func creditAccounting() {
        var machine = SubscriptionStateMachine(credit: 3, maxCredit: 100)
        machine.topicAdded("a", from: 0, caughtUpAt: 10)
        let first = pump(&machine, ends: ["a": 10], batchesPerRead: 2)
        #expect(first.map(\.maxBatches) == [3, 1])
        #expect(machine.credit == 0)
        #expect(machine.position("a") == 3)
        #expect(machine.nextRead(writable: true) == nil)
        #expect(machine.creditAdded(2) == .pump)
        #expect(pump(&machine, ends: ["a": 10]).count == 2)
        #expect(machine.position("a") == 5)
    }

    @Test("credit is capped at the maximum, from the start and when added")
    func creditCap() {
        var machine = SubscriptionStateMachine(credit: 50, maxCredit: 10)
        #expect(machine.credit == 10)
        #expect(machine.creditAdded(UInt32.max) == .pump)
        #expect(machine.credit == 10)
        var none = SubscriptionStateMachine(credit: 0, maxCredit: 10)
        #expect(none.creditAdded(0) == .none)
    }

    @Test("the cap bounds the unused credit, not the total granted: remaining = min(cap, remaining + batches)")
    func creditCapBoundsUnusedCredit() {
        var machine = SubscriptionStateMachine(credit: 10, maxCredit: 10)
        machine.topicAdded("a", from: 0, caughtUpAt: nil)
        machine.delivered(topic: "a", nextOffset: 4, batchCount: 4)
        #expect(machine.credit == 6)
        // 14 batches granted in all, above the cap, and all usable: only the 6 unused plus 4 count.
        #expect(machine.creditAdded(4) == .pump)
        #expect(machine.credit == 10)
        // What would go above the cap is dropped, not saved for later.
        #expect(machine.creditAdded(5) == .pump)
        #expect(machine.credit == 10)
        machine.delivered(topic: "a", nextOffset: 14, batchCount: 10)
        #expect(machine.credit == 0)
    }

    @Test("a batch count larger than the credit left does not underflow")
    func oversizedBatchCount() {
        var machine = SubscriptionStateMachine(credit: 2, maxCredit: 10)
        machine.topicAdded("a", from: 0, caughtUpAt: nil)
        machine.delivered(topic: "a", nextOffset: 5, batchCount: 5)
        #expect(machine.credit == 0)
    }

    @Test("topics take turns: a busy topic cannot starve a quiet one")
    func roundRobin() {
        var machine = SubscriptionStateMachine(credit: 6, maxCredit: 100)
        for topic in ["a", "b", "c"] { machine.topicAdded(topic, from: 0, caughtUpAt: nil) }
        let reads = pump(&machine, ends: ["a": 100, "b": 100, "c": 1])
        #expect(reads.map(\.topic) == ["a", "b", "c", "a", "b", "a"])
        // The turn carries over to the next pump.
        #expect(machine.creditAdded(2) == .pump)
        #expect(pump(&machine, ends: ["a": 100, "b": 100, "c": 1]).map(\.topic) == ["b", "a"])
    }

    @Test("a read put off ends the pump, and the next pump offers the same topic again")
    func postponedRead() {
        var machine = SubscriptionStateMachine(credit: 10, maxCredit: 100)
        machine.topicAdded("a", from: 0, caughtUpAt: 5)
        #expect(machine.nextRead(writable: true)?.topic == "a")
        machine.readPostponed()
        #expect(machine.nextRead(writable: true) == .init(topic: "a", offset: 0, maxBatches: 10))
    }

    @Test("a pump ends after one pass in which no topic had anything")
    func pumpEndsWhenIdle() {
        var machine = SubscriptionStateMachine(credit: 10, maxCredit: 100)
        for topic in ["a", "b"] { machine.topicAdded(topic, from: 0, caughtUpAt: nil) }
        var tried = 0
        while machine.nextRead(writable: true) != nil { tried += 1 }
        #expect(tried == 2)
    }

    @Test("no reads while the socket is not writable, nor without topics")
    func notWritable() {
        var machine = SubscriptionStateMachine(credit: 10, maxCredit: 100)
        #expect(machine.nextRead(writable: true) == nil)
        machine.topicAdded("a", from: 0, caughtUpAt: nil)
        #expect(machine.nextRead(writable: false) == nil)
        #expect(machine.nextRead(writable: true) == SubscriptionStateMachine.Read(topic: "a", offset: 0, maxBatches: 10))
    }

    @Test("CAUGHT_UP is due exactly once, when every initial topic reached its end")
    func caughtUpOnce() {
        var machine = SubscriptionStateMachine(credit: 10, maxCredit: 100)
        machine.topicAdded("a", from: 0, caughtUpAt: 2)
        machine.topicAdded("b", from: 0, caughtUpAt: 1)
        #expect(machine.shouldSendCaughtUp() == false)
        machine.delivered(topic: "a", nextOffset: 2, batchCount: 2)
        #expect(machine.shouldSendCaughtUp() == false)
        machine.delivered(topic: "b", nextOffset: 1, batchCount: 1)
        #expect(machine.shouldSendCaughtUp() == true)
        #expect(machine.shouldSendCaughtUp() == false)
        machine.delivered(topic: "a", nextOffset: 3, batchCount: 1)
        #expect(machine.shouldSendCaughtUp() == false)
    }

    @Test("an empty subscription, or one starting at the end, is caught up at once")
    func caughtUpImmediately() {
        var empty = SubscriptionStateMachine(credit: 1, maxCredit: 10)
        #expect(empty.shouldSendCaughtUp() == true)
        var atEnd = SubscriptionStateMachine(credit: 1, maxCredit: 10)
        atEnd.topicAdded("a", from: 5, caughtUpAt: 5)
        #expect(atEnd.shouldSendCaughtUp() == true)
    }

    @Test("a topic born later joins the rotation and does not hold back CAUGHT_UP")
    func topicBornLater() {
        var machine = SubscriptionStateMachine(credit: 10, maxCredit: 100)
        machine.topicAdded("a", from: 0, caughtUpAt: 1)
        #expect(machine.topicAdded("b", from: 0, caughtUpAt: nil) == true)
        #expect(machine.topicAdded("b", from: 4, caughtUpAt: nil) == false)
        #expect(machine.position("b") == 0)
        #expect(machine.topics == ["a", "b"])
        let reads = pump(&machine, ends: ["a": 1, "b": 3])
        #expect(reads.map(\.topic) == ["a", "b", "b", "b"])
        #expect(machine.shouldSendCaughtUp() == true)
    }
}
