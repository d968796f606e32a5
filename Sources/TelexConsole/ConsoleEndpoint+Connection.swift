import Foundation
import NIOCore
import NIOHTTP1
import TelexProtocol

/// One request as the handlers see it: head, decoded query, the whole (bounded) body, and the peer.
struct ConsoleRequest: Sendable {
    var head: HTTPRequestHead
    var query: [String: String]
    var body: ByteBuffer
    /// The client's IP address, for the login backoff and audit records.
    var peer: String

    /// The `telex_session` cookie's value, if the request carries a well-formed one.
    var sessionID: String? { ConsoleSessions.sessionID(cookieHeaders: head.headers["Cookie"]) }

    /// Whether the body is declared as JSON (`application/json`, any parameters).
    var isJSON: Bool {
        guard let type = head.headers.first(name: "Content-Type") else { return false }
        let mediaType = type.split(separator: ";", maxSplits: 1).first ?? ""
        return mediaType.trimmingCharacters(in: .whitespaces).lowercased() == "application/json"
    }

    /// Query parameter `name` as an integer; nil when absent or empty, `INVALID_REQUEST` naming it when not a
    /// number or below `minimum`.
    func integer(_ name: String, minimum: Int64) throws(TelexError) -> Int64? {
        guard let text = query[name], !text.isEmpty else { return nil }
        guard let value = Int64(text), value >= minimum else {
            throw TelexError(.invalidRequest,
                "query parameter '\(name)' must be an integer of at least \(minimum), not '\(text)'")
        }
        return value
    }
}

extension ConsoleEndpoint {
    /// Answers the requests of one connection in order until the client closes it, asks to close it, sends a body
    /// over the limit, starts a live tail (which ends with the connection), or the endpoint stops.
    func serve(_ connection: Connection, id: Int) async {
        let channel = connection.channel
        let peer = channel.remoteAddress?.ipAddress ?? "?"
        do {
            try await connection.executeThenClose { inbound, outbound in
                var parts = inbound.makeAsyncIterator()
                while let part = try await parts.next() {
                    // The decoder ends each request before the next head, so a head comes first.
                    guard case .head(let head) = part else { continue }
                    guard connections.beginRequest(id) else { return }
                    defer { connections.endRequest(id) }
                    guard let body = try await readBody(of: head, from: &parts, outbound: outbound) else { return }
                    let keepOpen = try await answer(head, body: body, peer: peer, channel: channel, outbound: outbound)
                    if !keepOpen || connections.isStopping { return }
                }
            }
        } catch {
            logger.debug("console connection ended", metadata: ["peer": "\(peer)", "error": "\(error)"])
        }
    }

    /// The body of the request `head` began, or nil when the connection must close: the client went away, or the
    /// body is over `maxRequestBodyBytes` (a 413 is sent as soon as that is known, and nothing more is read).
    private func readBody(
        of head: HTTPRequestHead, from parts: inout NIOAsyncChannelInboundStream<HTTPServerRequestPart>.AsyncIterator,
        outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>
    ) async throws -> ByteBuffer? {
        let limit = configuration.maxRequestBodyBytes
        var body = ByteBuffer()
        var tooLarge = head.headers.first(name: "Content-Length").flatMap(Int.init).map { $0 > limit } ?? false
        if !tooLarge {
            reading: while true {
                switch try await parts.next() {
                case .body(var chunk):
                    guard body.readableBytes + chunk.readableBytes <= limit else {
                        tooLarge = true
                        break reading
                    }
                    body.writeBuffer(&chunk)
                case .end:
                    return body
                case .head, nil:
                    return nil
                }
            }
        }
        var response = ConsoleResponse.error(
            .payloadTooLarge, code: ConsoleHTTPStatus.tooLarge,
            "the request body is over \(limit) bytes, the console's limit")
        response.closeConnection = true
        try await write(response, answering: head, keepAlive: false, to: outbound)
        return nil
    }

    /// Routes and answers one request; whether the connection stays open for the next.
    private func answer(
        _ head: HTTPRequestHead, body: ByteBuffer, peer: String, channel: any Channel,
        outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>
    ) async throws -> Bool {
        let response: ConsoleResponse
        switch ConsoleRouter.route(method: head.method, target: head.uri) {
        case .failure(let failure):
            response = ConsoleRouter.response(for: failure)
        case .success((.tail(let topic), let query)):
            let request = ConsoleRequest(head: head, query: query, body: body, peer: peer)
            switch await startTail(topic: topic, request) {
            case .refused(let refusal):
                response = refusal
            case .started(let handle, let slot):
                await streamTail(handle, slot: slot, answering: head, channel: channel, outbound: outbound)
                return false
            }
        case .success((let route, let query)):
            response = await respond(to: route, ConsoleRequest(head: head, query: query, body: body, peer: peer))
        }
        let keepAlive = head.isKeepAlive && !response.closeConnection && !connections.isStopping
        try await write(response, answering: head, keepAlive: keepAlive, to: outbound)
        return keepAlive
    }

    /// Writes a whole answer with its length (no body for HEAD).
    func write(
        _ response: ConsoleResponse, answering head: HTTPRequestHead, keepAlive: Bool,
        to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>
    ) async throws {
        var headers = response.headers
        headers.replaceOrAdd(name: "Content-Length", value: "\(response.body.count)")
        headers.replaceOrAdd(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        var parts: [HTTPServerResponsePart] = [
            .head(HTTPResponseHead(version: head.version, status: response.status, headers: headers))
        ]
        if head.method != .HEAD, !response.body.isEmpty {
            parts.append(.body(.byteBuffer(ByteBuffer(bytes: response.body))))
        }
        parts.append(.end(nil))
        try await outbound.write(contentsOf: parts)
    }
}
