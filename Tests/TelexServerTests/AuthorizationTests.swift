import Foundation
import Logging
import NIOCore
import TelexAuth
import TelexProtocol
import TelexStorage
import Testing

@testable import TelexServer

/// A users file in a temporary directory with three principals, and their tokens.
struct Principals {
    let directory: String
    var usersFile: String { directory + "/users.json" }
    var tokens: [String: String] = [:]

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("telex-auth-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        tokens["sports"] = try UsersAdministration.add(
            file: usersFile, name: "sports", publish: ["news.sport.>"], subscribe: ["news.sport.*"], consumers: ["sports-*"])
        tokens["reader"] = try UsersAdministration.add(
            file: usersFile, name: "reader", publish: [], subscribe: ["news.>"], consumers: ["push"])
        tokens["ops"] = try UsersAdministration.add(file: usersFile, name: "ops", publish: [], subscribe: [], admin: true)
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

extension HandlerHarness {
    /// The next answer to a request (skipping DELIVER and CAUGHT_UP, which carry request id 0).
    func answer() async throws -> (requestID: UInt32, message: BrokerMessage) {
        while true {
            let next = try await next()
            if next.requestID != 0 || !{ if case .deliver = next.message { true } else if case .caughtUp = next.message { true } else { false } }() {
                return next
            }
        }
    }

    /// Sends a PING and expects its PONG: the connection is still open and serving.
    func expectOpen(_ requestID: UInt32) async throws {
        try await send(.ping(nonce: UInt64(requestID)), requestID: requestID)
        let pong = try await answer()
        #expect(pong.requestID == requestID && pong.message == .pong(nonce: UInt64(requestID)))
    }
}

@Suite("Authorization", .timeLimit(.minutes(1)))
struct AuthorizationTests {
    /// One request of the matrix and whether it must be refused (the words the NOT_AUTHORIZED message contains).
    struct Case: CustomStringConvertible {
        let principal: String
        let request: ClientMessage
        let refusal: String?
        var description: String { "\(principal): \(request.type.name) \(request) → \(refusal ?? "allowed")" }
    }

    static func subscribe(_ id: UInt32, _ pattern: String, consumer: String = "", resume: [TopicOffset] = []) -> ClientMessage {
        .subscribe(subscriptionID: id, pattern: pattern, start: .beginning, consumerName: consumer, initialCredit: 0, resume: resume)
    }

    static let matrix: [Case] = [
        Case(principal: "sports", request: .publish(topic: "news.sport.football", batch: makeBatch()), refusal: nil),
        Case(principal: "sports", request: .publish(topic: "news.politics", batch: makeBatch()),
             refusal: "may not publish to 'news.politics'"),
        Case(principal: "sports", request: subscribe(1, "news.sport.*"), refusal: nil),
        Case(principal: "sports", request: subscribe(2, "news.sport.football"), refusal: nil),
        Case(principal: "sports", request: subscribe(3, "news.sport.>"), refusal: "may not subscribe to 'news.sport.>'"),
        Case(principal: "sports", request: subscribe(4, "news.*"), refusal: "may not subscribe to 'news.*'"),
        Case(principal: "sports", request: subscribe(5, "news.sport.*", consumer: "sports-1"), refusal: nil),
        Case(principal: "sports", request: subscribe(6, "news.sport.*", consumer: "push"),
             refusal: "may not use consumer name 'push'"),
        Case(principal: "sports", request: subscribe(7, "news.sport.*", consumer: "push",
                                                     resume: [TopicOffset(topic: "news.sport.football", offset: 0)]),
             refusal: "may not use consumer name 'push'"),
        Case(principal: "sports", request: .commit(subscriptionID: 5, topic: "news.sport.football", offset: 1), refusal: nil),
        Case(principal: "sports", request: .commit(subscriptionID: 5, topic: "news.politics", offset: 1),
             refusal: "may not read 'news.politics'"),
        Case(principal: "reader", request: .publish(topic: "news.sport.football", batch: makeBatch()),
             refusal: "may not publish to 'news.sport.football'"),
        Case(principal: "reader", request: subscribe(1, "news.>"), refusal: nil),
        Case(principal: "reader", request: subscribe(2, "news.*.football"), refusal: nil),
        Case(principal: "reader", request: subscribe(3, ">"), refusal: "may not subscribe to '>'"),
        Case(principal: "reader", request: subscribe(4, "wire.ap"), refusal: "may not subscribe to 'wire.ap'"),
        Case(principal: "reader", request: subscribe(5, "news.>", consumer: "push"), refusal: nil),
        Case(principal: "reader", request: subscribe(6, "news.>", consumer: "push-2"),
             refusal: "may not use consumer name 'push-2'"),
        Case(principal: "reader", request: subscribe(7, "news.>", consumer: "push",
                                                     resume: [TopicOffset(topic: "news.sport.football", offset: 0)]),
             refusal: nil),
        Case(principal: "reader", request: .commit(subscriptionID: 5, topic: "news.sport.football", offset: 1), refusal: nil),
        Case(principal: "ops", request: .publish(topic: "news.sport.football", batch: makeBatch()),
             refusal: "may not publish to 'news.sport.football'"),
        Case(principal: "ops", request: subscribe(1, "news.sport.football"), refusal: "may not subscribe"),
        Case(principal: "ops", request: subscribe(2, "news.>", consumer: "push"), refusal: "may not subscribe"),
    ]

    @Test("every message kind, allowed and refused, for several principals; the connection stays open")
    func matrix() async throws {
        let principals = try Principals()
        for principal in ["sports", "reader", "ops"] {
            let harness = try await HandlerHarness { $0.auth.usersFile = principals.usersFile }
            try await harness.hello(token: principals.tokens[principal]!)
            if principal != "sports" {
                // The topic the requests name exists, published by someone allowed to.
                _ = try harness.store.createLog("news.sport.football").0.append(makeBatch(records: 2))
            }
            var requestID: UInt32 = 10
            for testCase in Self.matrix where testCase.principal == principal {
                requestID += 1
                try await harness.send(testCase.request, requestID: requestID)
                let (answeredID, message) = try await harness.answer()
                #expect(answeredID == requestID, "\(testCase)")
                if let refusal = testCase.refusal {
                    guard case .error(let code, let text) = message else {
                        Issue.record("\(testCase): expected NOT_AUTHORIZED, got \(message)")
                        continue
                    }
                    #expect(code == .notAuthorized, "\(testCase)")
                    #expect(text.contains(refusal) && text.contains("'\(principal)'"), "\(testCase): \(text)")
                } else if case .error = message {
                    Issue.record("\(testCase): refused with \(message)")
                }
                requestID += 1
                try await harness.expectOpen(requestID)
            }
            #expect(harness.store.log("news.politics") == nil, "a refused first PUBLISH creates no topic")
            try await harness.finish()
        }
        principals.remove()
    }

    @Test("the shared --auth-token is one principal with every right, beside the users file")
    func sharedToken() async throws {
        let principals = try Principals()
        let harness = try await HandlerHarness {
            $0.auth.usersFile = principals.usersFile
            $0.authToken = "newsroom-shared"
        }
        try await harness.hello(token: "newsroom-shared")
        try await harness.send(.publish(topic: "anything.at.all", batch: makeBatch()), requestID: 2)
        guard case .publishAck = try await harness.answer().message else { throw TelexError(.internalError, "no ack") }
        try await harness.send(Self.subscribe(1, ">", consumer: "any-consumer"), requestID: 3)
        guard case .subscribed = try await harness.answer().message else { throw TelexError(.internalError, "not subscribed") }
        try await harness.finish()
        principals.remove()
    }

    @Test("a client certificate's CN names the principal without a token")
    func commonName() async throws {
        let principals = try Principals()
        let harness = try await HandlerHarness(peerCommonName: "reader") { $0.auth.usersFile = principals.usersFile }
        try await harness.hello()
        try await harness.send(.publish(topic: "news.world", batch: makeBatch()), requestID: 2)
        guard case .error(.notAuthorized, _) = try await harness.answer().message else {
            throw TelexError(.internalError, "reader published")
        }
        try await harness.finish()
        principals.remove()
    }

    @Test("a failed HELLO is refused and closed; the same peer's next failure is answered only after a delay")
    func failedAuthenticationIsSlowedDown() async throws {
        let principals = try Principals()
        let configure: (inout ServerConfiguration) -> Void = {
            $0.auth.usersFile = principals.usersFile
            $0.auth.failureDelay = .milliseconds(500)
            $0.auth.auditLogFile = principals.directory + "/audit.jsonl"
        }
        let first = try await HandlerHarness(configure: configure)
        let wrong = ByteBuffer(string: "sports." + String(repeating: "0", count: 64))
        try await first.send(.hello(minVersion: 1, maxVersion: 1, clientName: "t", authToken: wrong), requestID: 1)
        guard case .error(.authenticationFailed, _) = try await first.next().message else {
            throw TelexError(.internalError, "expected AUTHENTICATION_FAILED")
        }
        try await first.waitForClose()

        let second = try await HandlerHarness(access: first.access, configure: configure)
        try await second.send(.hello(minVersion: 1, maxVersion: 1, clientName: "t", authToken: wrong), requestID: 1)
        // A request pipelined behind the failed HELLO is not processed.
        try await second.send(.publish(topic: "news.sport.x", batch: makeBatch()), requestID: 2)
        await second.channel.testingEventLoop.advanceTime(by: .milliseconds(400))
        #expect(try await second.channel.readOutbound(as: IOData.self) == nil, "answered before its delay")
        await second.channel.testingEventLoop.advanceTime(by: .milliseconds(200))
        let answer = try await second.next()
        #expect(answer.requestID == 1)
        guard case .error(.authenticationFailed, let text) = answer.message else {
            throw TelexError(.internalError, "expected AUTHENTICATION_FAILED, got \(answer.message)")
        }
        #expect(!text.contains("0000"))
        try await second.waitForClose()
        #expect(second.store.log("news.sport.x") == nil)

        first.access.auditLog?.flush()
        let lines = try String(contentsOfFile: principals.directory + "/audit.jsonl", encoding: .utf8)
            .split(separator: "\n")
        #expect(lines.count == 2)
        for line in lines {
            let record = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(record?["event"] as? String == "authentication_failed")
            #expect(record?["principal"] as? String == "sports")
            #expect(record?["reason"] as? String == "wrong secret")
            #expect((record?["peer"] as? String)?.contains("127.0.0.1") == true)
            #expect(record?["time"] is String)
            #expect(!line.contains("0000000000"))
        }
        try await first.finish()
        try await second.finish()
        principals.remove()
    }

    @Test("authorization refusals and reloads are audited as JSON Lines")
    func auditLog() async throws {
        let principals = try Principals()
        let auditFile = principals.directory + "/audit.jsonl"
        let harness = try await HandlerHarness {
            $0.auth.usersFile = principals.usersFile
            $0.auth.auditLogFile = auditFile
        }
        try await harness.hello(token: principals.tokens["reader"]!)
        try await harness.send(.publish(topic: "news.world", batch: makeBatch()), requestID: 2)
        _ = try await harness.answer()
        try await harness.send(Self.subscribe(1, "news.>", consumer: "other"), requestID: 3)
        _ = try await harness.answer()
        try harness.access.reload()
        harness.access.auditLog?.flush()
        let records = try String(contentsOfFile: auditFile, encoding: .utf8).split(separator: "\n").map {
            try JSONDecoder.iso8601.decode(AuditRecord.self, from: Data($0.utf8))
        }
        #expect(records.map(\.event) == [.authorizationRefused, .authorizationRefused, .usersReloaded])
        #expect(records[0].principal == "reader" && records[0].action == "PUBLISH" && records[0].topic == "news.world")
        #expect(records[1].action == "SUBSCRIBE" && records[1].consumer == "other" && records[1].topic == "news.>")
        #expect(records[2].reason?.contains("3 principals") == true)
        try await harness.finish()
        principals.remove()
    }

    @Test("a reload narrows the rights of a live connection, and a removed principal may do nothing")
    func reloadNarrowsRights() async throws {
        let principals = try Principals()
        let harness = try await HandlerHarness { $0.auth.usersFile = principals.usersFile }
        try await harness.hello(token: principals.tokens["sports"]!)
        try await harness.send(.publish(topic: "news.sport.football", batch: makeBatch()), requestID: 2)
        _ = try await harness.answer()
        try await harness.send(Self.subscribe(1, "news.sport.*", consumer: "sports-1"), requestID: 3)
        guard case .subscribed = try await harness.answer().message else { throw TelexError(.internalError, "not subscribed") }
        try await harness.send(Self.subscribe(2, "news.sport.football", consumer: "sports-2"), requestID: 4)
        guard case .subscribed = try await harness.answer().message else { throw TelexError(.internalError, "not subscribed") }

        // Narrowed: only news.sport.football may be read, and only the consumer sports-2.
        var file = try UsersFile.load(path: principals.usersFile)
        file.principals[0].subscribe = ["news.sport.football"]
        file.principals[0].consumers = ["sports-2"]
        try file.write(to: principals.usersFile)
        try harness.access.reload()
        harness.channel.pipeline.fireUserInboundEventTriggered(ConnectionHandler.PermissionsChanged())
        let ended = try await harness.answer()
        #expect(ended.requestID == 3)
        guard case .error(.notAuthorized, let text) = ended.message else { throw TelexError(.internalError, "\(ended)") }
        #expect(text.contains("may no longer subscribe to 'news.sport.*'"))
        #expect(try await harness.answer().message == .unsubscribed(subscriptionID: 1))
        try await harness.send(.commit(subscriptionID: 2, topic: "news.sport.football", offset: 1), requestID: 5)
        #expect(try await harness.answer().message == .commitAck(topic: "news.sport.football", offset: 1))
        try await harness.send(Self.subscribe(3, "news.sport.*"), requestID: 6)
        guard case .error(.notAuthorized, _) = try await harness.answer().message else {
            throw TelexError(.internalError, "narrowed pattern accepted")
        }

        // Removed: NOT_AUTHORIZED for everything, the connection stays open.
        try UsersAdministration.remove(file: principals.usersFile, name: "sports")
        try harness.access.reload()
        try await harness.send(.publish(topic: "news.sport.football", batch: makeBatch()), requestID: 7)
        guard case .error(.notAuthorized, _) = try await harness.answer().message else {
            throw TelexError(.internalError, "a removed principal published")
        }
        try await harness.send(.commit(subscriptionID: 2, topic: "news.sport.football", offset: 2), requestID: 8)
        guard case .error(.notAuthorized, _) = try await harness.answer().message else {
            throw TelexError(.internalError, "a removed principal committed")
        }
        try await harness.expectOpen(9)

        // A broken users file leaves the principals in force.
        try Data("{".utf8).write(to: URL(fileURLWithPath: principals.usersFile))
        #expect(throws: UsersFileError.self) { try harness.access.reload() }
        try await harness.finish()
        principals.remove()
    }

    @Test("a connection opened with a token whose secret was replaced loses every right; one with the new token has them")
    func rotatedSecretCutsOffOldSessions() async throws {
        let principals = try Principals()
        let leaked = try await HandlerHarness { $0.auth.usersFile = principals.usersFile }
        try await leaked.hello(token: principals.tokens["sports"]!)
        try await leaked.send(Self.subscribe(1, "news.sport.*", consumer: "sports-1"), requestID: 2)
        guard case .subscribed = try await leaked.answer().message else { throw TelexError(.internalError, "not subscribed") }

        // users remove sports; users add sports (same rights, new secret); SIGHUP.
        try UsersAdministration.remove(file: principals.usersFile, name: "sports")
        let newToken = try UsersAdministration.add(
            file: principals.usersFile, name: "sports", publish: ["news.sport.>"], subscribe: ["news.sport.*"],
            consumers: ["sports-*"])
        try leaked.access.reload()
        leaked.channel.pipeline.fireUserInboundEventTriggered(ConnectionHandler.PermissionsChanged())
        let ended = try await leaked.answer()
        guard case .error(.notAuthorized, _) = ended.message, ended.requestID == 2 else {
            throw TelexError(.internalError, "subscription not ended: \(ended)")
        }
        #expect(try await leaked.answer().message == .unsubscribed(subscriptionID: 1))
        try await leaked.send(.publish(topic: "news.sport.football", batch: makeBatch()), requestID: 3)
        guard case .error(.notAuthorized, _) = try await leaked.answer().message else {
            throw TelexError(.internalError, "the old token still publishes")
        }
        try await leaked.send(Self.subscribe(2, "news.sport.*"), requestID: 4)
        guard case .error(.notAuthorized, _) = try await leaked.answer().message else {
            throw TelexError(.internalError, "the old token still subscribes")
        }

        let renewed = try await HandlerHarness(access: leaked.access) { $0.auth.usersFile = principals.usersFile }
        try await renewed.hello(token: newToken)
        try await renewed.send(.publish(topic: "news.sport.football", batch: makeBatch()), requestID: 2)
        guard case .publishAck = try await renewed.answer().message else { throw TelexError(.internalError, "new token refused") }
        try await leaked.finish()
        try await renewed.finish()
        principals.remove()
    }

    @Test("before HELLO a connection is unauthenticated, with no right, even on a broker without authentication")
    func unauthenticatedBeforeHello() async throws {
        let harness = try await HandlerHarness()
        let channel = harness.channel
        let before = try await channel.testingEventLoop.executeInContext {
            try channel.pipeline.syncOperations.handler(type: ConnectionHandler.self).identity
        }
        #expect(before == .unauthenticated)
        #expect(harness.access.permissions(of: before) == .none)
        try await harness.hello()
        let after = try await channel.testingEventLoop.executeInContext {
            try channel.pipeline.syncOperations.handler(type: ConnectionHandler.self).identity
        }
        #expect(after == .anonymous)
        try await harness.finish()
    }

    @Test("a failed login's log and audit line never hold a part of the token that is not an existing principal's name")
    func failedLoginAuditsNoTokenPart() async throws {
        let principals = try Principals()
        let auditFile = principals.directory + "/audit.jsonl"
        let configure: (inout ServerConfiguration) -> Void = {
            $0.auth.usersFile = principals.usersFile
            $0.auth.auditLogFile = auditFile
            $0.authToken = "newsroom.shared.Secret7"
            $0.auth.failureDelay = .zero
            $0.auth.maxFailureDelay = .zero
        }
        let tokens = [
            "newsroom.shared.Secret8", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzcG9ydHMifQ.c2lnbmF0dXJlWHk",
            "sportsdesk.deadbeefcafe", "sports.0123456789abcdef", "Tr0ub4dor",
        ]
        var access: AccessControl?
        for token in tokens {
            let harness = try await HandlerHarness(access: access, configure: configure)
            access = harness.access
            try await harness.send(
                .hello(minVersion: 1, maxVersion: 1, clientName: "t", authToken: ByteBuffer(string: token)), requestID: 1)
            guard case .error(.authenticationFailed, _) = try await harness.next().message else {
                throw TelexError(.internalError, "\(token) accepted")
            }
            try await harness.waitForClose()
            try await harness.finish()
        }
        access?.auditLog?.flush()
        let lines = try String(contentsOfFile: auditFile, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == tokens.count)
        for (token, line) in zip(tokens, lines) {
            let record = try JSONDecoder.iso8601.decode(AuditRecord.self, from: Data(line.utf8))
            #expect(record.event == .authenticationFailed)
            for part in token.split(separator: ".") where part != "sports" {
                #expect(!line.contains(part), "\(line) holds '\(part)'")
            }
            #expect(record.principal == (token.hasPrefix("sports.") ? "sports" : nil), "\(line)")
        }
        principals.remove()
    }

    @Test("refusals are audited one by one up to the per-connection rate, the rest in one summary")
    func refusalsAreThrottled() async throws {
        let principals = try Principals()
        let auditFile = principals.directory + "/audit.jsonl"
        let harness = try await HandlerHarness {
            $0.auth.usersFile = principals.usersFile
            $0.auth.auditLogFile = auditFile
            $0.auth.auditedRefusalsPerSecond = 5
        }
        try await harness.hello(token: principals.tokens["reader"]!)
        let refusals = 40
        for requestID in 2..<UInt32(2 + refusals) {
            try await harness.send(.publish(topic: "news.world", batch: makeBatch()), requestID: requestID)
            guard case .error(.notAuthorized, _) = try await harness.answer().message else {
                throw TelexError(.internalError, "publish not refused")
            }
        }
        let access = harness.access
        try await harness.finish()
        access.auditLog?.flush()
        let records = try String(contentsOfFile: auditFile, encoding: .utf8).split(separator: "\n").map {
            try JSONDecoder.iso8601.decode(AuditRecord.self, from: Data($0.utf8))
        }
        let oneByOne = records.filter { $0.event == .authorizationRefused }
        let summaries = records.filter { $0.event == .authorizationRefusalsSuppressed }
        #expect(oneByOne.count + summaries.reduce(0) { $0 + ($1.count ?? 0) } == refusals)
        #expect(oneByOne.count < refusals && !summaries.isEmpty)
        #expect(summaries.allSatisfy { $0.principal == "reader" && $0.peer?.contains("127.0.0.1") == true })
        principals.remove()
    }

    @Test("the refusal throttle admits its limit per second and reports the rest once the second is over")
    func refusalThrottle() {
        var throttle = RefusalAuditThrottle(limit: 2)
        let start = ContinuousClock.now
        #expect(throttle.admit(at: start) == (true, 0))
        #expect(throttle.admit(at: start + .milliseconds(100)) == (true, 0))
        #expect(throttle.admit(at: start + .milliseconds(200)) == (false, 0))
        #expect(throttle.admit(at: start + .milliseconds(999)) == (false, 0))
        #expect(throttle.admit(at: start + .seconds(1)) == (true, 2))
        #expect(throttle.admit(at: start + .milliseconds(1100)) == (true, 0))
        #expect(throttle.admit(at: start + .milliseconds(1200)) == (false, 0))
        #expect(throttle.takeSuppressed() == 1)
        #expect(throttle.takeSuppressed() == 0)
    }

    @Test("the audit log's queue is bounded; what it dropped is counted in a records_dropped record")
    func auditQueueIsBounded() throws {
        let principals = try Principals()
        let auditFile = principals.directory + "/audit.jsonl"
        var logger = Logger(label: "telex.test.audit")
        logger.logLevel = .critical
        let auditLog = try AuditLog(path: auditFile, logger: logger, capacity: 2)
        let total = 20_000
        for index in 0..<total {
            auditLog.record(AuditRecord(event: .authorizationRefused, principal: "reader", topic: "news.\(index)"))
        }
        auditLog.flush()
        let records = try String(contentsOfFile: auditFile, encoding: .utf8).split(separator: "\n").map {
            try JSONDecoder.iso8601.decode(AuditRecord.self, from: Data($0.utf8))
        }
        let written = records.filter { $0.event == .authorizationRefused }.count
        let dropped = records.filter { $0.event == .recordsDropped }.reduce(0) { $0 + ($1.count ?? 0) }
        #expect(written + dropped == total)
        #expect(dropped > 0, "20,000 records queued at once never filled a queue of 2")
        principals.remove()
    }

    @Test("telexd users add/remove --audit-log records the principal and its permissions, never the token or hash")
    func usersAuditLog() throws {
        let principals = try Principals()
        let auditFile = principals.directory + "/audit.jsonl"
        let audit = try UsersAuditLog(path: auditFile)
        try audit.userAdded("desk", permissions: Permissions(publish: ["news.>"], subscribe: [], consumers: ["d-*"]), admin: true)
        let removed = try UsersAdministration.remove(file: principals.usersFile, name: "sports")
        try audit.userRemoved(removed)
        let text = try String(contentsOfFile: auditFile, encoding: .utf8)
        let records = try text.split(separator: "\n").map { try JSONDecoder.iso8601.decode(AuditRecord.self, from: Data($0.utf8)) }
        #expect(records.map(\.event) == [.userAdded, .userRemoved])
        #expect(records[0].principal == "desk" && records[0].publish == ["news.>"] && records[0].consumers == ["d-*"])
        #expect(records[0].admin == true)
        #expect(records[1].principal == "sports" && records[1].subscribe == ["news.sport.*"] && records[1].admin == false)
        #expect(!text.contains(try #require(removed.secretSHA256)))
        #expect(!text.contains(try #require(Secrets.split(token: principals.tokens["sports"]!)).secret))
        #expect(text.contains("\"event\":\"user_added\""))
        principals.remove()
    }
}

extension JSONDecoder {
    static var iso8601: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}
