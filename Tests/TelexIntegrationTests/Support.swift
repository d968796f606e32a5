import Foundation
import Logging
import NIOCore
import TelexClient
import TelexEvents
import TelexProtocol
import TelexServer
import TelexStorage
#if canImport(Glibc)
import Glibc
#endif

/// A temporary data directory, removed when the test is done.
func withTemporaryDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("telex-it-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try await body(path)
}

/// Starts a real broker on 127.0.0.1:0 over `directory`; the caller shuts it down.
func startServer(directory: String, configure: (inout ServerConfiguration) -> Void = { _ in }) async throws -> TelexServer {
    var configuration = ServerConfiguration(port: 0, dataDirectory: directory, eventLoopThreads: 2)
    configure(&configuration)
    var logger = Logger(label: "telex.test.server")
    logger.logLevel = .warning
    let server = TelexServer(configuration: configuration, logger: logger)
    try await server.start()
    return server
}

/// Runs `body` with a started server and a running client, then shuts both down.
func withServer<T: Sendable>(
    directory: String? = nil, configure: (inout ServerConfiguration) -> Void = { _ in },
    _ body: (TelexServer, TelexClient) async throws -> T
) async throws -> T {
    if let directory {
        return try await runWithServer(directory: directory, configure: configure, body)
    }
    return try await withTemporaryDirectory { try await runWithServer(directory: $0, configure: configure, body) }
}

private func runWithServer<T: Sendable>(
    directory: String, configure: (inout ServerConfiguration) -> Void, _ body: (TelexServer, TelexClient) async throws -> T
) async throws -> T {
    let server = try await startServer(directory: directory, configure: configure)
    do {
        let result = try await TelexClient.withClient(configuration: clientConfiguration(server)) { client in
            try await client.connect()
            return try await body(server, client)
        }
        try await server.shutdown()
        return result
    } catch {
        try? await server.shutdown()
        throw error
    }
}

/// Runs `body` with another client of `server`, shut down when `body` returns.
func withAnotherClient<T: Sendable>(_ server: TelexServer, _ body: (TelexClient) async throws -> T) async throws -> T {
    try await TelexClient.withClient(configuration: clientConfiguration(server)) { try await body($0) }
}

func clientConfiguration(_ server: TelexServer) -> ClientConfiguration {
    var configuration = ClientConfiguration(port: server.localPort!, clientName: "integration-test")
    configuration.requestTimeout = .seconds(20)
    configuration.maxReconnectAttempts = 3
    configuration.initialReconnectDelay = .milliseconds(20)
    return configuration
}

/// A small article event with a distinct uri and body.
func articleEvent(_ index: Int, topic: String? = nil, type: String = "article.created") throws -> CloudEvent {
    try CloudEvent(
        type: type,
        article: [
            "uri": "urn:telex:test:article-\(index)", "version": "1", "type": "text",
            "headlines": [["role": "main", "value": "Headline number \(index)"]],
            "bodies": [["role": "main", "contentType": "text/plain", "value": .string("Body \(index): " + String(repeating: "newsroom ", count: 20))]],
        ],
        source: "urn:telex:test", id: "evt-\(index)", topic: topic)
}

func records(_ range: Range<Int>) throws -> [Record] {
    try range.map { try articleEvent($0).record() }
}

/// Reads from `subscription` until `count` records arrived or `seconds` passed. Iterating a subscription ends
/// it when the iteration stops; to read it in several rounds, use `collect(_ iterator:...)`.
func collect(_ subscription: TelexSubscription, count: Int, seconds: Double = 20) async throws -> [DeliveredRecord] {
    var iterator = subscription.makeAsyncIterator()
    return try await collect(&iterator, count: count, seconds: seconds)
}

/// Reads `count` records from `iterator` within `seconds`, leaving it positioned after them.
func collect(_ iterator: inout TelexSubscription.Iterator, count: Int, seconds: Double = 20) async throws -> [DeliveredRecord] {
    let start = iterator
    let outcome = try await withThrowingTaskGroup(of: ([DeliveredRecord], TelexSubscription.Iterator)?.self) { group in
        group.addTask {
            var iterator = start
            var received: [DeliveredRecord] = []
            while received.count < count, let record = try await iterator.next() { received.append(record) }
            return (received, iterator)
        }
        group.addTask {
            try await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
            return nil
        }
        let first = try await group.next()!
        group.cancelAll()
        return first
    }
    guard let (received, advanced) = outcome else {
        throw TelexError(.timeout, "received fewer than \(count) records in \(seconds) s")
    }
    iterator = advanced
    return received
}

/// A blocking raw TCP connection for sending hand-made (or broken) bytes.
final class RawConnection {
    let fd: CInt
    var received = ByteBuffer()

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { throw TelexError(.connectionFailed, "raw connect failed") }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    /// How long a read waits before it fails.
    func setReadTimeout(milliseconds: Int) {
        var timeout = timeval(tv_sec: milliseconds / 1000, tv_usec: (milliseconds % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    func send(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { bytes in
            var sent = 0
            while sent < bytes.count {
                let count = Glibc.send(fd, bytes.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL))
                if count <= 0 { return }
                sent += count
            }
        }
    }

    func send(_ message: ClientMessage, requestID: UInt32) {
        var buffer = ByteBuffer()
        buffer.writeMessage(message, requestID: requestID)
        send(buffer)
    }

    /// Sends a message only a broker should send, to see how the broker refuses it.
    func send(_ message: BrokerMessage, requestID: UInt32) {
        var buffer = ByteBuffer()
        buffer.writeMessage(message, requestID: requestID)
        send(buffer)
    }

    func hello() throws {
        send(.hello(minVersion: 1, maxVersion: 1, clientName: "raw", authToken: ByteBuffer()), requestID: 1)
        guard case .helloOK = try readMessage().message else { throw TelexError(.malformedFrame, "no HELLO_OK") }
    }

    /// The next frame, or nil when the peer closed the connection.
    func readFrame() throws -> Frame? {
        var decoder = FrameDecoder(limits: FrameLimits(maxFrameSize: 64 << 20))
        while true {
            if let frame = try decoder.decode(buffer: &received) { return frame }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let count = recv(fd, &chunk, chunk.count, 0)
            if count == 0 { return nil }
            if count < 0 { throw TelexError(.timeout, "raw read timed out or failed (errno \(errno))") }
            received.writeBytes(chunk[0..<count])
        }
    }

    func readMessage() throws -> (requestID: UInt32, message: BrokerMessage) {
        guard let frame = try readFrame() else { throw TelexError(.connectionFailed, "closed by broker") }
        return (frame.header.requestID, try BrokerMessage.decode(frame))
    }

    /// Whether the broker closed the connection (reads until EOF, skipping frames).
    func waitForClose() -> Bool {
        while true {
            do {
                if try readFrame() == nil { return true }
            } catch {
                return false
            }
        }
    }
}
