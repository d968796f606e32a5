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
}
