import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import TelexProtocol
import Testing

@testable import TelexConsole

@Suite("Console HTTP: routing, headers, errors and limits", .timeLimit(.minutes(1)))
struct HTTPEndpointTests {
    @Test("the page's files are served with their type, an ETag that revalidates, and the security headers")
    func assets() async throws {
        try await withEndpoint { _, port in
            try await TestHTTP.with(port: port) { http in
                let index = try await http.request(.GET, "/")
                #expect(index.status == .ok)
                #expect(index.headers.first(name: "Content-Type") == "text/html; charset=utf-8")
                #expect(index.body == ConsoleAssets.byPath["/"]?.bytes)
                #expect(index.headers.first(name: "Cache-Control") == "no-cache")
                expectSecurityHeaders(index)
                let etag = try #require(index.headers.first(name: "ETag"))

                let again = try await http.request(.GET, "/index.html", headers: [("If-None-Match", etag)])
                #expect(again.status == .notModified)
                #expect(again.body.isEmpty)
                expectSecurityHeaders(again)

                let script = try await http.request(.HEAD, "/console.js")
                #expect(script.status == .ok)
                #expect(script.headers.first(name: "Content-Type") == "text/javascript; charset=utf-8")
                #expect(script.headers.first(name: "Content-Length") == "\(ConsoleAssets.byPath["/console.js"]!.bytes.count)")
                #expect(script.body.isEmpty)

                let post = try await http.request(.POST, "/console.css", body: "")
                #expect(post.status == .methodNotAllowed)
                #expect(post.headers.first(name: "Allow") == "GET, HEAD")
                #expect(post.errorCode == "METHOD_NOT_ALLOWED")
            }
        }
    }

    @Test("unknown paths are 404 NOT_FOUND and wrong methods 405 with Allow, as JSON with no-store")
    func notFoundAndMethods() async throws {
        try await withEndpoint { _, port in
            try await TestHTTP.with(port: port) { http in
                for path in ["/nothing", "/api/", "/api/nothing", "/api/topics/x/other", "/api/topics//events"] {
                    let response = try await http.request(.GET, path)
                    #expect(response.status == .notFound, "\(path)")
                    #expect(response.errorCode == "NOT_FOUND", "\(path)")
                    #expect(response.headers.first(name: "Content-Type") == "application/json; charset=utf-8")
                    #expect(response.headers.first(name: "Cache-Control") == "no-store")
                    expectSecurityHeaders(response)
                }
                let login = try await http.request(.GET, "/api/login")
                #expect(login.status == .methodNotAllowed)
                #expect(login.headers.first(name: "Allow") == "POST")
                let topics = try await http.request(.POST, "/api/topics")
                #expect(topics.status == .methodNotAllowed)
                #expect(topics.headers.first(name: "Allow") == "GET")
                expectSecurityHeaders(topics)
                // A method the console never answers: 405 with what it does answer, and the connection closes.
                let delete = try await http.request(.DELETE, "/api/topics")
                #expect(delete.status == .methodNotAllowed)
                #expect(delete.errorCode == "METHOD_NOT_ALLOWED")
                #expect(delete.headers.first(name: "Allow") == "GET, HEAD, POST")
                #expect(delete.headers.first(name: "Connection") == "close")
                #expect(await http.isClosedByServer())
            }
        }
    }

    @Test("topic segments are percent-decoded, queries form-decoded; bad numbers are 400 naming the parameter")
    func decoding() async throws {
        let data = FakeData(topics: ["news.sport": (0..<10).map { sampleEvent($0) }])
        try await withEndpoint(data: data, configure: { $0.maxEventsPerRequest = 70 }) { _, port in
            try await TestHTTP.with(port: port) { http in
                let events = try await http.request(.GET, "/api/topics/news%2Esport/events?from=3&limit=2&x=%zz")
                #expect(events.status == .badRequest, "an undecodable parameter, even an unknown one, is refused")
                let ok = try await http.request(.GET, "/api/topics/news%2Esport/events?from=3&limit=2&other=1")
                #expect(ok.status == .ok)
                #expect(ok.headers.first(name: "Cache-Control") == "no-store")
                let answer = try ok.decode(EventsJSON.self)
                #expect(answer.events.map(\.offset) == [3, 4])
                _ = try await http.request(.GET, "/api/topics/news.sport/events?limit=100000")
                _ = try await http.request(.GET, "/api/topics/news.sport/events")
                _ = try await http.request(.GET, "/api/topics/news.sport/events?uri=urn%3Aa+b%26c")
                _ = try await http.request(.GET, "/api/topics?pattern=news.%3E")
                #expect(data.asked == [
                    FakeData.Asked(topic: "news.sport", from: 3, limit: 2),
                    FakeData.Asked(topic: "news.sport", from: nil, limit: 70),
                    FakeData.Asked(topic: "news.sport", from: nil, limit: 50),
                    FakeData.Asked(topic: "news.sport", uri: "urn:a b&c"),
                    FakeData.Asked(topic: "news.>"),
                ])
                for (query, parameter) in [("from=abc", "from"), ("from=-1", "from"), ("limit=0", "limit"), ("limit=1x", "limit")] {
                    let bad = try await http.request(.GET, "/api/topics/news.sport/events?\(query)")
                    #expect(bad.status == .badRequest, "\(query)")
                    #expect(bad.errorCode == "INVALID_REQUEST")
                    #expect(bad.errorMessage?.contains("'\(parameter)'") == true, "\(bad.text)")
                }
                let noURI = try await http.request(.GET, "/api/articles")
                #expect(noURI.status == .badRequest)
                #expect(noURI.errorMessage?.contains("'uri'") == true)
                let noArticle = try await http.request(.GET, "/api/articles?uri=urn%3Anone")
                #expect(noArticle.status == .notFound)
                #expect(noArticle.errorCode == "NOT_FOUND")
            }
        }
    }

    @Test("errors map to their statuses, and markup in topic names and messages is JSON-escaped")
    func errorMapping() async throws {
        let data = FakeData()
        let cases: [(String, TelexError, HTTPResponseStatus)] = [
            ("lost", TelexError(.dataLoss, "topic 'lost': records 5..<9 are damaged"), .internalServerError),
            ("range", TelexError(.offsetOutOfRange, "offset 99 is past the end 4 of topic 'range'"), .rangeNotSatisfiable),
            ("secret", TelexError(.notAuthorized, "principal 'r' may not subscribe to 'secret'"), .forbidden),
            ("bad", TelexError(.invalidTopic, "topic 'bad' is not valid"), .badRequest),
            ("broken", TelexError(.storageFailure, "topic 'broken': read failed"), .internalServerError),
            ("stopping", TelexError(.shuttingDown, "the broker is shutting down"), .serviceUnavailable),
        ]
        data.state.withLockedValue { state in
            for (topic, error, _) in cases { state.errors[topic] = error }
        }
        try await withEndpoint(data: data) { _, port in
            try await TestHTTP.with(port: port) { http in
                for (topic, error, status) in cases {
                    let response = try await http.request(.GET, "/api/topics/\(topic)/events")
                    #expect(response.status == status, "\(topic)")
                    #expect(response.errorCode == error.code.name)
                    #expect(response.errorMessage == error.message)
                    expectSecurityHeaders(response)
                }
                let hostile = "<script>alert(1)</script>&"
                let encoded = hostile.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
                let response = try await http.request(.GET, "/api/topics/\(encoded)/events")
                #expect(response.status == .notFound)
                #expect(response.errorCode == "TOPIC_NOT_FOUND")
                #expect(response.errorMessage == "topic '\(hostile)' does not exist", "the JSON still decodes to the name")
                #expect(!response.text.contains("<"))
                #expect(!response.text.contains(">"))
                #expect(response.text.contains(#"\u003cscript\u003e"#))
            }
        }
    }

    @Test("a body over the limit is refused with 413 at once, declared or chunked, and the connection closes")
    func bodyTooLarge() async throws {
        try await withEndpoint(configure: { $0.maxRequestBodyBytes = 100 }) { _, port in
            // Declared: answered from the head alone, before any byte of the body is sent.
            try await TestHTTP.with(port: port) { http in
                var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/api/login")
                head.headers.add(name: "Content-Length", value: "1000000")
                head.headers.add(name: "Content-Type", value: "application/json")
                try await http.outbound.write(.head(head))
                let response = try await http.response()
                #expect(response.status == .payloadTooLarge)
                #expect(response.errorCode == "TOO_LARGE")
                #expect(response.errorMessage?.contains("100 bytes") == true)
                #expect(response.headers.first(name: "Connection") == "close")
                expectSecurityHeaders(response)
                #expect(await http.isClosedByServer())
            }
            // Chunked: answered when the chunks pass the limit, though the request has not ended.
            try await TestHTTP.with(port: port) { http in
                var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/api/login")
                head.headers.add(name: "Transfer-Encoding", value: "chunked")
                try await http.outbound.write(.head(head))
                try await http.outbound.write(.body(.byteBuffer(ByteBuffer(repeating: UInt8(ascii: "a"), count: 60))))
                try await http.outbound.write(.body(.byteBuffer(ByteBuffer(repeating: UInt8(ascii: "a"), count: 60))))
                let response = try await http.response()
                #expect(response.status == .payloadTooLarge)
                #expect(await http.isClosedByServer())
            }
            // At the limit is fine.
            let exact = try await fetch(port, .POST, "/api/login", headers: [("Content-Type", "application/json")],
                body: String(repeating: " ", count: 98) + "{}")
            #expect(exact.status == .ok)
        }
    }

    @Test("connections over maxConnections are closed at once; keep-alive serves many requests on one")
    func connectionCap() async throws {
        try await withEndpoint(configure: { $0.maxConnections = 1 }) { endpoint, port in
            try await TestHTTP.with(port: port) { first in
                for _ in 0..<3 {
                    let response = try await first.request(.GET, "/api/session")
                    #expect(response.status == .ok)
                    #expect(response.headers.first(name: "Connection") == "keep-alive")
                }
                #expect(endpoint.connections.connectionCount == 1)
                try await TestHTTP.with(port: port) { second in
                    try? await second.send(.GET, "/api/session")
                    #expect(await second.isClosedByServer())
                }
                #expect(try await first.request(.GET, "/api/session").status == .ok)
            }
        }
    }

    @Test("a request NIO cannot parse gets its 400 with the security headers")
    func unparsable() async throws {
        try await withEndpoint { _, port in
            let connection = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: "127.0.0.1", port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
            let text = try await connection.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"))
                var text = ""
                for try await chunk in inbound { text += String(buffer: chunk) }
                return text
            }
            #expect(text.hasPrefix("HTTP/1.1 400"))
            #expect(text.lowercased().contains("x-content-type-options: nosniff"))
            #expect(text.lowercased().contains("content-security-policy: default-src 'none'"))
        }
    }

    @Test("the sampling loop calls sample() while serving")
    func sampling() async throws {
        let data = FakeData()
        try await withEndpoint(data: data, configure: { $0.sampleInterval = .milliseconds(5) }) { _, _ in
            while data.samples < 3 { try await Task.sleep(for: .milliseconds(5)) }
        }
        #expect(data.samples >= 3)
    }
}

@Suite("Console router and plaintext rule")
struct HTTPRouterTests {
    @Test("method and path pick the route; segments are percent-decoded; the query is form-decoded")
    func routes() throws {
        func route(_ method: HTTPMethod, _ target: String) -> ConsoleRoute? {
            try? ConsoleRouter.route(method: method, target: target).get().0
        }
        #expect(route(.GET, "/") == .asset(path: "/"))
        #expect(route(.HEAD, "/console.css") == .asset(path: "/console.css"))
        #expect(route(.GET, "/api/topics/news.sport/events") == .events(topic: "news.sport"))
        #expect(route(.GET, "/api/topics/a%20b%2Fc/tail?from=1") == .tail(topic: "a b/c"))
        #expect(route(.GET, "/api/topics/a+b/tail") == .tail(topic: "a+b"), "+ is a space only in the query")
        #expect(route(.POST, "/api/consumers/indexer%2D1/reset") == .reset(consumer: "indexer-1"))
        #expect(route(.GET, "/api/consumers/indexer/reset") == nil)
        #expect(route(.GET, "/api/topics/%E2%82") == nil, "not UTF-8")
        #expect(route(.GET, "/api/topics/%zz/events") == nil)
        let query = try ConsoleRouter.route(method: .GET, target: "/api/articles?uri=urn%3Ax+y&uri=second&flag").get().1
        #expect(query == ["uri": "urn:x y", "flag": ""])
        #expect(throws: ConsoleRouter.Failure.methodNotAllowed(path: "/api/session", allow: [.GET])) {
            try ConsoleRouter.route(method: .POST, target: "/api/session").get()
        }
    }

    @Test("plaintext beyond loopback is refused at startup, naming the console")
    func plaintext() {
        #expect(ConsoleEndpoint.plaintextRefusal(host: "127.0.0.1", port: 7421, tls: nil, allowPlaintext: false) == nil)
        #expect(ConsoleEndpoint.plaintextRefusal(host: "0.0.0.0", port: 7421, tls: nil, allowPlaintext: true) == nil)
        let refusal = ConsoleEndpoint.plaintextRefusal(host: "0.0.0.0", port: 7421, tls: nil, allowPlaintext: false)
        #expect(refusal?.contains("serve the console on 0.0.0.0:7421 in plaintext") == true, "\(refusal ?? "")")
    }
}
