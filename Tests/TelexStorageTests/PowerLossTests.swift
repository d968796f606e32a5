import Foundation
import Testing

@testable import TelexStorage

@Suite("Power loss: crash states built from recorded writes and syncs")
struct PowerLossTests {
    /// `TELEX_POWER_LOSS_STATES=N` checks N states (200 per seed) instead of the default 1,000.
    static let states = ProcessInfo.processInfo.environment["TELEX_POWER_LOSS_STATES"].flatMap(Int.init) ?? 1000
    static let statesPerSeed = 200

    // A long run gets a minute per 2,000 states.
    @Test("every crash state keeps what was acknowledged, serves only valid batches and reuses no offset",
          .timeLimit(.minutes(max(1, PowerLossTests.states / 2000))))
    func crashStatesKeepPromises() async throws {
        let seeds = (1...UInt64(max(1, Self.states / Self.statesPerSeed))).map { $0 }
        let (problems, states) = try await PowerLoss.run(seeds: seeds, statesPerSeed: Self.statesPerSeed)
        print("power loss: \(states) crash states of seeds 1...\(seeds.count), \(problems.count) problems")
        #expect(states >= min(Self.states, 1000))
        for problem in problems.prefix(20) { Issue.record("\(problem)") }
    }

    @Test("a broker that acknowledges before its fsync is caught: crash states lose acknowledged batches",
          .timeLimit(.minutes(1)))
    func lyingFsyncIsCaught() async throws {
        let (problems, _) = try await PowerLoss.run(seeds: [7], statesPerSeed: 100, lyingSync: true)
        #expect(problems.contains { $0.contains("acknowledged batch lost") }, "\(problems.prefix(5))")
    }

    @Test("crash images keep what was synced, may drop everything else, and lose entries without a directory sync")
    func crashImageRules() {
        let root = "/r"
        let events: [DiskEvent] = [
            .makeDirectory("/r/d"), .syncDirectory("/r"),
            .create("/r/d/a"), .write("/r/d/a", offset: 0, bytes: Array("hello".utf8)), .sync("/r/d/a"),
            .create("/r/d/t"), .write("/r/d/t", offset: 0, bytes: [7]), .sync("/r/d/t"), .syncDirectory("/r/d"),
            .write("/r/d/a", offset: 5, bytes: Array("world".utf8)),
            .rename("/r/d/t", to: "/r/d/c"), .create("/r/d/b"),
        ]
        var random = SeededGenerator(seed: 1)
        let none = CrashImage(events, root: root, crashPoint: events.count, keepChance: 0, tearChance: 0,
                              random: &random)
        #expect(none.directories == ["/d"])
        #expect(none.files == ["/d/a": Array("hello".utf8), "/d/t": [7]])
        let all = CrashImage(events, root: root, crashPoint: events.count, keepChance: 1, tearChance: 0,
                             random: &random)
        #expect(all.files == ["/d/a": Array("helloworld".utf8), "/d/c": [7], "/d/b": []])
        // Before `d` was synced, its file need not be there, although the file's data was synced.
        let early = CrashImage(events, root: root, crashPoint: 5, keepChance: 0, tearChance: 0, random: &random)
        #expect(early.directories == ["/d"])
        #expect(early.files.isEmpty)
    }
}
