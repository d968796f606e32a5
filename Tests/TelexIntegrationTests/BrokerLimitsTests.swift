import Foundation
import NIOCore
import TelexClient
import TelexAuth
import TelexProtocol
import TelexServer
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("Broker limits", .timeLimit(.minutes(1)))
struct BrokerLimitsTests {
    @Test("beyond the maximum, a connection gets TOO_MANY_CONNECTIONS and is closed; a freed place is taken again")
    func maxConnections() async throws {
        try await withTemporaryDirectory { directory in
            let server = try await startServer(directory: directory) { $0.limits.maxConnections = 3 }
            var open = try (0..<3).map { _ in try RawConnection(port: server.localPort!) }
            for connection in open { try connection.hello() }
            let refused = try RawConnection(port: server.localPort!)
            let (requestID, message) = try refused.readMessage()
            #expect(requestID == 0)
            guard case .error(let code, let text) = message else { throw TelexError(.internalError, "got \(message)") }
            #expect(code == .tooManyConnections)
            #expect(text.contains("3 connections"))
            #expect(refused.waitForClose())
            open.removeLast()
            var admitted = false
            for _ in 0..<100 where !admitted {
                let again = try RawConnection(port: server.localPort!)
                again.send(.hello(minVersion: 1, maxVersion: 1, clientName: "raw", authToken: ByteBuffer()), requestID: 1)
                if case .helloOK = try again.readMessage().message { admitted = true }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(admitted)
            try await server.shutdown()
        }
    }

    @Test("a silent connection and a slow-loris HELLO are both closed with HANDSHAKE_TIMEOUT")
    func handshakeTimeout() async throws {
        try await withTemporaryDirectory { directory in
            let server = try await startServer(directory: directory) { $0.limits.handshakeTimeout = .milliseconds(300) }
            let silent = try RawConnection(port: server.localPort!)
            let trickling = try RawConnection(port: server.localPort!)
            var hello = ByteBuffer()
            hello.writeMessage(.hello(minVersion: 1, maxVersion: 1, clientName: "slow-loris", authToken: ByteBuffer()),
                               requestID: 1)
            // One byte every 50 ms, stopping as soon as the broker said something (writing on would reset).
            for index in 0..<hello.readableBytes where !trickling.hasDataToRead() {
                trickling.send(hello.getSlice(at: index, length: 1)!)
                try await Task.sleep(for: .milliseconds(50))
            }
            for connection in [silent, trickling] {
                let (requestID, message) = try connection.readMessage()
                #expect(requestID == 0)
                guard case .error(let code, _) = message else { throw TelexError(.internalError, "got \(message)") }
                #expect(code == .handshakeTimeout)
                #expect(connection.waitForClose())
            }
            try await server.shutdown()
        }
    }

    @Test("connections creating topics at once never pass the cap together")
    func topicCapUnderConcurrency() async throws {
        try await withTemporaryDirectory { directory in
            let server = try await startServer(directory: directory) { $0.limits.maxTopics = 10 }
            let connections = try (0..<4).map { _ in try RawConnection(port: server.localPort!) }
            for connection in connections { try connection.hello() }
            for (index, connection) in connections.enumerated() {
                for topic in 0..<5 {
                    connection.send(.publish(topic: "news.c\(index).t\(topic)", batch: smallBatch()), requestID: UInt32(2 + topic))
                }
            }
            var acks = 0
            var refusals = 0
            for connection in connections {
                for _ in 0..<5 {
                    switch try connection.readMessage().message {
                    case .publishAck: acks += 1
                    case .error(.tooManyTopics, _): refusals += 1
                    case let other: Issue.record("unexpected \(other)")
                    }
                }
            }
            #expect(acks == 10)
            #expect(refusals == 10)
            #expect(server.topicStore?.topics.count == 10)
            try await server.shutdown()
        }
    }

    @Test("the creation rate is per principal: connections of the same principal share a bucket")
    func creationRatePerPrincipal() async throws {
        try await withTemporaryDirectory { directory in
            let usersFile = directory + "/users.json"
            let sports = try UsersAdministration.add(file: usersFile, name: "sports-scraper", publish: ["news.>"], subscribe: [])
            let weather = try UsersAdministration.add(file: usersFile, name: "weather-feed", publish: ["news.>"], subscribe: [])
            let server = try await startServer(directory: directory + "/data") {
                $0.auth.usersFile = usersFile
                $0.limits.topicCreationRate = 0.001
                $0.limits.topicCreationBurst = 3
            }
            func connect(token: String) throws -> RawConnection {
                let connection = try RawConnection(port: server.localPort!)
                connection.send(.hello(minVersion: 1, maxVersion: 1, clientName: "client", authToken: ByteBuffer(string: token)),
                                requestID: 1)
                guard case .helloOK = try connection.readMessage().message else { throw TelexError(.internalError, "no HELLO_OK") }
                return connection
            }
            func create(_ topic: String, on connection: RawConnection) throws -> BrokerMessage {
                connection.send(.publish(topic: topic, batch: smallBatch()), requestID: 2)
                return try connection.readMessage().message
            }
            let first = try connect(token: sports)
            let second = try connect(token: sports)
            let other = try connect(token: weather)
            for topic in ["news.sport.a", "news.sport.b"] {
                guard case .publishAck = try create(topic, on: first) else { throw TelexError(.internalError, topic) }
            }
            guard case .publishAck = try create("news.sport.c", on: second) else { throw TelexError(.internalError, "c") }
            let refused = try create("news.sport.d", on: second)
            guard case .error(.rateLimited, let text) = refused else { throw TelexError(.internalError, "got \(refused)") }
            #expect(text.contains("news.sport.d"))
            #expect(server.topicStore?.log("news.sport.d") == nil)
            guard case .publishAck = try create("news.weather", on: other) else { throw TelexError(.internalError, "other") }
            guard case .publishAck = try create("news.sport.a", on: second) else { throw TelexError(.internalError, "a") }
            try await server.shutdown()
        }
    }

    @Test("with 1,000 idle connections, a publisher that never reads acks and a subscriber that never reads, a good client still publishes and receives")
    func goodClientAmongAbusers() async throws {
        // Both ends of every connection live in this process: about 2,100 descriptors.
        try raiseOpenFileLimit(to: 4096)
        try await withServer(configure: {
            $0.limits.handshakeTimeout = .seconds(60)
            $0.limits.maxUnackedBytes = 64 << 10
        }) { server, client in
            let idle = try (0..<1000).map { _ in try RawConnection(port: server.localPort!) }
            let flooder = try RawConnection(port: server.localPort!)
            try flooder.hello()
            var sent = 0
            while sent < 5000, flooder.sendWithoutBlocking(publishFrame(topic: "news.flood", requestID: UInt32(sent + 2))) {
                sent += 1
            }
            let sleeper = try RawConnection(port: server.localPort!)
            try sleeper.hello()
            sleeper.send(.subscribe(subscriptionID: 1, pattern: "news.>", start: .beginning, consumerName: "",
                                    initialCredit: 4096, resume: []), requestID: 2)

            let subscription = try await client.subscribe("news.world", from: .beginning)
            for round in 0..<10 {
                let acks = try await client.publish(records(round * 5..<round * 5 + 5), to: "news.world")
                #expect(acks.map(\.baseOffset) == [Int64(round * 5)])
            }
            let received = try await collect(subscription, count: 50)
            #expect(received.map(\.offset) == Array(0..<50))
            #expect(idle.count == 1000)
            #expect(sent > 0)
        }
    }
}

/// Raises this process's soft limit on open files to `count`, or to the hard limit if that is lower.
private func raiseOpenFileLimit(to count: rlim_t) throws {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { throw TelexError(.internalError, "getrlimit failed") }
    guard limit.rlim_cur < count else { return }
    limit.rlim_cur = min(count, limit.rlim_max)
    guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { throw TelexError(.internalError, "setrlimit failed") }
}

/// One small batch of a single record.
private func smallBatch() -> ByteBuffer {
    var builder = RecordBatchBuilder()
    builder.append(timestamp: 1_700_000_000_000, key: ByteBuffer(string: "key"), value: ByteBuffer(string: "value"))
    return builder.build(codec: .none)
}

/// A PUBLISH frame of one batch of about 1 KiB.
private func publishFrame(topic: String, requestID: UInt32) -> ByteBuffer {
    var builder = RecordBatchBuilder()
    builder.append(timestamp: 1_700_000_000_000, key: ByteBuffer(string: "flood"),
                   value: ByteBuffer(string: String(repeating: "x", count: 1000)))
    var frame = ByteBuffer()
    frame.writeMessage(.publish(topic: topic, batch: builder.build(codec: .none)), requestID: requestID)
    return frame
}

extension RawConnection {
    /// Whether the broker sent something (or closed) that has not been read yet.
    func hasDataToRead() -> Bool {
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) >= 0
    }

    /// Sends `buffer` whole if the socket takes it without waiting; false once it would block (or failed).
    func sendWithoutBlocking(_ buffer: ByteBuffer) -> Bool {
        buffer.withUnsafeReadableBytes { bytes in
            var sent = 0
            while sent < bytes.count {
                let count = Glibc.send(fd, bytes.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
                if count > 0 {
                    sent += count
                } else if sent > 0, errno == EAGAIN {
                    usleep(1000)
                } else {
                    return false
                }
            }
            return true
        }
    }
}
