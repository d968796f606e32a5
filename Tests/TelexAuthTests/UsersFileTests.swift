import Foundation
import Synchronization
import Testing

@testable import TelexAuth

@Suite("Users file and authentication", .timeLimit(.minutes(1)))
struct UsersFileTests {
    let directory: String

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("telex-users-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    func path(_ name: String = "users.json") -> String { directory + "/" + name }

    func decodeError(_ json: String) -> String {
        do {
            _ = try UsersFile.decode(Data(json.utf8), path: "users.json")
            return "no error"
        } catch {
            return error.message
        }
    }

    @Test func parsesTheDocumentedSchema() throws {
        let hash = Secrets.hashHex("s3cret")
        let file = try UsersFile.decode(Data("""
            {"version": 1, "principals": [
              {"name": "sports-desk", "secretSHA256": "\(hash)", "publish": ["news.sport.>"], "subscribe": ["news.>"],
               "consumers": ["sports-*"], "admin": false},
              {"name": "push.example.com", "subscribe": ["news.>"]}
            ]}
            """.utf8), path: "users.json")
        #expect(file.principals.count == 2)
        #expect(file.principals[0].permissions == Permissions(publish: ["news.sport.>"], subscribe: ["news.>"], consumers: ["sports-*"]))
        #expect(file.principals[1].secretSHA256 == nil)
        #expect(file.principals[1].publish.isEmpty && !file.principals[1].admin)
    }

    @Test func errorsNameWhatIsWrong() {
        #expect(decodeError(#"{"version": 1, "principals": [{"name": "a", "publish": ["news..x"]}]}"#)
            .contains("bad pattern 'news..x'"))
        #expect(decodeError(#"{"version": 1, "principals": [{"name": "a", "subscribe": ["news.>.x"]}]}"#)
            .contains("'news.>.x'"))
        #expect(decodeError(#"{"version": 1, "principals": [{"name": "a"}, {"name": "a"}]}"#).contains("'a' appears twice"))
        #expect(decodeError(#"{"version": 1, "principals": [{"name": "a", "secretSHA256": "abc"}]}"#)
            .contains("not 64 hex digits"))
        #expect(decodeError(#"{"version": 1, "principals": [{"name": "a", "consumers": ["x*y"]}]}"#)
            .contains("bad consumer 'x*y'"))
        #expect(decodeError(#"{"version": 1, "principals": [{"name": "a b"}]}"#).contains("'a b' is not valid"))
        #expect(decodeError(#"{"version": 2, "principals": []}"#).contains("version 2"))
        #expect(decodeError(#"{"version": 1, "principals": [{"publish": []}]}"#).contains("missing 'name'"))
        #expect(decodeError("not json").contains("not valid"))
        #expect(throws: UsersFileError.self) { try UsersFile.load(path: path("missing.json")) }
        do {
            _ = try UsersFile.load(path: path("missing.json"))
        } catch {
            #expect(error.message.contains("does not exist"))
        }
    }

    @Test func addListRemove() throws {
        let file = path()
        let token = try UsersAdministration.add(
            file: file, name: "sports-desk", publish: ["news.sport.>"], subscribe: ["news.>"], consumers: ["sports-*"])
        let (name, secret) = try #require(Secrets.split(token: token))
        #expect(name == "sports-desk")
        #expect(secret.count == 64)
        let text = try String(contentsOfFile: file, encoding: .utf8)
        #expect(!text.contains(secret))
        #expect(text.contains(Secrets.hashHex(secret)))
        let mode = try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int
        #expect(mode == 0o600)

        _ = try UsersAdministration.add(file: file, name: "push", publish: [], subscribe: ["news.>"], admin: true)
        #expect(throws: UsersFileError("principal 'push' already exists; remove it first to give it a new token")) {
            _ = try UsersAdministration.add(file: file, name: "push", publish: [], subscribe: [])
        }
        #expect(throws: UsersFileError.self) {
            _ = try UsersAdministration.add(file: file, name: "bad", publish: ["news.*x"], subscribe: [])
        }
        let listing = try UsersAdministration.list(file: file)
        #expect(listing == [
            "sports-desk\tpublish=news.sport.>\tsubscribe=news.>\tconsumers=sports-*\tadmin=false",
            "push\tpublish=-\tsubscribe=news.>\tconsumers=-\tadmin=true",
        ])
        #expect(!listing.joined().contains(Secrets.hashHex(secret)))

        try UsersAdministration.remove(file: file, name: "push")
        #expect(try UsersAdministration.list(file: file).count == 1)
        #expect(throws: UsersFileError("no principal named 'push'")) { try UsersAdministration.remove(file: file, name: "push") }
        #expect(throws: UsersFileError.self) { try UsersAdministration.list(file: path("none.json")) }
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.contains(".tmp-") }
        #expect(leftovers.isEmpty)
        try FileManager.default.removeItem(atPath: directory)
    }

    @Test func constantTimeComparison() {
        #expect(Secrets.constantTimeEquals([1, 2, 3], [1, 2, 3]))
        #expect(!Secrets.constantTimeEquals([1, 2, 3], [1, 2, 4]))
        #expect(!Secrets.constantTimeEquals([1, 2, 3], [1, 2]))
        #expect(Secrets.constantTimeEquals([], []))
        #expect(Secrets.hash("x").count == 32)
        #expect(Secrets.bytes(hex: Secrets.hex([0, 0xAB, 0xFF])) == [0, 0xAB, 0xFF])
    }

    @Test func authenticatesTokensCertificatesAndTheSharedToken() throws {
        var users = UsersFile()
        let token = try users.add(name: "desk.world", publish: ["news.world"], subscribe: [], consumers: [], admin: false)
        users.principals.append(Principal(name: "push.example.com", secretSHA256: nil, subscribe: ["news.>"]))
        let authenticator = Authenticator(users: users, sharedToken: "shared-7")
        let login = Login.secret(sha256: try #require(users.principals[0].secretSHA256))
        let desk = Identity.principal("desk.world", login: login)
        #expect(authenticator.authenticate(token: token, peerCommonName: nil) == .accepted(desk))
        #expect(authenticator.authenticate(token: "desk.world.0000", peerCommonName: nil)
            == .rejected(principal: "desk.world", reason: "wrong secret"))
        #expect(authenticator.authenticate(token: "ghost.abcd", peerCommonName: nil)
            == .rejected(principal: nil, reason: "unknown principal"))
        #expect(authenticator.authenticate(token: "nodot", peerCommonName: nil)
            == .rejected(principal: nil, reason: "the token is not NAME.SECRET"))
        #expect(authenticator.authenticate(token: "", peerCommonName: nil) == .rejected(principal: nil, reason: "HELLO carries no token"))
        #expect(authenticator.authenticate(token: "", peerCommonName: "push.example.com")
            == .accepted(.principal("push.example.com", login: .certificate)))
        #expect(authenticator.authenticate(token: "push.example.com.00", peerCommonName: nil)
            == .rejected(principal: "push.example.com", reason: "the principal logs in by client certificate only"))
        if case .accepted = authenticator.authenticate(token: "", peerCommonName: "stranger") { Issue.record("stranger accepted") }
        #expect(authenticator.authenticate(token: "shared-7", peerCommonName: nil) == .accepted(.sharedToken))
        #expect(authenticator.permissions(of: .sharedToken) == .all)
        #expect(authenticator.permissions(of: desk).publish == ["news.world"])
        #expect(authenticator.permissions(of: .principal("removed", login: login)) == .none)
        #expect(authenticator.permissions(of: .unauthenticated) == .none)

        let open = Authenticator(users: nil, sharedToken: nil)
        #expect(open.authenticate(token: "anything", peerCommonName: nil) == .accepted(.anonymous))
        #expect(open.permissions(of: .anonymous) == .all)
        #expect(open.permissions(of: .unauthenticated) == .none, "no right before HELLO, even without authentication")
        let sharedOnly = Authenticator(users: nil, sharedToken: "t")
        #expect(sharedOnly.authenticate(token: "u", peerCommonName: nil)
            == .rejected(principal: nil, reason: "the token does not match --auth-token"))
        #expect(sharedOnly.permissions(of: .unauthenticated) == .none)
    }

    @Test("a failed login names only an existing principal, never a part of the token")
    func failedLoginNamesOnlyExistingPrincipals() throws {
        var users = UsersFile()
        _ = try users.add(name: "desk", publish: [], subscribe: [], consumers: [], admin: false)
        let authenticator = Authenticator(users: users, sharedToken: "shared.with.dots")
        for token in ["shared.with.dotz", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkZXNrIn0.c2lnbmF0dXJl", "desk.x.0000", "desk"] {
            guard case .rejected(let principal, let reason) = authenticator.authenticate(token: token, peerCommonName: nil) else {
                Issue.record("\(token) accepted")
                continue
            }
            #expect(principal == nil, "\(token)")
            for part in token.split(separator: ".") where part != "desk" {
                #expect(!reason.contains(part), "\(token): \(reason)")
            }
        }
    }

    @Test("a replaced secret cuts off connections that logged in with the old one; a certificate login stays")
    func rotatedSecretCountsAsRemoved() throws {
        var users = UsersFile()
        let oldToken = try users.add(name: "desk", publish: ["news.>"], subscribe: [], consumers: [], admin: false)
        guard case .accepted(let oldLogin) = Authenticator(users: users, sharedToken: nil).authenticate(
            token: oldToken, peerCommonName: nil)
        else { throw UsersFileError("old token refused") }
        let byCertificate = Identity.principal("desk", login: .certificate)

        try users.remove(name: "desk")
        let newToken = try users.add(name: "desk", publish: ["news.>"], subscribe: [], consumers: [], admin: false)
        let rotated = Authenticator(users: users, sharedToken: nil)
        #expect(rotated.permissions(of: oldLogin) == .none)
        #expect(rotated.permissions(of: byCertificate).publish == ["news.>"])
        guard case .accepted(let newLogin) = rotated.authenticate(token: newToken, peerCommonName: nil) else {
            throw UsersFileError("new token refused")
        }
        #expect(rotated.permissions(of: newLogin).publish == ["news.>"])
        #expect(newLogin.name == oldLogin.name && newLogin != oldLogin)
        if case .accepted = rotated.authenticate(token: oldToken, peerCommonName: nil) { Issue.record("old token accepted") }

        // The same hash written in upper case is the same secret.
        users.principals[0].secretSHA256 = users.principals[0].secretSHA256?.uppercased()
        #expect(Authenticator(users: users, sharedToken: nil).permissions(of: newLogin).publish == ["news.>"])
    }

    @Test("the built-in identities' names are reserved")
    func reservedNames() {
        for name in ["anonymous", "auth-token", "unauthenticated"] {
            #expect(decodeError(#"{"version": 1, "principals": [{"name": "\#(name)"}]}"#).contains("'\(name)' is reserved"))
            var users = UsersFile()
            #expect(throws: UsersFileError.self) {
                _ = try users.add(name: name, publish: [], subscribe: [], consumers: [], admin: false)
            }
        }
        #expect(decodeError(#"{"version": 1, "principals": [{"name": "anonymous2"}]}"#) == "no error")
    }

    @Test("replacing the file keeps its mode; a new file is 0600")
    func writeKeepsTheMode() throws {
        let file = path()
        _ = try UsersAdministration.add(file: file, name: "a", publish: [], subscribe: [])
        #expect(try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int == 0o600)
        #expect(chmod(file, 0o640) == 0)
        _ = try UsersAdministration.add(file: file, name: "b", publish: [], subscribe: [])
        #expect(try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int == 0o640)
        try UsersAdministration.remove(file: file, name: "a")
        #expect(try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int == 0o640)
        let owner = try FileManager.default.attributesOfItem(atPath: file)[.ownerAccountID] as? Int
        #expect(owner == Int(getuid()))
        try FileManager.default.removeItem(atPath: directory)
    }

    @Test("the temporary and lock files are never opened through a symbolic link")
    func symbolicLinksRefused() throws {
        let target = path("target")
        try Data("untouched".utf8).write(to: URL(fileURLWithPath: target))
        let temporary = path("users.json.tmp-guess")
        #expect(symlink(target, temporary) == 0)
        #expect(throws: UsersFileError.self) { _ = try UsersFile.createExclusively(temporary) }
        #expect(throws: UsersFileError.self) { _ = try UsersFile.createExclusively(target) }

        let file = path()
        #expect(symlink(target, file + ".lock") == 0)
        #expect(throws: UsersFileError.self) {
            _ = try UsersAdministration.add(file: file, name: "a", publish: [], subscribe: [])
        }
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "untouched")
        #expect(!FileManager.default.fileExists(atPath: file))
        try FileManager.default.removeItem(atPath: directory)
    }

    @Test("concurrent adds to one file lose nothing")
    func concurrentAdds() throws {
        let file = path()
        let names = (0..<12).map { "desk-\($0)" }
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: names.count) { index in
            do {
                _ = try UsersAdministration.add(file: file, name: names[index], publish: [], subscribe: [])
            } catch {
                failures.withLock { $0.append("\(error)") }
            }
        }
        #expect(failures.withLock { $0 }.isEmpty)
        #expect(Set(try UsersFile.load(path: file).principals.map(\.name)) == Set(names))
        try FileManager.default.removeItem(atPath: directory)
    }

    @Test func backoffGrowsPerPeerAndIsBounded() {
        let backoff = LoginBackoff(baseDelay: .milliseconds(100), maxDelay: .milliseconds(350), capacity: 2)
        let now = ContinuousClock.now
        #expect(backoff.failed(peer: "10.0.0.1", now: now) == .zero)
        #expect(backoff.failed(peer: "10.0.0.1", now: now) == .milliseconds(100))
        #expect(backoff.failed(peer: "10.0.0.1", now: now) == .milliseconds(200))
        #expect(backoff.failed(peer: "10.0.0.1", now: now) == .milliseconds(350))
        #expect(backoff.failed(peer: "10.0.0.2", now: now) == .zero)
        #expect(backoff.failed(peer: "10.0.0.1", now: now + .seconds(601)) == .zero)
        _ = backoff.failed(peer: "10.0.0.3", now: now + .seconds(602))
        #expect(backoff.count == 2)
        backoff.succeeded(peer: "10.0.0.3")
        #expect(backoff.count == 1)
    }
}
