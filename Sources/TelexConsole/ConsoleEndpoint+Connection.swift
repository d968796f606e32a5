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
                    guard let body = try await readBody(of: head, from: &parts, outbound: outbound) else { return }
                    // In progress only once its body is here: a stop does not wait for a slow uploader.
                    guard connections.beginRequest(id) else { return }
                    defer { connections.endRequest(id) }
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
        if let refusal = refuseHost(head) {
            response = refusal
        } else {
            switch ConsoleRouter.route(method: head.method, target: head.uri) {
            case .failure(let failure):
                response = ConsoleRouter.response(for: failure)
            case .success((.tail(let topic), let query)):
                let request = ConsoleRequest(head: head, query: query, body: body, peer: peer)
                switch await startTail(topic: topic, request, channel: channel) {
                case .refused(let refusal):
                    response = refusal
                case .started(let handle, let slot, let sessionID):
                    await streamTail(handle, slot: slot, sessionID: sessionID, answering: head, channel: channel,
                        outbound: outbound)
                    return false
                }
            case .success((let route, let query)):
                response = await respond(to: route, ConsoleRequest(head: head, query: query, body: body, peer: peer))
            }
        }
        let keepAlive = head.isKeepAlive && !response.closeConnection && !connections.isStopping
        try await write(response, answering: head, keepAlive: keepAlive, to: outbound)
        return keepAlive
    }

    /// Without logins every request is an admin's, so a page of another site that rebinds its DNS name to this
    /// address could use the console: then only requests addressed to an IP literal or `localhost` are answered
    /// (403 `HOST`). With logins the SameSite=Strict cookie is bound to the host the user logged in at, and DNS
    /// names (and their certificates) must work.
    func refuseHost(_ head: HTTPRequestHead) -> ConsoleResponse? {
        guard !authority.requiresAuthentication else { return nil }
        let host = head.headers.first(name: "Host")
        if let host, Self.isLiteralOrLocalhost(host) { return nil }
        var response = ConsoleResponse.error(.forbidden, code: ConsoleHTTPStatus.host,
            "the console without logins answers only requests addressed to an IP literal or localhost, not "
                + (host.map { "'\($0)'" } ?? "a request without a Host header")
                + ": open http://127.0.0.1:\(localPort ?? configuration.port)/ (or the address it listens on), "
                + "or configure logins (--users or --auth-token)")
        response.closeConnection = true
        return response
    }

    /// Whether a Host header names an IPv4 literal, a bracketed IPv6 literal or `localhost`, with an optional port.
    static func isLiteralOrLocalhost(_ host: String) -> Bool {
        var name = Substring(host.trimmingCharacters(in: .whitespaces))
        if name.hasPrefix("[") {
            guard let close = name.firstIndex(of: "]") else { return false }
            let port = name[name.index(after: close)...]
            guard port.isEmpty || isPort(port) else { return false }
            let literal = String(name[name.index(after: name.startIndex)..<close])
            return literal.contains(":") && (try? SocketAddress(ipAddress: literal, port: 0)) != nil
        }
        if let colon = name.firstIndex(of: ":") {
            guard isPort(name[colon...]) else { return false }
            name = name[..<colon]
        }
        if name.lowercased() == "localhost" { return true }
        return !name.contains(":") && (try? SocketAddress(ipAddress: String(name), port: 0)) != nil
    }

    /// `:` and 1-5 digits.
    private static func isPort(_ text: Substring) -> Bool {
        let digits = text.dropFirst()
        return text.first == ":" && (1...5).contains(digits.count) && digits.allSatisfy(\.isASCII)
            && digits.allSatisfy(\.isNumber)
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
