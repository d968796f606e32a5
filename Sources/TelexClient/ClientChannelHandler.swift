import Logging
import NIOCore
import TelexProtocol

/// Routes frames from the broker: replies to the request that awaits them, deliveries to their subscription.
///
/// Lives on the connection's event loop; `Connection` reaches it through an `NIOLoopBound`.
final class ClientChannelHandler: ChannelInboundHandler {
    typealias InboundIn = Frame

    /// Requests awaiting their reply, by request id.
    var pending: [UInt32: EventLoopPromise<BrokerMessage>] = [:]
    /// Live subscriptions' receiving ends, by subscription id.
    var sinks: [UInt32: SubscriptionSink] = [:]
    /// The SUBSCRIBE request id of each subscription, so an ERROR about it reaches its sink.
    var sinksByRequest: [UInt32: SubscriptionSink] = [:]
    /// Set once the connection failed or closed; later requests fail with it at once.
    var closedError: TelexError?
    /// Frames decoded from the broker so far; none means no Telex broker has spoken on this connection.
    private(set) var framesReceived = 0
    private let logger: Logger

    init(logger: Logger) {
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        framesReceived += 1
        let requestID = frame.header.requestID
        let message: BrokerMessage
        do {
            message = try BrokerMessage.decode(frame)
        } catch {
            fail(context: context, error: error)
            return
        }
        switch message {
        case .deliver(let subscriptionID, let topic, let batches):
            sinks[subscriptionID]?.push(.batches(topic: topic, batches, selected: nil))
        case .deliverSelected(let subscriptionID, let topic, let selected, let batches):
            sinks[subscriptionID]?.push(.batches(topic: topic, batches, selected: selected))
        case .caughtUp(let subscriptionID):
            sinks[subscriptionID]?.push(.caughtUp)
        case .error(let code, let text):
            let error = TelexError(code, text, requestID: requestID)
            if let promise = pending.removeValue(forKey: requestID) {
                promise.fail(error)
            } else if let sink = sinksByRequest[requestID] {
                sink.push(.failed(error))
            } else if requestID != 0 || code == .unknownSubscription {
                // About a request nobody waits for any more (cancelled, timed out, a CREDIT or UNSUBSCRIBE that
                // raced with the end of its subscription): it concerns no one else on this connection.
                logger.debug("broker error for an abandoned request", metadata: ["error": "\(error)"])
            } else {
                // Request id 0: the broker is about to close the connection (PROTOCOL.md, "Errors").
                logger.warning("broker error", metadata: ["error": "\(error)"])
                fail(context: context, error: error)
            }
        case .unsubscribed(let subscriptionID):
            pending.removeValue(forKey: requestID)?.succeed(message)
            if let sink = sinks.removeValue(forKey: subscriptionID) {
                forgetRequests(of: sink)
                sink.push(.ended)
            }
        case .helloOK, .publishAck, .subscribed, .commitAck, .pong, .adminResult:
            pending.removeValue(forKey: requestID)?.succeed(message)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        let error = closedError ?? TelexError(.connectionFailed, "the connection to the broker was closed")
        closedError = error
        let promises = pending
        pending = [:]
        for promise in promises.values { promise.fail(error) }
        let sinks = self.sinks
        self.sinks = [:]
        sinksByRequest = [:]
        for sink in sinks.values { sink.push(.disconnected(error)) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        fail(context: context, error: (error as? TelexError)
            ?? TelexError(.connectionFailed, "connection error: \(error)"))
    }

    /// Stops routing to `sink` (the subscription ended on this side).
    func forget(subscriptionID: UInt32, sink: SubscriptionSink) {
        if sinks[subscriptionID] === sink { sinks[subscriptionID] = nil }
        forgetRequests(of: sink)
    }

    private func forgetRequests(of sink: SubscriptionSink) {
        sinksByRequest = sinksByRequest.filter { $0.value !== sink }
    }

    private func fail(context: ChannelHandlerContext, error: TelexError) {
        if closedError == nil { closedError = error }
        context.close(promise: nil)
    }
}
