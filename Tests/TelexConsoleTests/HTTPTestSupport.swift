import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import TelexAuth
import TelexEvents
import TelexProtocol
import TelexServer
import Testing

@testable import TelexConsole

// MARK: - A fake broker behind the HTTP layer

/// Access control without a broker: tokens by identity, admins by name.
struct FakeAuthority: ConsoleAuthority {
    var requiresAuthentication: Bool
    var tokens: [String: Identity] = [:]
    var admins: Set<String> = ["anonymous", "auth-token"]
    /// When set, every login is answered `.waiting` this long (a backoff running for every peer).
    var loginWait: Duration?

    func consoleLogin(token: String, peer: String) async -> ConsoleLoginOutcome {
        if let loginWait { return .waiting(loginWait) }
        if let identity = tokens[token] { return .accepted(identity) }
        return .rejected(principal: nil, reason: "the token names no principal")
    }

    func isAdmin(_ identity: Identity) -> Bool { admins.contains(identity.name) }
}

/// Topics with events in memory; records what it was asked; errors by topic name.
final class FakeData: ConsoleDataSource {
    struct Asked: Sendable, Equatable {
        var topic: String
        var from: Int64?
        var limit: Int?
        var uri: String?
    }

    struct State {
        var topics: [String: [EventJSON]] = [:]
        var errors: [String: TelexError] = [:]
        var asked: [Asked] = []
        var users: [ConsoleUser] = []
        var samples = 0
        var tails: [FakeTail] = []
    }

    let state = NIOLockedValueBox(State())
    /// Who may reset consumers here.
    static let admins: Set<String> = ["anonymous", "auth-token", "admin"]
    /// How the tails it opens produce events (default: from `push`).
    let tailSource: @Sendable (_ call: Int) -> FakeTail.Step?

    init(topics: [String: [EventJSON]] = [:], tailSource: @escaping @Sendable (Int) -> FakeTail.Step? = { _ in nil }) {
        state.withLockedValue { $0.topics = topics }
        self.tailSource = tailSource
    }

    var asked: [Asked] { state.withLockedValue { $0.asked } }
    var samples: Int { state.withLockedValue { $0.samples } }
    var tails: [FakeTail] { state.withLockedValue { $0.tails } }

    private func check(_ topic: String, _ asked: Asked, _ user: ConsoleUser) throws(TelexError) -> [EventJSON] {
        let (events, error) = state.withLockedValue { state in
            state.asked.append(asked)
            state.users.append(user)
            return (state.topics[topic], state.errors[topic])
        }
        if let error { throw error }
        guard let events else { throw TelexError(.topicNotFound, "topic '\(topic)' does not exist", topic: topic) }
        return events
    }

    func overview(for user: ConsoleUser) async throws(TelexError) -> OverviewJSON {
        OverviewJSON(serverName: "fake", version: "0", uptimeMilliseconds: 1, address: "127.0.0.1:0",
            fsyncPolicy: "always", dataBytes: 0, topicCount: 0, connectionCount: 0, tls: false)
    }

    func topics(matching pattern: String, for user: ConsoleUser) async throws(TelexError) -> TopicsJSON {
        state.withLockedValue { $0.asked.append(Asked(topic: pattern)) }
        return TopicsJSON(topics: [], sampleIntervalSeconds: 2)
    }

    func events(topic: String, from: Int64?, limit: Int, for user: ConsoleUser) async throws(TelexError) -> EventsJSON {
        let events = try check(topic, Asked(topic: topic, from: from, limit: limit), user)
        let start = Int(from ?? 0)
        let chosen = Array(events.dropFirst(start).prefix(limit))
        return EventsJSON(topic: topic, startOffset: 0, endOffset: Int64(events.count), events: chosen,
            next: Int64(start + chosen.count))
    }

    func events(topic: String, uri: String, for user: ConsoleUser) async throws(TelexError) -> EventsJSON {
        let events = try check(topic, Asked(topic: topic, uri: uri), user)
        return EventsJSON(topic: topic, startOffset: 0, endOffset: Int64(events.count),
            events: events.filter { $0.uri == uri }, next: Int64(events.count))
    }

    func article(uri: String, for user: ConsoleUser) async throws(TelexError) -> ArticleJSON {
        state.withLockedValue { $0.asked.append(Asked(topic: "", uri: uri)) }
        return ArticleJSON(uri: uri, versions: [])
    }

    func consumers(for user: ConsoleUser) async throws(TelexError) -> ConsumersJSON {
        ConsumersJSON(consumers: [], sampleIntervalSeconds: 2)
    }

    func resetConsumer(_ consumer: String, _ request: ResetRequestJSON, for user: ConsoleUser) async throws(TelexError)
        -> ResetJSON
    {
        // The broker's rule: only admins reset (the HTTP layer leaves the check, and its audit, to the data source).
        guard Self.admins.contains(user.identity.name) else {
            throw TelexError(.notAuthorized, "principal '\(user.identity.name)' is not an admin principal")
        }
        return ResetJSON(consumer: consumer, resets: [ConsumerReset(topic: request.to, previous: -1, committed: 0)])
    }

    func tail(topic: String, from: Int64?, for user: ConsoleUser) async throws(TelexError) -> any ConsoleTail {
        _ = try check(topic, Asked(topic: topic, from: from), user)
        let tail = FakeTail(source: tailSource)
        state.withLockedValue { $0.tails.append(tail) }
        return tail
    }

    func sample() {
        state.withLockedValue { $0.samples += 1 }
    }
}

/// A tail fed by `push` (or by its source), polling every few milliseconds until its timeout.
final class FakeTail: ConsoleTail {
    enum Step: Sendable {
        case events([EventJSON])
        case failure(TelexError)
    }

    private struct State {
        var queue: [Step] = []
        var closed = false
        var calls = 0
    }

    private let state = NIOLockedValueBox(State())
    private let source: @Sendable (Int) -> Step?
    private let closedSignal = AsyncStream<Void>.makeStream()

    init(source: @escaping @Sendable (Int) -> Step?) { self.source = source }

    var isClosed: Bool { state.withLockedValue { $0.closed } }
    var calls: Int { state.withLockedValue { $0.calls } }

    func push(_ step: Step) { state.withLockedValue { $0.queue.append(step) } }

    /// Returns once `close()` was called.
    func waitUntilClosed() async {
        for await _ in closedSignal.stream {}
    }

    func next(maxEvents: Int, timeout: Duration) async throws(TelexError) -> [EventJSON] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let step: Step? = state.withLockedValue { state in
                guard !state.closed else { return .events([]) }
                state.calls += 1
                if let produced = source(state.calls) { return produced }
                return state.queue.isEmpty ? nil : state.queue.removeFirst()
            }
            switch step {
            case .events(let events): return events
            case .failure(let error): throw error
            case nil:
                guard ContinuousClock.now < deadline else { return [] }
                try? await Task.sleep(for: .milliseconds(5))
            }
        }
    }

    func close() {
        let first = state.withLockedValue { state in
            defer { state.closed = true }
            return !state.closed
        }
        if first { closedSignal.continuation.finish() }
    }
}

func sampleEvent(_ offset: Int64, topic: String = "news.sport", headline: String = "Headline") -> EventJSON {
    EventJSON(topic: topic, offset: offset, brokerTime: 1_700_000_000_000 + offset, type: "article.created",
        id: "id-\(offset)", uri: "urn:article:\(offset)", headline: headline,
        event: .object(["type": .string("article.created"), "data": .object(["headline": .string(headline)])]))
}

// MARK: - Running an endpoint

/// A clock the test moves by hand (session expiry).
final class ManualClock: Sendable {
    private let instant = NIOLockedValueBox(ContinuousClock.now)
    var now: ContinuousClock.Instant { instant.withLockedValue { $0 } }
    func advance(by duration: Duration) { instant.withLockedValue { $0 = $0 + duration } }
}

/// Runs an endpoint on 127.0.0.1:0 over `data`, calls `body` with it and its port, then cancels it and waits for
/// `run()` to return.
func withEndpoint<T: Sendable>(
    data: any ConsoleDataSource = FakeData(), authority: any ConsoleAuthority = FakeAuthority(requiresAuthentication: false),
    clock: ManualClock? = nil, timing: ConsoleEndpoint.Timing = ConsoleEndpoint.Timing(),
    configure: (inout ConsoleConfiguration) -> Void = { _ in },
    _ body: (ConsoleEndpoint, Int) async throws -> T
) async throws -> T {
    var configuration = ConsoleConfiguration(host: "127.0.0.1", port: 0)
    configure(&configuration)
    let sessions = clock.map { clock in
        ConsoleSessions(idleTimeout: configuration.sessionIdleTimeout, lifetime: configuration.sessionLifetime,
            capacity: configuration.maxSessions, now: { clock.now })
    } ?? ConsoleSessions(configuration: configuration)
    var logger = Logger(label: "telex.test.console")
    logger.logLevel = .warning
    let bound = AsyncStream<Int>.makeStream()
    let endpoint = ConsoleEndpoint(
        configuration: configuration, tls: nil, authority: authority, data: data, sessions: sessions, timing: timing,
        logger: logger, onBound: { bound.continuation.yield($0) })
    let running = Task { try await endpoint.run() }
    var ports = bound.stream.makeAsyncIterator()
    guard let port = await ports.next() else { throw TelexError(.internalError, "the endpoint did not bind") }
    do {
        let result = try await body(endpoint, port)
        running.cancel()
        try await running.value
        return result
    } catch {
        running.cancel()
        _ = try? await running.value
        throw error
    }
}

// MARK: - A small HTTP client (NIO's client codec), to see exactly what goes over the wire

struct TestResponse: Sendable {
    var status: HTTPResponseStatus
    var headers: HTTPHeaders
    var body: [UInt8]

    var text: String { String(decoding: body, as: UTF8.self) }

    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try JSONDecoder().decode(type, from: Data(body))
    }

    var errorCode: String? { (try? decode(ErrorJSON.self))?.error.code }
    var errorMessage: String? { (try? decode(ErrorJSON.self))?.error.message }

    /// `name=value` of the `Set-Cookie` header, for the next request's `Cookie`.
    var cookie: String? {
        headers.first(name: "Set-Cookie")?.split(separator: ";").first.map(String.init)
    }
}

/// One client connection: requests written and responses read in order.
struct TestHTTP {
    typealias Channel = NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>
    var parts: NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator
    let outbound: NIOAsyncChannelOutboundWriter<HTTPClientRequestPart>
    let channel: any NIOCore.Channel

    static func connect(port: Int) async throws -> Channel {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try Channel(wrappingChannelSynchronously: channel)
                }
            }
    }

    /// Connects, runs `body` with the connection, then closes it.
    static func with<T>(port: Int, _ body: (inout TestHTTP) async throws -> T) async throws -> T {
        let connection = try await connect(port: port)
        return try await connection.executeThenClose { inbound, outbound in
            var http = TestHTTP(parts: inbound.makeAsyncIterator(), outbound: outbound, channel: connection.channel)
            return try await body(&http)
        }
    }

    func send(
        _ method: HTTPMethod, _ uri: String, headers: [(String, String)] = [], body: String? = nil
    ) async throws {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: uri)
        if !headers.contains(where: { $0.0.lowercased() == "host" }) { head.headers.add(name: "Host", value: "127.0.0.1") }
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        if let body { head.headers.replaceOrAdd(name: "Content-Length", value: "\(body.utf8.count)") }
        var parts: [HTTPClientRequestPart] = [.head(head)]
        if let body, !body.isEmpty { parts.append(.body(.byteBuffer(ByteBuffer(string: body)))) }
        parts.append(.end(nil))
        try await outbound.write(contentsOf: parts)
    }

    /// The next response head, or nil when the server closed the connection.
    mutating func head() async throws -> HTTPResponseHead? {
        while let part = try await parts.next() {
            if case .head(let head) = part { return head }
        }
        return nil
    }

    /// The next whole response.
    mutating func response() async throws -> TestResponse {
        guard let head = try await head() else { throw TelexError(.connectionFailed, "the server closed the connection") }
        var body: [UInt8] = []
        while let part = try await parts.next() {
            switch part {
            case .body(let buffer): body += Array(buffer.readableBytesView)
            case .end: return TestResponse(status: head.status, headers: head.headers, body: body)
            case .head: throw TelexError(.internalError, "a response head inside a response")
            }
        }
        throw TelexError(.connectionFailed, "the server closed the connection inside a response")
    }

    mutating func request(
        _ method: HTTPMethod, _ uri: String, headers: [(String, String)] = [], body: String? = nil
    ) async throws -> TestResponse {
        try await send(method, uri, headers: headers, body: body)
        return try await response()
    }

    /// Whether the server closed the connection (nothing more arrives).
    mutating func isClosedByServer() async -> Bool {
        do {
            while let _ = try await parts.next() {}
            return true
        } catch {
            return true
        }
    }

    /// Reads a text/event-stream body until `count` frames (events, comments or errors) arrived or it ended.
    mutating func frames(_ count: Int, into text: inout String) async throws -> [String] {
        while true {
            let frames = text.components(separatedBy: "\n\n").dropLast()
            if frames.count >= count { return Array(frames.prefix(count)) }
            guard let part = try await parts.next() else { return Array(frames) }
            switch part {
            case .body(let buffer): text += String(buffer: buffer)
            case .end: return Array(frames)
            case .head: continue
            }
        }
    }
}

/// One request on a new connection.
func fetch(
    _ port: Int, _ method: HTTPMethod = .GET, _ uri: String, headers: [(String, String)] = [], body: String? = nil
) async throws -> TestResponse {
    try await TestHTTP.with(port: port) { try await $0.request(method, uri, headers: headers, body: body) }
}

/// The console's security headers, as every answer must carry them.
func expectSecurityHeaders(_ response: TestResponse, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(response.headers.first(name: "Content-Security-Policy")?.contains("default-src 'none'") == true,
        sourceLocation: sourceLocation)
    #expect(response.headers.first(name: "Content-Security-Policy")?.contains("frame-ancestors 'none'") == true,
        sourceLocation: sourceLocation)
    #expect(response.headers.first(name: "X-Content-Type-Options") == "nosniff", sourceLocation: sourceLocation)
    #expect(response.headers.first(name: "Referrer-Policy") == "no-referrer", sourceLocation: sourceLocation)
    #expect(response.headers.first(name: "X-Frame-Options") == "DENY", sourceLocation: sourceLocation)
}
