#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Foundation
import NIOConcurrencyHelpers

/// Standard output written by a thread of its own. Lines are appended to a buffer; the thread writes whatever has
/// gathered in one call. It is woken when the buffer passes `batchBytes`, or by the first line after it fell asleep;
/// after writing it lingers a millisecond for more before sleeping. So a fast replay makes few large writes and few
/// wake-ups, while a quiet live tail still prints each line at once. At most `limit` bytes wait; `write` waits
/// beyond that.
final class OutputWriter: Sendable {
    private struct State {
        var pending: [UInt8] = []
        /// The thread waits until woken (not lingering).
        var asleep = true
        /// The thread was woken for a full buffer and has not taken it yet.
        var signalled = false
        /// The thread is writing a batch it took.
        var inFlight = false
        var failed = false
        /// The errno of the write that failed.
        var failure: Int32 = 0
        var spaceWaiters: [CheckedContinuation<Void, Never>] = []
        var drainWaiters: [CheckedContinuation<Void, Never>] = []
    }

    static let batchBytes = 64 << 10
    static let limit = 4 << 20

    private let descriptor: Int32
    private let wake = DispatchSemaphore(value: 0)
    private let state = NIOLockedValueBox(State())

    init(descriptor: Int32 = STDOUT_FILENO) {
        self.descriptor = descriptor
    }

    func start() {
        Thread.detachNewThread { self.writeLoop() }
    }

    /// Queues `bytes`; false once standard output failed (closed), when nothing more should be printed.
    func write(_ bytes: [UInt8]) async -> Bool {
        enum Next { case failed, done, wait }
        while true {
            let (next, wakeThread): (Next, Bool) = state.withLockedValue { state in
                if state.failed { return (.failed, false) }
                if state.pending.count >= Self.limit { return (.wait, false) }
                state.pending.append(contentsOf: bytes)
                if state.asleep {
                    state.asleep = false
                    return (.done, true)
                }
                if state.pending.count >= Self.batchBytes, !state.signalled {
                    state.signalled = true
                    return (.done, true)
                }
                return (.done, false)
            }
            if wakeThread { wake.signal() }
            switch next {
            case .failed: return false
            case .done: return true
            case .wait:
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let resumeNow = state.withLockedValue { state in
                        if state.failed || state.pending.count < Self.limit { return true }
                        state.spaceWaiters.append(continuation)
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            }
        }
    }

    /// Waits until everything queued is written (or writing failed); false if it failed.
    @discardableResult
    func flush() async -> Bool {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let (resumeNow, wakeThread) = state.withLockedValue { state -> (Bool, Bool) in
                if state.failed || (state.pending.isEmpty && !state.inFlight) { return (true, false) }
                state.drainWaiters.append(continuation)
                if state.asleep || (!state.pending.isEmpty && !state.signalled) {
                    (state.asleep, state.signalled) = (false, true)
                    return (false, true)
                }
                return (false, false)
            }
            if wakeThread { wake.signal() }
            if resumeNow { continuation.resume() }
        }
        return !state.withLockedValue { $0.failed }
    }

    /// The errno of the write that failed, nil while writing works. Lines queued when it failed were not written.
    var failure: Int32? { state.withLockedValue { $0.failed ? $0.failure : nil } }

    private func writeLoop() {
        var batch: [UInt8] = []
        wake.wait()
        while true {
            drain(&batch)
            // More lines usually follow at once: linger before sleeping until woken.
            if wake.wait(timeout: .now() + .milliseconds(1)) == .success { continue }
            let sleep = state.withLockedValue { state in
                guard state.pending.isEmpty else { return false }
                state.asleep = true
                return true
            }
            if sleep { wake.wait() }
        }
    }

    /// Writes until nothing is pending; then resumes whoever waits for the drain.
    private func drain(_ batch: inout [UInt8]) {
        while true {
            let (waiters, done) = state.withLockedValue { state -> ([CheckedContinuation<Void, Never>], Bool) in
                state.inFlight = false
                state.signalled = false
                if state.pending.isEmpty || state.failed {
                    defer { state.drainWaiters = [] }
                    return (state.drainWaiters, true)
                }
                swap(&batch, &state.pending)
                state.inFlight = true
                defer { state.spaceWaiters = [] }
                return (state.spaceWaiters, false)
            }
            for waiter in waiters { waiter.resume() }
            if done { return }
            if !writeAll(batch, to: descriptor) {
                let failure = errno
                let waiters = state.withLockedValue { state in
                    state.failed = true
                    state.failure = failure
                    state.pending = []
                    defer { (state.spaceWaiters, state.drainWaiters) = ([], []) }
                    return state.spaceWaiters + state.drainWaiters
                }
                for waiter in waiters { waiter.resume() }
            }
            batch.removeAll(keepingCapacity: true)
        }
    }
}

/// Writes all of `bytes` to `descriptor`; false on an error (a closed pipe: SIGPIPE is ignored).
private func writeAll(_ bytes: [UInt8], to descriptor: Int32) -> Bool {
    bytes.withUnsafeBytes { raw in
        var position = 0
        while position < raw.count {
            let written = write(descriptor, raw.baseAddress! + position, raw.count - position)
            if written < 0 {
                if errno == EINTR { continue }
                return false
            }
            position += written
        }
        return true
    }
}
