import ArgumentParser
import Foundation
import Synchronization

/// `--progress` / `--no-progress`: whether a tool shows a progress line on standard error.
public struct ProgressOptions: ParsableArguments {
    @Flag(inversion: .prefixedNo, help: "Show a progress line on standard error (default: only when it is a terminal).")
    public var progress: Bool?

    public init() {}

    /// The flag when given, otherwise `automatic` (the tool's rule, usually "standard error is a terminal").
    public func isEnabled(automatic: Bool) -> Bool { progress ?? automatic }
}

/// Whether a file descriptor (`STDERR_FILENO`, `STDOUT_FILENO`) is a terminal.
public func isTerminal(_ descriptor: Int32) -> Bool { isatty(descriptor) == 1 }

/// What a progress line reports: events and bytes so far, and how far through a known total the run is.
public struct ProgressCounts: Sendable, Equatable {
    /// Events handled (acknowledged by telex-pub, printed by telex-sub).
    public var events: Int64 = 0
    /// Bytes handled (read by telex-pub, printed by telex-sub).
    public var bytes: Int64 = 0
    /// Work done, in the unit of `total` (bytes for telex-pub, events for telex-sub).
    public var done: Int64 = 0
    /// The work there is to do in all, when known; no percent or ETA without it.
    public var total: Int64?

    public init(events: Int64 = 0, bytes: Int64 = 0, done: Int64 = 0, total: Int64? = nil) {
        (self.events, self.bytes, self.done, self.total) = (events, bytes, done, total)
    }
}

/// The text of a progress line; pure, so it is tested without a terminal or a clock.
public enum ProgressFormat {
    /// `12345 events, 4321 events/s, 18.2 MiB, 42%, ETA 0:07` — percent and ETA only with a total.
    public static func line(_ counts: ProgressCounts, elapsed: Duration) -> String {
        let seconds = elapsed.seconds
        var fields = [
            "\(counts.events) event\(counts.events == 1 ? "" : "s")",
            rate(Double(counts.events), seconds: seconds) + " events/s",
            bytes(counts.bytes),
        ]
        if let total = counts.total {
            fields.append(percent(done: counts.done, total: total))
            fields.append("ETA " + eta(done: counts.done, total: total, seconds: seconds))
        }
        return fields.joined(separator: ", ")
    }

    /// Events per second as a whole number below 10,000 (`0`, `850`, `9999`), then `12.3k`, `4.5M`.
    public static func rate(_ count: Double, seconds: Double) -> String {
        guard seconds > 0 else { return "0" }
        let perSecond = count / seconds
        switch perSecond {
        case ..<10_000: return String(Int(perSecond.rounded()))
        case ..<999_950: return oneDecimal(perSecond / 1000) + "k"  // not "1000.0k" once rounded
        default: return oneDecimal(perSecond / 1_000_000) + "M"
        }
    }

    /// Bytes in binary units: `512 B`, `1.5 KiB`, `18.2 MiB`, `3.0 GiB`, `1.1 TiB`.
    public static func bytes(_ count: Int64) -> String {
        if count < 1024 { return "\(count) B" }
        var value = Double(count)
        for unit in ["KiB", "MiB", "GiB"] {
            value /= 1024
            if value < 1024 { return oneDecimal(value) + " " + unit }
        }
        return oneDecimal(value / 1024) + " TiB"
    }

    /// Whole percent, rounded down and clamped to 0–100, so `100%` means done; an empty total is `100%`.
    public static func percent(done: Int64, total: Int64) -> String {
        guard total > 0 else { return "100%" }
        let value = Swift.min(100, Swift.max(0, done * 100 / total))
        return "\(value)%"
    }

    /// Time left at the average rate so far, `M:SS` or `H:MM:SS`; `?` before anything is done, `0:00` when done.
    public static func eta(done: Int64, total: Int64, seconds: Double) -> String {
        if done >= total { return "0:00" }
        guard done > 0, seconds > 0 else { return "?" }
        let left = Double(total - done) / (Double(done) / seconds)
        guard left < 100 * 3600 else { return ">99h" }
        return clock(Int(left.rounded(.up)))
    }

    /// `M:SS` below an hour, `H:MM:SS` from there.
    public static func clock(_ totalSeconds: Int) -> String {
        let (hours, minutes, seconds) = (totalSeconds / 3600, totalSeconds / 60 % 60, totalSeconds % 60)
        let twoDigits = { (value: Int) in value < 10 ? "0\(value)" : "\(value)" }
        return hours > 0 ? "\(hours):\(twoDigits(minutes)):\(twoDigits(seconds))" : "\(minutes):\(twoDigits(seconds))"
    }

    private static func oneDecimal(_ value: Double) -> String {
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }
}

extension Duration {
    fileprivate var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

/// One progress line on standard error, redrawn in place (`\r`, clear to end of line) at most every `interval`,
/// ended with a newline by `finish()`. Safe to update from any task; a disabled reporter writes nothing.
public final class ProgressReporter: Sendable {
    private struct State {
        var counts = ProgressCounts()
        var lastDraw: Duration = .zero
        var drawn = false
        var finished = false
    }

    /// `\r` then "erase to end of line" (ANSI EL), so a shorter line leaves nothing of the longer one behind.
    static let redraw = "\r\u{1B}[K"

    private let enabled: Bool
    private let prefix: String
    private let interval: Duration
    private let elapsed: @Sendable () -> Duration
    private let write: @Sendable (String) -> Void
    private let state = Mutex(State())

    /// - Parameters:
    ///   - label: the tool's name, printed before the counts (`telex-pub: 120 events, ...`).
    ///   - enabled: false makes every call a no-op.
    ///   - interval: the least time between two redraws; 250 ms by default (four a second).
    ///   - elapsed: time since the run started; a monotonic clock by default, injected by tests.
    ///   - write: where the text goes; standard error by default.
    public init(
        label: String, enabled: Bool, interval: Duration = .milliseconds(250),
        elapsed: (@Sendable () -> Duration)? = nil,
        write: @escaping @Sendable (String) -> Void = { FileHandle.standardError.write(Data($0.utf8)) }
    ) {
        self.prefix = label + ": "
        self.enabled = enabled
        self.interval = interval
        if let elapsed {
            self.elapsed = elapsed
        } else {
            let start = ContinuousClock.now
            self.elapsed = { ContinuousClock.now - start }
        }
        self.write = write
    }

    /// Changes the counts and redraws the line if the last redraw is at least `interval` old.
    public func update(_ change: (inout ProgressCounts) -> Void) {
        guard enabled else { return }
        let now = elapsed()
        let text: String? = state.withLock { state in
            change(&state.counts)
            guard !state.finished, now - state.lastDraw >= interval else { return nil }
            state.lastDraw = now
            state.drawn = true
            return Self.redraw + prefix + ProgressFormat.line(state.counts, elapsed: now)
        }
        if let text { write(text) }
    }

    /// Erases the line before other output goes to the same terminal; the next redraw brings it back.
    public func clear() {
        guard enabled else { return }
        let erase = state.withLock { state in
            defer { state.drawn = false }
            return state.drawn && !state.finished
        }
        if erase { write(Self.redraw) }
    }

    /// Draws the final counts and ends the line with a newline; later calls do nothing.
    public func finish() {
        guard enabled else { return }
        let now = elapsed()
        let text: String? = state.withLock { state in
            guard !state.finished else { return nil }
            state.finished = true
            return Self.redraw + prefix + ProgressFormat.line(state.counts, elapsed: now) + "\n"
        }
        if let text { write(text) }
    }
}
