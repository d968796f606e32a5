import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import TelexProtocol
import Testing

@testable import TelexConsole

@Suite("Console live tail (server-sent events)", .timeLimit(.minutes(1)))
struct HTTPTailTests {
    /// The parts of one SSE frame: `id`, `event`, `data`, or `comment`.
    private func fields(_ frame: String) -> [String: String] {
        var fields: [String: String] = [:]
        for line in frame.split(separator: "\n") {
            if line.hasPrefix(":") {
                fields["comment"] = String(line.dropFirst().drop(while: { $0 == " " }))
            } else if let colon = line.firstIndex(of: ":") {
                fields[String(line[..<colon])] = String(line[line.index(after: colon)...].dropFirst())
            }
        }
        return fields
    }

    private func waitForTail(_ data: FakeData, count: Int = 1) async throws -> FakeTail {
        while data.tails.count < count { try await Task.sleep(for: .milliseconds(5)) }
        return data.tails[count - 1]
    }

    @Test("events arrive as well-formed frames, a comment keeps the stream open, Last-Event-ID resumes")
    func frames() async throws {
        let data = FakeData(topics: ["news.sport": []])
        let timing = ConsoleEndpoint.Timing(keepAlive: .milliseconds(50), idle: .seconds(30))
        try await withEndpoint(data: data, timing: timing) { _, port in
            try await TestHTTP.with(port: port) { http in
                try await http.send(.GET, "/api/topics/news.sport/tail?from=3")
                let head = try #require(try await http.head())
                #expect(head.status == .ok)
                #expect(head.headers.first(name: "Content-Type") == "text/event-stream; charset=utf-8")
                #expect(head.headers.first(name: "Cache-Control") == "no-store")
                #expect(head.headers.first(name: "X-Content-Type-Options") == "nosniff")
                #expect(head.headers.first(name: "Content-Security-Policy") != nil)
                let tail = try await waitForTail(data)
                #expect(data.asked.last == FakeData.Asked(topic: "news.sport", from: 3))

                let hostile = "<img src=x onerror=\"window.__pwned=1\">\nline two"
                tail.push(.events([sampleEvent(3), sampleEvent(4, headline: hostile)]))
                var text = ""
                // A keep-alive may come before the push (the fake tail's 50 ms wait can run out first): count events.
                var all = try await http.frames(2, into: &text)
                while all.filter({ fields($0)["comment"] == nil }).count < 2 {
                    let more = try await http.frames(all.count + 1, into: &text)
                    try #require(more.count > all.count, "the stream ended before two events")
                    all = more
                }
                let frames = all.filter { fields($0)["comment"] == nil }
                #expect(frames.count == 2)
                let first = fields(frames[0])
                #expect(first["id"] == "3")
                #expect(first["event"] == "event")
                let decoded = try JSONDecoder().decode(EventJSON.self, from: Data(try #require(first["data"]).utf8))
                #expect(decoded == sampleEvent(3))
                #expect(frames[1].split(separator: "\n").count == 3, "the data stays on one line")
                #expect(!frames[1].contains("<"))
                let second = try JSONDecoder().decode(EventJSON.self, from: Data(try #require(fields(frames[1])["data"]).utf8))
                #expect(second.headline == hostile)

                // Nothing for a while: a keep-alive comment after the events.
                all = try await http.frames(all.count + 1, into: &text)
                #expect(fields(all[all.count - 1])["comment"] == "keep-alive")
            }
            // The browser reconnects after event 4.
            try await TestHTTP.with(port: port) { http in
                try await http.send(.GET, "/api/topics/news.sport/tail?from=0", headers: [("Last-Event-ID", "4")])
                #expect(try await http.head()?.status == .ok)
                _ = try await waitForTail(data, count: 2)
                #expect(data.asked.last == FakeData.Asked(topic: "news.sport", from: 5))
                let bad = try await fetch(port, .GET, "/api/topics/news.sport/tail", headers: [("Last-Event-ID", "x")])
                #expect(bad.status == .badRequest)
                #expect(bad.errorMessage?.contains("'Last-Event-ID'") == true)
            }
        }
    }

    @Test("an error while tailing is one error frame, then the stream ends and the tail is closed")
    func errorFrame() async throws {
        let data = FakeData(topics: ["news.sport": []])
        try await withEndpoint(data: data) { _, port in
            try await TestHTTP.with(port: port) { http in
                try await http.send(.GET, "/api/topics/news.sport/tail")
                #expect(try await http.head()?.status == .ok)
                let tail = try await waitForTail(data)
                #expect(data.asked.last == FakeData.Asked(topic: "news.sport", from: nil))
                tail.push(.events([sampleEvent(0)]))
                tail.push(.failure(TelexError(.topicNotFound, "topic 'news.sport' was deleted", topic: "news.sport")))
                var text = ""
                let frames = try await http.frames(3, into: &text)
                #expect(frames.count == 2, "the event, the error, then the end: \(frames)")
                let error = fields(frames[1])
                #expect(error["event"] == "error")
                let body = try JSONDecoder().decode(ErrorJSON.self, from: Data(try #require(error["data"]).utf8))
                #expect(body == ErrorJSON(code: "TOPIC_NOT_FOUND", message: "topic 'news.sport' was deleted"))
                #expect(await http.isClosedByServer())
                await tail.waitUntilClosed()
            }
            // A tail the data source refuses is an ordinary JSON error.
            let missing = try await fetch(port, .GET, "/api/topics/news.none/tail")
            #expect(missing.status == .notFound)
            #expect(missing.errorCode == "TOPIC_NOT_FOUND")
        }
    }

    @Test("a client that closes the connection ends its tail and frees the slot")
    func closedClient() async throws {
        let data = FakeData(topics: ["news.sport": []])
        try await withEndpoint(data: data, configure: { $0.maxTails = 1 }) { endpoint, port in
            try await TestHTTP.with(port: port) { http in
                try await http.send(.GET, "/api/topics/news.sport/tail")
                #expect(try await http.head()?.status == .ok)
                let busy = try await fetch(port, .GET, "/api/topics/news.sport/tail")
                #expect(busy.status == .serviceUnavailable)
                #expect(busy.errorCode == "TOO_MANY_TAILS")
                expectSecurityHeaders(busy)
            }
            await data.tails[0].waitUntilClosed()
            while endpoint.connections.tailCount > 0 { try await Task.sleep(for: .milliseconds(5)) }
            try await TestHTTP.with(port: port) { http in
                try await http.send(.GET, "/api/topics/news.sport/tail")
                #expect(try await http.head()?.status == .ok)
            }
        }
    }

    @Test("a client that stops reading stalls the tail (no reads past one batch) and is then disconnected")
    func slowClient() async throws {
        let big = String(repeating: "x", count: 64 * 1024)
        // Every call returns four large events at once: a reader that keeps up gets them all.
        let data = FakeData(topics: ["news.sport": []], tailSource: { call in
            .events((0..<4).map { sampleEvent(Int64(call * 4 + $0), headline: big) })
        })
        // Long enough that the request itself is not late on a loaded machine (300 ms was, once).
        let timing = ConsoleEndpoint.Timing(keepAlive: .seconds(15), idle: .seconds(2))
        try await withEndpoint(data: data, timing: timing) { endpoint, port in
            let connection = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelOption(.socketOption(.so_rcvbuf), value: 16 * 1024)
                .connect(host: "127.0.0.1", port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel,
                            configuration: .init(backPressureStrategy: .init(lowWatermark: 1, highWatermark: 1)))
                    }
                }
            try await connection.executeThenClose { _, outbound in
                try await outbound.write(ByteBuffer(string: "GET /api/topics/news.sport/tail HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
                // Read nothing: the server's writes back up, it stops asking the tail, and the idle timeout (no
                // write completed) closes the connection, which closes the tail.
                let tail = try await waitForTail(data)
                await tail.waitUntilClosed()
                let produced = tail.calls * 4 * big.utf8.count
                #expect(produced < 16 * 1024 * 1024, "the tail was read \(tail.calls) times for a client that read nothing")
            }
            while endpoint.connections.tailCount > 0 { try await Task.sleep(for: .milliseconds(5)) }
        }
    }

    @Test("stopping the endpoint ends its live tails and run() returns")
    func shutdown() async throws {
        let data = FakeData(topics: ["news.sport": []])
        let (tail, client) = try await withEndpoint(data: data) { _, port in
            let client = Task {
                try await TestHTTP.with(port: port) { http in
                    try await http.send(.GET, "/api/topics/news.sport/tail")
                    _ = try await http.head()
                    return await http.isClosedByServer()
                }
            }
            return (try await waitForTail(data), client)
        }
        #expect(tail.isClosed)
        #expect(try await client.value, "the server ended the stream")
    }
}
