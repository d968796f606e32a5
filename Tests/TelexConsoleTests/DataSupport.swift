import Foundation
import Logging
import NIOCore
import Synchronization
import TelexAuth
import TelexClient
import TelexConsole
import TelexEvents
import TelexProtocol
import TelexServer
import Testing

/// A broker for the data-layer tests: in process on 127.0.0.1:0 over a temporary directory, with a client.
enum DataFixture {
    /// The identity every request has without authentication.
    static let anonymous = ConsoleUser(identity: .anonymous, peer: "127.0.0.1:50000")

    /// Runs `body` with a started broker (a users file at `directory/users.json` when `users` is set: it receives the
    /// file's path to add principals before the broker starts) and a client holding `clientToken`'s rights.
    static func withBroker<T: Sendable>(
        users: ((String) throws -> String?)? = nil, configure: (inout ServerConfiguration) -> Void = { _ in },
        _ body: (TelexServer, TelexClient) async throws -> T
    ) async throws -> T {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("telex-console-data-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var configuration = ServerConfiguration(port: 0, dataDirectory: directory + "/data", eventLoopThreads: 1)
        configure(&configuration)
        var token: String?
        if let users {
            let path = directory + "/users.json"
            token = try users(path)
            configuration.auth.usersFile = path
        }
        var logger = Logger(label: "telex.test.console-data")
        logger.logLevel = .warning
        let server = TelexServer(configuration: configuration, logger: logger)
        try await server.start()
        do {
            var client = ClientConfiguration(port: server.localPort!, clientName: "console-data-test")
            client.requestTimeout = .seconds(20)
            client.authToken = token ?? ""
            let result = try await TelexClient.withClient(configuration: client) { client in
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

    static func data(
        _ server: TelexServer, clock: DataTestClock = DataTestClock(),
        configure: (inout ConsoleConfiguration) -> Void = { _ in }
    ) -> BrokerConsoleData {
        var configuration = ConsoleConfiguration(host: "127.0.0.1", port: 0)
        configure(&configuration)
        return BrokerConsoleData(server: server, configuration: configuration,
                                 logger: Logger(label: "telex.test.console-data"), clock: clock.consoleClock)
    }

    /// A ninjs 3.x article event like those of seeds/articles.jsonl.
    static func article(
        _ uri: String, headline: String, body: String = "Body text.", type: String = "article.created",
        by: String = "A. Reporter", extra: [String: JSONValue] = [:]
    ) throws -> CloudEvent {
        var article: [String: JSONValue] = [
            "uri": .string(uri), "type": "text", "versionCreated": "2024-03-06T08:00:00Z", "by": .string(by),
            "headlines": [["role": "main", "value": .string(headline)]],
            "bodies": [
                ["role": "main", "contentType": "text/plain", "value": .string(body)],
                ["role": "richtext", "contentType": "text/html", "value": .string("<p>\(body)</p>")],
            ],
        ]
        article.merge(extra) { $1 }
        return try CloudEvent(type: type, article: article, source: "urn:telex:test",
                              time: Date(timeIntervalSince1970: 1_700_000_000))
    }

    /// Publishes `events` to `topic` (record key = the article uri), one batch per call.
    static func publish(_ events: [CloudEvent], to topic: String, with client: TelexClient) async throws {
        _ = try await client.publish(events.map { $0.record() }, to: topic)
    }

    /// The identity `token` logs in as.
    static func login(_ token: String, at server: TelexServer) async throws -> ConsoleUser {
        guard case .accepted(let identity) = await server.consoleLogin(token: token, peer: "127.0.0.1:50001") else {
            throw TelexError(.authenticationFailed, "test token refused")
        }
        return ConsoleUser(identity: identity, peer: "127.0.0.1:50001")
    }
}

/// A clock the test moves by hand: monotonic milliseconds from 0, wall time from 2023-11-14.
final class DataTestClock: Sendable {
    private let now = Mutex<Int64>(0)
    static let wallOrigin: Int64 = 1_700_000_000_000

    func advance(milliseconds: Int64) { now.withLock { $0 += milliseconds } }

    var consoleClock: ConsoleClock {
        ConsoleClock(monotonicMilliseconds: { self.now.withLock { $0 } },
                     wallMilliseconds: { Self.wallOrigin + self.now.withLock { $0 } })
    }
}

/// Runs `body` and returns the TelexError it threw (nil if it threw none; another error is a test failure).
func dataError(_ body: () async throws -> Void) async -> TelexError? {
    do {
        try await body()
        return nil
    } catch let error as TelexError {
        return error
    } catch {
        Issue.record("expected a TelexError, got \(error)")
        return nil
    }
}
