#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Foundation
import NIOConcurrencyHelpers

/// Standard output written by a thread of its own. Lines are appended to a buffer and the thread writes whatever
/// has gathered in one call as soon as it is free: a fast replay makes few large writes, while a quiet live tail
/// still prints each line at once. At most `limit` bytes wait; `write` waits beyond that.
final class OutputWriter: Sendable {
    private struct State {
        var pending: [UInt8] = []
        /// The thread has been woken or is writing; it clears this only when it finds nothing pending.
        var writing = false
        var failed = false
        var spaceWaiters: [CheckedContinuation<Void, Never>] = []
        var drainWaiters: [CheckedContinuation<Void, Never>] = []
    }

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
                if state.writing { return (.done, false) }
                state.writing = true
                return (.done, true)
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
            let resumeNow = state.withLockedValue { state in
                if state.failed || !state.writing { return true }
                state.drainWaiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
        return !state.withLockedValue { $0.failed }
    }

    private func writeLoop() {
        var batch: [UInt8] = []
        while true {
            wake.wait()
            while true {
                let (spaceWaiters, drainWaiters, done) = state.withLockedValue { state in
                    if state.pending.isEmpty || state.failed {
                        state.writing = false
                        defer { state.drainWaiters = [] }
                        return ([CheckedContinuation<Void, Never>](), state.drainWaiters, true)
                    }
                    swap(&batch, &state.pending)
                    defer { state.spaceWaiters = [] }
                    return (state.spaceWaiters, [], false)
                }
                for waiter in spaceWaiters + drainWaiters { waiter.resume() }
                if done { break }
                if !writeAll(batch, to: descriptor) {
                    let waiters = state.withLockedValue { state in
                        state.failed = true
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
