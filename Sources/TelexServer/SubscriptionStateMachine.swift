/// The state of one subscription: a cursor per matched topic, the round-robin order, credit, and whether
/// CAUGHT_UP has been sent. Pure: `ConnectionHandler` asks it what to read next, performs the read and the
/// write, and reports what happened. Replay and live delivery are the same loop, so there is no handover gap.
/// A subscription ends by its connection dropping it (UNSUBSCRIBE, an error, the connection closing).
///
/// A pump is a run of `nextRead` calls until it returns nil. Within a pump, topics are tried in turn; a pass
/// over every topic that delivered nothing ends the pump, as does running out of credit or socket space.
struct SubscriptionStateMachine {
    /// One read the handler should perform: batches of `topic` from `offset`, at most `maxBatches` of them.
    struct Read: Equatable {
        var topic: String
        var offset: Int64
        var maxBatches: Int
    }

    /// What the handler should do after a change of credit.
    enum CreditAction: Equatable {
        /// Try to deliver: there is credit now.
        case pump
        /// Nothing to do: still no credit.
        case none
    }

    private struct Cursor {
        var next: Int64
        /// The readable end when the subscription began; reaching it on every initial topic sends CAUGHT_UP.
        /// Nil for topics born later.
        let caughtUpAt: Int64?
        /// For latest and history subscriptions: what to hand on below the snapshot end.
        let selection: TopicSelection?

        /// Whether nothing is to be read now: a history's topic at its snapshot end; in a latest subscription, until
        /// CAUGHT_UP, a topic at its snapshot end or born later. Live records of one topic must not overtake older
        /// selected records of another (an article's tombstone published live in another topic would reach the
        /// reader before the version it deletes).
        func held(selecting: Bool, caughtUp: Bool) -> Bool {
            guard let selection else { return selecting && !caughtUp }
            return next >= selection.end && (selection.stopsAtEnd || !caughtUp)
        }

        /// Below the snapshot end, moves `next` up to the next selected offset (or to the end when none is left):
        /// the batches in between hold nothing to hand on, so they are not read.
        mutating func skipUnselected() {
            guard let selection, next < selection.end else { return }
            let index = selection.firstIndex(atOrAbove: next)
            next = index < selection.offsets.count ? selection.offsets[index] : selection.end
        }
    }

    private var cursors: [String: Cursor] = [:]
    private var order: [String] = []
    private var nextIndex = 0
    private(set) var credit: UInt32
    let maxCredit: UInt32
    private var caughtUpSent = false
    /// A latest or history subscription: live records wait for CAUGHT_UP.
    private var selecting = false
    /// Topics tried in the current pass of the current pump, and whether any of them delivered.
    private var triedInPass = 0
    private var progressedInPass = false

    init(credit: UInt32, maxCredit: UInt32) {
        self.credit = min(credit, maxCredit)
        self.maxCredit = maxCredit
    }

    /// The topics in round-robin order.
    var topics: [String] { order }

    /// The next offset this subscription will send for `topic`, if it covers it.
    func position(_ topic: String) -> Int64? { cursors[topic]?.next }

    /// Adds a cursor for `topic` starting at `offset`; false if the topic is already covered.
    /// `caughtUpAt` is the readable end at subscribe time, nil for a topic born later.
    @discardableResult
    mutating func topicAdded(
        _ topic: String, from offset: Int64, caughtUpAt: Int64?, selection: TopicSelection? = nil
    ) -> Bool {
        guard cursors[topic] == nil else { return false }
        cursors[topic] = Cursor(next: offset, caughtUpAt: caughtUpAt, selection: selection)
        if selection != nil { selecting = true }
        order.append(topic)
        return true
    }

    /// The next read of the current pump, or nil when the pump is over.
    mutating func nextRead(writable: Bool) -> Read? {
        guard credit > 0, writable, !order.isEmpty else { return endPump() }
        // A held topic (see `Cursor.held`) counts as tried without progress.
        while true {
            if triedInPass == order.count {
                guard progressedInPass else { return endPump() }
                triedInPass = 0
                progressedInPass = false
            }
            let topic = order[nextIndex]
            nextIndex = (nextIndex + 1) % order.count
            triedInPass += 1
            cursors[topic]!.skipUnselected()
            if !cursors[topic]!.held(selecting: selecting, caughtUp: caughtUpSent) {
                return Read(topic: topic, offset: cursors[topic]!.next, maxBatches: Int(credit))
            }
        }
    }

    /// For a slice of `topic` holding offsets `first..<next` about to be delivered: the offsets the client hands
    /// on (DELIVER_SELECTED), or nil when everything from the cursor on is delivered (plain DELIVER).
    func selection(topic: String, first: Int64, next: Int64) -> [Range<Int64>]? {
        guard let cursor = cursors[topic], let selection = cursor.selection, cursor.next < selection.end
        else { return nil }
        return selection.ranges(from: max(first, cursor.next), to: next)
    }

    /// For a read of `topic` below its snapshot end: which batches the read may go on with (those holding a selected
    /// offset still to send, which also stops it at the snapshot end); nil for an unselective read.
    func continuing(topic: String) -> ((Range<Int64>) -> Bool)? {
        guard let cursor = cursors[topic], let selection = cursor.selection, cursor.next < selection.end
        else { return nil }
        let from = cursor.next
        return { batch in selection.selects(batch, from: from) }
    }

    /// Whether CAUGHT_UP, once sent, releases records held back (a latest subscription's live ones).
    var releasesOnCaughtUp: Bool { selecting }

    /// The read of `topic` returned `batchCount` batches ending before `nextOffset`, and they were written.
    /// (A read that found nothing needs no report: the pass moves on.)
    mutating func delivered(topic: String, nextOffset: Int64, batchCount: Int) {
        cursors[topic]?.next = nextOffset
        credit -= UInt32(min(batchCount, Int(credit)))
        progressedInPass = true
    }

    /// The handler put off the read it was given (it first waits for work on another thread) and ends the pump
    /// here; the next pump starts a fresh pass, so that the topic is tried again.
    mutating func readPostponed() {
        _ = endPump()
    }

    /// The client granted `batches` more; credit is capped at `maxCredit`.
    mutating func creditAdded(_ batches: UInt32) -> CreditAction {
        credit = UInt32(min(UInt64(credit) + UInt64(batches), UInt64(maxCredit)))
        return credit > 0 ? .pump : .none
    }

    /// True exactly once: when every topic matched at subscribe time has been delivered up to its end then.
    mutating func shouldSendCaughtUp() -> Bool {
        guard !caughtUpSent else { return false }
        let caughtUp = cursors.values.allSatisfy { cursor in cursor.caughtUpAt.map { cursor.next >= $0 } ?? true }
        if caughtUp { caughtUpSent = true }
        return caughtUp
    }

    private mutating func endPump() -> Read? {
        triedInPass = 0
        progressedInPass = false
        return nil
    }
}
