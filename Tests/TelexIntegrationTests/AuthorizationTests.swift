import Foundation
import NIOCore
import TelexAuth
import TelexCLI
import TelexClient
import TelexProtocol
import TelexServer
import Testing

@Suite("Principals over a real broker", .timeLimit(.minutes(1)))
struct PrincipalIntegrationTests {
    @Test("a principal publishes where it may; elsewhere the error names the topic, and a reload takes effect live")
    func publishWithAToken() async throws {
        try await withTemporaryDirectory { directory in
            let usersFile = directory + "/users.json"
            let token = try UsersAdministration.add(
                file: usersFile, name: "sports-desk", publish: ["news.sport.>"], subscribe: ["news.sport.>"])
            let server = try await startServer(directory: directory + "/data") { $0.auth.usersFile = usersFile }
            var configuration = clientConfiguration(server)
            configuration.authToken = token
            let record = Record(timestamp: 1_700_000_000_000, key: ByteBuffer(string: "k"), value: ByteBuffer(string: "v"))
            try await TelexClient.withClient(configuration: configuration) { client in
                let acks = try await client.publish([record], to: "news.sport.football")
                #expect(acks.count == 1)
                do {
                    _ = try await client.publish([record], to: "news.politics")
                    Issue.record("publishing outside the principal's rights succeeded")
                } catch {
                    let text = describe(error)
                    #expect(text.hasPrefix("NOT_AUTHORIZED: "), "\(text)")
                    #expect(text.contains("'news.politics'"), "\(text)")
                }
                #expect(server.topicStore?.log("news.politics") == nil)

                // Narrowed while connected: the same connection may no longer publish to news.sport.
                var file = try UsersFile.load(path: usersFile)
                file.principals[0].publish = ["news.sport.tennis"]
                try file.write(to: usersFile)
                try await server.reload()
                do {
                    _ = try await client.publish([record], to: "news.sport.football")
                    Issue.record("a narrowed principal still published")
                } catch {
                    #expect(describe(error).contains("NOT_AUTHORIZED"))
                }
                #expect(try await client.publish([record], to: "news.sport.tennis").count == 1)
            }

            // Without a token the broker refuses the client.
            var anonymous = clientConfiguration(server)
            anonymous.maxReconnectAttempts = 0
            await #expect(throws: TelexError.self) {
                try await TelexClient.withClient(configuration: anonymous) { try await $0.connect() }
            }
            try await server.shutdown()
        }
    }

    @Test("overlapping reloads, with the users file changed between them, end with the newest file in force")
    func overlappingReloadsKeepTheNewest() async throws {
        try await withTemporaryDirectory { directory in
            let usersFile = directory + "/users.json"
            // A large file takes long to parse, so the first reload is still parsing the old file when the second
            // one reads the new file: without serialized reloads the first would finish last and win.
            var old = UsersFile(principals: (0..<20_000).map {
                Principal(name: "filler-\($0)", secretSHA256: Secrets.hashHex("\($0)"), publish: ["news.>"])
            })
            let oldToken = try old.add(name: "old", publish: ["news.>"], subscribe: [], consumers: [], admin: false)
            try old.write(to: usersFile)
            let server = try await startServer(directory: directory + "/data") { $0.auth.usersFile = usersFile }
            let first = Task { try await server.reload() }
            try await Task.sleep(for: .milliseconds(50))
            var new = UsersFile()
            let newToken = try new.add(name: "new", publish: ["news.>"], subscribe: [], consumers: [], admin: false)
            try new.write(to: usersFile)
            let second = Task { try await server.reload() }
            try await first.value
            try await second.value

            func connects(_ token: String) async -> Bool {
                var configuration = clientConfiguration(server)
                configuration.authToken = token
                configuration.maxReconnectAttempts = 0
                do {
                    try await TelexClient.withClient(configuration: configuration) { try await $0.connect() }
                    return true
                } catch {
                    return false
                }
            }
            #expect(await connects(newToken), "the newest users file is not in force")
            #expect(!(await connects(oldToken)), "an older users file came back")
            try await server.shutdown()
        }
    }
}
