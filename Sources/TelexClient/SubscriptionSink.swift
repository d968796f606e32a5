import DequeModule
import NIOConcurrencyHelpers
import NIOCore
import TelexProtocol

/// What a subscription's receiving end gets from the connection, in order.
enum SubscriptionItem: Sendable {
    /// Delivered batches; `selected` (DELIVER_SELECTED) names the only offsets of them to hand on.
    case batches(topic: String, ByteBuffer, selected: [Range<Int64>]?)
    case caughtUp
    case failed(TelexError)
    case disconnected(TelexError)
    case ended
    /// The task waiting in `next()` was cancelled.
    case cancelled
}

/// Hands one subscription's deliveries from the event loop to the task iterating it.
///
/// `next()` honours task cancellation: a cancelled waiter is resumed at once with `.cancelled`, so iteration
/// ends promptly instead of waiting for the next delivery.
final class SubscriptionSink: Sendable {
    private struct State {
        var queue = Deque<SubscriptionItem>()
        var waiter: CheckedContinuation<SubscriptionItem, Never>?
        var caughtUpArrived = false
    }

    /// Whether CAUGHT_UP has arrived from the broker (it may still wait in the queue behind records).
    var caughtUpArrived: Bool { state.withLockedValue { $0.caughtUpArrived } }

    private let state = NIOLockedValueBox(State())

    func push(_ item: SubscriptionItem) {
        let waiter = state.withLockedValue { state -> CheckedContinuation<SubscriptionItem, Never>? in
            if case .caughtUp = item { state.caughtUpArrived = true }
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.queue.append(item)
            return nil
        }
        waiter?.resume(returning: item)
    }

    /// The next item, waiting for one if none is queued; `.cancelled` if the calling task is or becomes cancelled.
    func next() async -> SubscriptionItem {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<SubscriptionItem, Never>) in
                let ready = state.withLockedValue { state -> SubscriptionItem? in
                    if let item = state.queue.popFirst() { return item }
                    // Checked under the lock: the cancellation handler takes the same lock after the flag is set.
                    if Task.isCancelled { return .cancelled }
                    guard state.waiter == nil else {
                        return .failed(TelexError(.invalidRequest, "a subscription was iterated from two tasks at once"))
                    }
                    state.waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            let waiter = state.withLockedValue { state -> CheckedContinuation<SubscriptionItem, Never>? in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: .cancelled)
        }
    }
}
