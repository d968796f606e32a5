import Foundation
import TelexConsole
import Testing

@Suite("Console samplers: rate math and memory bounds")
struct DataSamplerTests {
    @Test("rates are end-offset growth per second between samples; the mean spans the samples kept")
    func rateMath() throws {
        var sampler = TopicRateSampler(interval: .seconds(2), maxTopics: 10)
        #expect(sampler.capacity == 31)
        sampler.record(["a": 0], at: 0)
        #expect(sampler.rateHistory(of: "a").isEmpty && sampler.eventsPerSecond(of: "a") == 0)
        sampler.record(["a": 10], at: 2000)
        sampler.record(["a": 10], at: 4000)
        sampler.record(["a": 40], at: 6000)
        #expect(sampler.rateHistory(of: "a") == [5, 0, 15])
        // Rounded to hundredths, so the JSON carries 6.67 rather than 6.666666666666667.
        #expect(sampler.eventsPerSecond(of: "a") == 6.67)
        var thirds = sampler
        thirds.record(["a": 41], at: 9000)
        #expect(thirds.rateHistory(of: "a").last == 0.33)
        let encoded = try JSONEncoder().encode(thirds.rateHistory(of: "a"))
        #expect(String(decoding: encoded, as: UTF8.self) == "[5,0,15,0.33]")
        // A clock that did not move adds nothing; an end that went back starts the history again.
        sampler.record(["a": 50], at: 6000)
        #expect(sampler.rateHistory(of: "a") == [5, 0, 15])
        sampler.record(["a": 3], at: 8000)
        #expect(sampler.rateHistory(of: "a").isEmpty)
        #expect(sampler.rateHistory(of: "unknown").isEmpty)
    }

    @Test("a minute of samples per topic, at most maxTopics topics; deleted topics are dropped")
    func rateBounds() {
        var sampler = TopicRateSampler(interval: .seconds(2), maxTopics: 2)
        for step in 0...100 {
            let time = Int64(step) * 2000
            sampler.record(["a": Int64(step), "b": Int64(step * 2), "c": 0], at: time)
        }
        #expect(sampler.samples.keys.sorted() == ["a", "b"])
        #expect(sampler.samples["a"]?.count == 31)
        #expect(sampler.rateHistory(of: "b") == Array(repeating: 1.0, count: 30))
        #expect(sampler.samples["a"]?.first?.time == 140_000)
        // Samples further apart than the window: only the newest minute is kept.
        sampler.record(["a": 1000, "b": 1000, "c": 0], at: 400_000)
        #expect(sampler.samples["a"]?.count == 1)
        // "a" deleted: its place goes to "c".
        sampler.record(["b": 1000, "c": 5], at: 402_000)
        #expect(sampler.samples.keys.sorted() == ["b", "c"])
    }

    @Test("lag samples every interval on a schedule that does not drift; an hour kept, at most maxConsumers")
    func lagBounds() {
        var sampler = ConsumerLagSampler(interval: .seconds(30), history: .seconds(3600), maxConsumers: 2)
        #expect(sampler.capacity == 120)
        #expect(sampler.isDue(at: 0))
        sampler.record(["x": 5, "y": 6, "z": 7], at: 0, wallTime: 1_000_000)
        #expect(sampler.samples.keys.sorted() == ["x", "y"])
        #expect(!sampler.isDue(at: 29_999))
        #expect(sampler.isDue(at: 30_000))
        // Ticks every 2 s with jitter: a sample at the first tick at or after each 30 s mark.
        var taken = 1
        var time: Int64 = 0
        while time < 7_200_000 {
            time += 2000 + (time % 3 == 0 ? 7 : -5)
            if sampler.isDue(at: time) {
                sampler.record(["x": Int64(taken), "y": 1], at: time, wallTime: 1_000_000 + time)
                taken += 1
            }
        }
        #expect(taken == 241)
        #expect(sampler.lagHistory(of: "x").count == 120)
        #expect(sampler.lagHistory(of: "x").last?.lag == 240)
        let times = sampler.lagHistory(of: "x").map(\.time)
        #expect(times.last! - times.first! < 3_600_000)
        // A deleted consumer's history goes; a new one gets the free place.
        sampler.record(["y": 1, "z": 2], at: time + 30_000, wallTime: 1_000_000 + time + 30_000)
        #expect(sampler.samples.keys.sorted() == ["y", "z"])
        #expect(sampler.lagHistory(of: "x").isEmpty)
    }
}
