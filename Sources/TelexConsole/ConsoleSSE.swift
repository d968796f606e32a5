import NIOCore
import NIOHTTP1
import TelexProtocol

/// How a live tail request begins: refused with an ordinary JSON answer, or started with a tail in its slot.
enum ConsoleTailStart {
    case refused(ConsoleResponse)
    /// `sessionID`: the session the tail lives by (nil without logins).
    case started(ConsoleTailHandle, slot: Int, sessionID: String?)
}

/// Server-sent events (the `text/event-stream` format): one frame per event, a comment to keep the connection
/// open, one error frame before the end.
enum ConsoleSSE {
    static let contentType = "text/event-stream; charset=utf-8"

    /// `id: <offset>`, `event: event`, `data: <EventJSON>`. The JSON is one line (JSONEncoder escapes line breaks
    /// inside strings), so one `data:` line holds it.
    static func writeEvent(_ event: EventJSON, into buffer: inout ByteBuffer) {
        buffer.writeString("id: \(event.offset)\nevent: event\ndata: ")
        buffer.writeBytes(ConsoleJSON.encode(event))
        buffer.writeString("\n\n")
    }

    static func writeError(_ error: TelexError, into buffer: inout ByteBuffer) {
        writeError(code: error.code.name, error.message, into: &buffer)
    }

    static func writeError(code: String, _ message: String, into buffer: inout ByteBuffer) {
        buffer.writeString("event: error\ndata: ")
        buffer.writeBytes(ConsoleJSON.encode(ErrorJSON(code: code, message: message)))
        buffer.writeString("\n\n")
    }

    static let keepAlive = ": keep-alive\n\n"
}

extension ConsoleEndpoint {
    /// Opens the tail `GET /api/topics/{topic}/tail` asks for: the caller must have a session, a slot must be free
    /// (503 `TOO_MANY_TAILS`), and the data source must accept it (its error otherwise). Resumes after
    /// `Last-Event-ID` when the browser reconnects, else at `from` (nil: the topic's end now).
    func startTail(topic: String, _ request: ConsoleRequest, channel: any Channel) async -> ConsoleTailStart {
        let caller: ConsoleCaller
        switch self.caller(of: request) {
        case .found(let found): caller = found
        case .refused(let refusal): return .refused(refusal)
        }
        let from: Int64?
        do throws(TelexError) {
            if let lastID = request.head.headers.first(name: "Last-Event-ID") {
                guard let offset = Int64(lastID), offset >= 0, offset < .max else {
                    throw TelexError(.invalidRequest, "header 'Last-Event-ID' must be an event offset, not '\(lastID)'")
                }
                from = offset + 1
            } else {
                from = try request.integer("from", minimum: 0)
            }
        } catch {
            return .refused(.error(error))
        }
        guard !connections.isStopping else {
            return .refused(.error(TelexError(.shuttingDown, "the console is stopping")))
        }
        guard let slot = connections.reserveTail() else {
            return .refused(.error(.serviceUnavailable, code: ConsoleHTTPStatus.tooManyTails,
                "the console already serves \(configuration.maxTails) live tails: close one, or try again later"))
        }
        let tail: any ConsoleTail
        do {
            tail = try await data.tail(topic: topic, from: from, for: caller.user)
        } catch {
            connections.releaseTail(slot)
            return .refused(.error(error))
        }
        let handle = ConsoleTailHandle(tail)
        guard connections.attachTail(slot, handle, channel: channel) else {
            handle.end()
            connections.releaseTail(slot)
            return .refused(.error(TelexError(.shuttingDown, "the console is stopping")))
        }
        return .started(handle, slot: slot, sessionID: authority.requiresAuthentication ? request.sessionID : nil)
    }

    /// Streams the tail until its client goes away, the endpoint stops, or the tail fails (an `event: error` frame
    /// ends the stream). The next events are asked for only after the last frame was handed to the channel, and
    /// handing it over waits while the channel is not writable: a slow browser holds at most one batch here (and
    /// one that takes nothing for `Timing.idle` is disconnected). The session is checked on every turn (without
    /// counting as use): a logout, expiry or eviction ends the tail with an `UNAUTHENTICATED` error frame.
    func streamTail(
        _ handle: ConsoleTailHandle, slot: Int, sessionID: String?, answering head: HTTPRequestHead, channel: any Channel,
        outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>
    ) async {
        defer {
            handle.end()
            connections.releaseTail(slot)
        }
        channel.closeFuture.whenComplete { _ in handle.end() }
        let headers = HTTPHeaders([
            ("Content-Type", ConsoleSSE.contentType), ("Cache-Control", "no-store"), ("Connection", "close"),
        ])
        do {
            try await outbound.write(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers)))
            while !handle.isEnded {
                var frames = channel.allocator.buffer(capacity: 256)
                if let sessionID, !sessions.isLive(sessionID) {
                    ConsoleSSE.writeError(code: ConsoleHTTPStatus.unauthenticated,
                        "the session has expired or was logged out: log in again", into: &frames)
                    try await outbound.write(.body(.byteBuffer(frames)))
                    break
                }
                let events: [EventJSON]
                do {
                    events = try await handle.tail.next(
                        maxEvents: configuration.maxTailMessageEvents, timeout: timing.keepAlive)
                } catch {
                    ConsoleSSE.writeError(error, into: &frames)
                    try await outbound.write(.body(.byteBuffer(frames)))
                    break
                }
                if handle.isEnded { break }
                if events.isEmpty { frames.writeString(ConsoleSSE.keepAlive) }
                for event in events { ConsoleSSE.writeEvent(event, into: &frames) }
                try await outbound.write(.body(.byteBuffer(frames)))
            }
            try await outbound.write(.end(nil))
        } catch {
            logger.debug("console tail ended", metadata: ["error": "\(error)"])
        }
    }
}
