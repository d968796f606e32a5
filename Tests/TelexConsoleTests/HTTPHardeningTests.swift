import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import TelexAuth
import TelexProtocol
import Testing

@testable import TelexConsole

/// A plain TCP connection, to send a request a byte at a time or not at all.
private typealias RawConnection = NIOAsyncChannel<ByteBuffer, ByteBuffer>

private func rawConnect(_ port: Int) async throws -> RawConnection {
    try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture { try RawConnection(wrappingChannelSynchronously: channel) }
        }
}

/// Sends `text` on a new connection, then returns once the server has closed it (true), reading what it answers.
private func sendAndAwaitClose(_ port: Int, _ text: String) async throws -> Bool {
    let connection = try await rawConnect(port)
    return try await connection.executeThenClose { inbound, outbound in
        do {
            // On a loaded machine the deadline may pass before the write: the server closed first, which is the point.
            if !text.isEmpty { try await outbound.write(ByteBuffer(string: text)) }
            for try await _ in inbound {}
        } catch {}
        return true
    }
}

/// Timeouts long enough that only the one a test shortens can close a connection.
private let patient = ConsoleEndpoint.Timing(
    keepAlive: .seconds(15), idle: .seconds(600), requestTimeout: .seconds(600), keepAliveIdle: .seconds(600),
    shutdownGrace: .seconds(600))

@Suite("Console hardening: Host check, deadlines, per-peer cap, unknown methods", .timeLimit(.minutes(1)))
struct HTTPHardeningTests {
    @Test("without logins only requests addressed to an IP literal or localhost are answered (DNS rebinding)")
    func hostCheckWithoutLogins() async throws {
        try await withEndpoint { _, port in
            for host in ["evil.example", "evil.example:\(port)", "127.0.0.1.evil.example", "localhost.evil.example"] {
                let refused = try await fetch(port, .GET, "/api/session", headers: [("Host", host)])
                #expect(refused.status == .forbidden, "\(host)")
                #expect(refused.errorCode == "HOST", "\(host)")
                #expect(refused.errorMessage?.contains("http://127.0.0.1:\(port)/") == true, "\(host)")
                #expect(refused.errorMessage?.contains("--users or --auth-token") == true, "\(host)")
                #expect(refused.headers.first(name: "Connection") == "close", "\(host)")
                expectSecurityHeaders(refused)
            }
            for host in ["127.0.0.1", "127.0.0.1:\(port)", "localhost", "LocalHost:\(port)", "[::1]", "[::1]:\(port)"] {
                let answered = try await fetch(port, .GET, "/api/session", headers: [("Host", host)])
                #expect(answered.status == .ok, "\(host)")
            }
        }
        for host in ["::1", "[::1", "[evil.example]", "127.0.0.1:", "127.0.0.1:80x", "", "10.0.0.300"] {
            #expect(!ConsoleEndpoint.isLiteralOrLocalhost(host), "\(host)")
        }
    }

    @Test("with logins a DNS name is answered (the cookie is SameSite=Strict and bound to its host)")
    func dnsNamesWithLogins() async throws {
        try await withEndpoint(authority: FakeAuthority(requiresAuthentication: true)) { _, port in
            let response = try await fetch(port, .GET, "/api/session", headers: [("Host", "console.example.com")])
            #expect(response.status == .unauthorized)
            #expect(response.errorCode == "UNAUTHENTICATED")
        }
    }

    @Test("CONNECT is 405 with Allow, and the connection closes")
    func connectMethod() async throws {
        try await withEndpoint { _, port in
            try await TestHTTP.with(port: port) { http in
                let response = try await http.request(.CONNECT, "example.com:443")
                // (NIO's client reads no body after a CONNECT: the status and headers say it.)
                #expect(response.status == .methodNotAllowed)
                #expect(response.headers.first(name: "Allow") == "GET, HEAD, POST")
                #expect(await http.isClosedByServer())
            }
        }
    }

    @Test("a connection that sends no request, half a head, or half a body is closed at the request deadline")
    func requestDeadline() async throws {
        var timing = patient
        timing.requestTimeout = .milliseconds(100)
        try await withEndpoint(timing: timing) { _, port in
            let nothing = try await sendAndAwaitClose(port, "")
            #expect(nothing)
            let halfHead = try await sendAndAwaitClose(port, "GET /api/session HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            #expect(halfHead)
            let halfBody = try await sendAndAwaitClose(port,
                "POST /api/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    + "Content-Length: 50\r\n\r\n{\"tok")
            #expect(halfBody)
        }
    }

    @Test("a keep-alive connection is closed when no next request comes within keepAliveIdle")
    func keepAliveIdle() async throws {
        var timing = patient
        // Long enough that the second request comes within it on a loaded machine; the close after it is awaited.
        timing.keepAliveIdle = .seconds(1)
        try await withEndpoint(timing: timing) { _, port in
            try await TestHTTP.with(port: port) { http in
                let first = try await http.request(.GET, "/api/session")
                let second = try await http.request(.GET, "/api/session")
                #expect(first.status == .ok && second.status == .ok)
                #expect(await http.isClosedByServer())
            }
        }
    }

    @Test("connections beyond maxConnectionsPerPeer from one address are closed at once")
    func perPeerCap() async throws {
        try await withEndpoint(timing: patient, configure: { $0.maxConnectionsPerPeer = 2 }) { endpoint, port in
            try await TestHTTP.with(port: port) { first in
                try await TestHTTP.with(port: port) { second in
                    let one = try await first.request(.GET, "/api/session")
                    let two = try await second.request(.GET, "/api/session")
                    #expect(one.status == .ok && two.status == .ok)
                    try await TestHTTP.with(port: port) { third in
                        #expect(await third.isClosedByServer())
                    }
                }
            }
            // Once they are closed, the address may connect again.
            while endpoint.connections.connectionCount > 0 { try await Task.sleep(for: .milliseconds(5)) }
            let again = try await fetch(port, .GET, "/api/session")
            #expect(again.status == .ok)
        }
    }

}
