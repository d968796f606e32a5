import Synchronization
import TelexCLI
import Testing

@Suite("Progress line")
struct ProgressFormatTests {
    @Test("byte counts in binary units")
    func byteUnits() {
        #expect(ProgressFormat.bytes(0) == "0 B")
        #expect(ProgressFormat.bytes(1023) == "1023 B")
        #expect(ProgressFormat.bytes(1024) == "1.0 KiB")
        #expect(ProgressFormat.bytes(1536) == "1.5 KiB")
        #expect(ProgressFormat.bytes(18 * 1024 * 1024 + 200 * 1024) == "18.2 MiB")
        #expect(ProgressFormat.bytes(3 << 30) == "3.0 GiB")
        #expect(ProgressFormat.bytes(5 << 40) == "5.0 TiB")
    }

    @Test("rates: whole numbers below 10,000 a second, then k and M")
    func rates() {
        #expect(ProgressFormat.rate(0, seconds: 0) == "0")
        #expect(ProgressFormat.rate(850, seconds: 1) == "850")
        #expect(ProgressFormat.rate(1000, seconds: 4) == "250")
        #expect(ProgressFormat.rate(9999, seconds: 1) == "9999")
        #expect(ProgressFormat.rate(24_600, seconds: 2) == "12.3k")
        #expect(ProgressFormat.rate(45_000_000, seconds: 10) == "4.5M")
        #expect(ProgressFormat.rate(999_949, seconds: 1) == "999.9k")
        #expect(ProgressFormat.rate(999_950, seconds: 1) == "1.0M")
    }

    @Test("percent is rounded down and clamped")
    func percent() {
        #expect(ProgressFormat.percent(done: 0, total: 200) == "0%")
        #expect(ProgressFormat.percent(done: 199, total: 200) == "99%")
        #expect(ProgressFormat.percent(done: 200, total: 200) == "100%")
        #expect(ProgressFormat.percent(done: 201, total: 200) == "100%")
        #expect(ProgressFormat.percent(done: 0, total: 0) == "100%")
    }

    @Test("ETA at the average rate so far")
    func eta() {
        #expect(ProgressFormat.eta(done: 0, total: 100, seconds: 3) == "?")
        #expect(ProgressFormat.eta(done: 25, total: 100, seconds: 5) == "0:15")
        #expect(ProgressFormat.eta(done: 1, total: 100, seconds: 1) == "1:39")
        #expect(ProgressFormat.eta(done: 1, total: 3601, seconds: 1) == "1:00:00")
        #expect(ProgressFormat.eta(done: 100, total: 100, seconds: 5) == "0:00")
        #expect(ProgressFormat.eta(done: 1, total: 1_000_000_000, seconds: 1) == ">99h")
        #expect(ProgressFormat.clock(65) == "1:05")
        #expect(ProgressFormat.clock(3723) == "1:02:03")
    }

    @Test("the whole line, with and without a total")
    func line() {
        let known = ProgressCounts(events: 2000, bytes: 3 << 20, done: 1 << 20, total: 4 << 20)
        #expect(
            ProgressFormat.line(known, elapsed: .seconds(2)) == "2000 events, 1000 events/s, 3.0 MiB, 25%, ETA 0:06")
        let unknown = ProgressCounts(events: 1, bytes: 300)
        #expect(ProgressFormat.line(unknown, elapsed: .milliseconds(500)) == "1 event, 2 events/s, 300 B")
    }
}

@Suite("Progress reporter")
struct ProgressReporterTests {
    /// A clock the test moves by hand and the text the reporter wrote.
    final class Harness: Sendable {
        let now = Mutex(Duration.zero)
        let written = Mutex([String]())

        func reporter(enabled: Bool = true) -> ProgressReporter {
            ProgressReporter(
                label: "test", enabled: enabled, elapsed: { self.now.withLock { $0 } },
                write: { text in self.written.withLock { $0.append(text) } })
        }

        func advance(_ duration: Duration) { now.withLock { $0 += duration } }
        var output: [String] { written.withLock { $0 } }
    }

    @Test("redraws at most every 250 ms, in place, and ends with a newline")
    func throttles() {
        let harness = Harness()
        let reporter = harness.reporter()
        reporter.update { $0.events += 1 }
        #expect(harness.output.isEmpty)  // nothing in the first 250 ms: a quick run shows only the final line
        harness.advance(.milliseconds(250))
        reporter.update { $0.events += 1 }
        #expect(harness.output == ["\r\u{1B}[Ktest: 2 events, 8 events/s, 0 B"])
        for _ in 0..<10 {
            harness.advance(.milliseconds(20))
            reporter.update { $0.events += 1 }
        }
        #expect(harness.output.count == 1)  // 200 ms since the last redraw
        harness.advance(.milliseconds(50))
        reporter.update { $0.events += 1 }
        #expect(harness.output.count == 2)
        #expect(harness.output[1].hasPrefix("\r\u{1B}[Ktest: 13 events, "))
        reporter.finish()
        reporter.finish()
        reporter.update { $0.events += 1 }
        #expect(harness.output.count == 3)
        #expect(harness.output[2] == "\r\u{1B}[Ktest: 13 events, 26 events/s, 0 B\n")
    }

    @Test("clear erases a drawn line once; a disabled reporter writes nothing")
    func clearsAndStaysQuiet() {
        let harness = Harness()
        let reporter = harness.reporter()
        reporter.clear()
        #expect(harness.output.isEmpty)
        harness.advance(.seconds(1))
        reporter.update { $0.events = 5 }
        reporter.clear()
        reporter.clear()
        #expect(harness.output.count == 2)
        #expect(harness.output[1] == "\r\u{1B}[K")

        let quiet = Harness()
        let disabled = quiet.reporter(enabled: false)
        quiet.advance(.seconds(1))
        disabled.update { $0.events = 5 }
        disabled.clear()
        disabled.finish()
        #expect(quiet.output.isEmpty)
    }
}
